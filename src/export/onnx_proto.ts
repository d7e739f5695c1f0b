/**
 * The ONNX messages the exporter writes (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto,
 * ValueInfoProto, OperatorSetIdProto), as {@link Message}s of our protobuf writer, with the field numbers of
 * `onnx/onnx.proto`. Tensor bytes may be deferred (streamed when the file is written) or stored in an external
 * data file beside the model (ONNX's `data_location = EXTERNAL`, needed past protobuf's 2 GB limit).
 *
 * @example
 * ```ts
 * import { modelProto, node, valueInfo, ElemType } from "./onnx_proto.ts";
 * import { encode } from "./protobuf.ts";
 * const bytes = await encode(modelProto({
 *   name: "add",
 *   nodes: [node("Add", ["a", "b"], ["c"])],
 *   inputs: [valueInfo("a", ElemType.FLOAT, [2]), valueInfo("b", ElemType.FLOAT, [2])],
 *   outputs: [valueInfo("c", ElemType.FLOAT, [2])],
 *   initializers: [],
 * }));
 * bytes.length > 0; // true
 * ```
 *
 * @module
 */
import { type Deferred, Message } from "./protobuf.ts";

/** ONNX TensorProto.DataType values used here. */
export const ElemType: Readonly<{
  FLOAT: 1;
  UINT8: 2;
  INT8: 3;
  INT32: 6;
  INT64: 7;
  BOOL: 9;
  FLOAT16: 10;
}> = Object.freeze(
  {
    FLOAT: 1,
    UINT8: 2,
    INT8: 3,
    INT32: 6,
    INT64: 7,
    BOOL: 9,
    FLOAT16: 10,
  } as const,
);

/** One of {@link ElemType}'s values. */
export type ElemType = typeof ElemType[keyof typeof ElemType];

/** Bytes per element of each {@link ElemType}. */
export const ELEM_SIZE: Readonly<Record<ElemType, number>> = Object.freeze({
  1: 4,
  2: 1,
  3: 1,
  6: 4,
  7: 8,
  9: 1,
  10: 2,
});

/** ONNX IR version written (8: ONNX 1.12+, opset up to 17). */
export const IR_VERSION = 8;
/** The default-domain opset the graph uses. */
export const OPSET = 17;

/** A node attribute value: an int, a float, a string, a list of ints, or a tensor. */
export type AttrValue = number | { f: number } | string | number[] | Message;

/** A NodeProto: `op` over inputs to outputs, with attributes (integers are INT, `{ f }` is FLOAT). */
export function node(
  op: string,
  inputs: readonly string[],
  outputs: readonly string[],
  attrs: Record<string, AttrValue> = {},
  name?: string,
): Message {
  const m = new Message();
  for (const i of inputs) m.string(1, i);
  for (const o of outputs) m.string(2, o);
  m.string(3, name ?? outputs[0]);
  m.string(4, op);
  for (const [k, v] of Object.entries(attrs)) {
    const a = new Message().string(1, k);
    if (typeof v === "number") a.varint(3, v).varint(20, 2);
    else if (typeof v === "string") a.string(4, v).varint(20, 3);
    else if (Array.isArray(v)) {
      for (const x of v) a.varint(8, x);
      a.varint(20, 7);
    } else if (v instanceof Message) a.message(5, v).varint(20, 4);
    else a.float(2, v.f).varint(20, 1);
    m.message(5, a);
  }
  return m;
}

/** Where a tensor's bytes go: inside the model (`raw_data`), or at `offset` of an external data file. */
export type TensorData =
  | { kind: "raw"; bytes: Deferred | Uint8Array }
  | { kind: "external"; location: string; offset: number; length: number };

/** A TensorProto (an initializer or a constant). */
export function tensorProto(
  name: string,
  type: ElemType,
  dims: readonly number[],
  data: TensorData,
): Message {
  const m = new Message();
  for (const d of dims) m.varint(1, d);
  m.varint(2, type).string(8, name);
  if (data.kind === "raw") {
    if (data.bytes instanceof Uint8Array) m.bytes(9, data.bytes);
    else m.deferred(9, data.bytes);
  } else {
    const entry = (k: string, v: string) => new Message().string(1, k).string(2, v);
    m.message(13, entry("location", data.location));
    m.message(13, entry("offset", String(data.offset)));
    m.message(13, entry("length", String(data.length)));
    m.varint(14, 1); // EXTERNAL
  }
  return m;
}

/** A small constant tensor with its bytes inline. */
export function constTensor(
  name: string,
  type: ElemType,
  dims: readonly number[],
  values: ArrayLike<number>,
): Message {
  const n = dims.reduce((a, b) => a * b, 1);
  if (values.length !== n) {
    throw new RangeError(`onnx: constant ${name} has ${values.length} values for [${dims}]`);
  }
  const bytes = new Uint8Array(n * ELEM_SIZE[type]), view = new DataView(bytes.buffer);
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (type === ElemType.FLOAT) view.setFloat32(4 * i, v, true);
    else if (type === ElemType.INT64) view.setBigInt64(8 * i, BigInt(v), true);
    else if (type === ElemType.INT32) view.setInt32(4 * i, v, true);
    else if (type === ElemType.BOOL || type === ElemType.UINT8) view.setUint8(i, v);
    else if (type === ElemType.INT8) view.setInt8(i, v);
    else throw new RangeError(`onnx: constant ${name}: element type ${type} not supported here`);
  }
  return tensorProto(name, type, dims, { kind: "raw", bytes });
}

/** A ValueInfoProto: a tensor input/output with its element type and shape (a string is a symbolic dim). */
export function valueInfo(name: string, type: ElemType, dims: readonly (number | string)[]): Message {
  const shape = new Message();
  for (const d of dims) {
    shape.message(1, typeof d === "number" ? new Message().varint(1, d) : new Message().string(2, d));
  }
  const tensor = new Message().varint(1, type).message(2, shape);
  return new Message().string(1, name).message(2, new Message().message(1, tensor));
}

/** The parts of a graph. */
export interface GraphParts {
  /** Graph name. */
  name: string;
  /** Nodes, topologically ordered. */
  nodes: readonly Message[];
  /** Initializers, in the order their bytes are produced. */
  initializers: readonly Message[];
  /** Graph inputs. */
  inputs: readonly Message[];
  /** Graph outputs. */
  outputs: readonly Message[];
  /** Free text stored as the model's doc_string. */
  doc?: string;
  /** Key/value metadata (metadata_props). */
  metadata?: Record<string, string>;
}

/** A ModelProto holding one graph (default-domain opset {@link OPSET}). */
export function modelProto(g: GraphParts): Message {
  const graph = new Message();
  for (const n of g.nodes) graph.message(1, n);
  graph.string(2, g.name);
  for (const t of g.initializers) graph.message(5, t);
  for (const i of g.inputs) graph.message(11, i);
  for (const o of g.outputs) graph.message(12, o);
  const m = new Message()
    .varint(1, IR_VERSION)
    .string(2, "@svd/llm")
    .string(3, "0.1.0");
  if (g.doc) m.string(6, g.doc);
  m.message(7, graph);
  m.message(8, new Message().string(1, "").varint(2, OPSET));
  for (const [k, v] of Object.entries(g.metadata ?? {})) {
    m.message(14, new Message().string(1, k).string(2, v));
  }
  return m;
}
