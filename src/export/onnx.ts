/**
 * Export a dense or compressed model to ONNX, in the folder layout transformers.js and Optimum use for
 * decoder-only models: `onnx/model.onnx` (+ `onnx/model.onnx_data` when the weights are large),
 * `config.json`, `generation_config.json`, and the tokenizer files of the input beside them.
 *
 * The graph is {@link decoderGraph} (derived from the one block definition). Weights are streamed: the model is
 * read block by block (`loadBlock`) while the file is written, never held whole; each tensor's size is known
 * from its header, so the protobuf lengths are written before the bytes exist (see `protobuf.ts`). The folder
 * is written under a temporary name and renamed when complete.
 *
 * Dtypes: "f32" (default); "f16" stores matrices as float16 and casts them to float32 at load (compute stays
 * float32, so inputs, outputs and the KV cache are float32 whatever the dtype); "int8" stores every matrix
 * (linears, embedding, lm_head) as int8 with one float32 scale per output channel (weight-only,
 * DequantizeLinear; compute in float32). Norm weights stay float32.
 *
 * @example
 * ```ts ignore
 * import { exportOnnx } from "./onnx.ts";
 * const r = await exportOnnx("models/stories260K/stories260K.gguf", "/tmp/stories-onnx", { dtype: "f16" });
 * console.log(r.bytes, r.files);
 * ```
 *
 * @module
 */
import { NumericError, OptionError, ShapeError } from "../errors.ts";
import { denseConfig, specConfig } from "../model/hf_config.ts";
import { LITTLE_ENDIAN, numberToF16Bits } from "../io/dtype.ts";
import type { Matrix } from "../linalg/matrix.ts";
import { checkedReader } from "../io/tensor_reader.ts";
import { type LlamaBlock, loadBlock, type ModelWeights } from "../model/llama.ts";
import { loadModel } from "../model/load.ts";
import {
  EMBED,
  FINAL_NORM,
  LINEAR_NAMES,
  type LinearName,
  linearPrefix,
  LM_HEAD,
  SVD_A,
  SVD_B,
} from "../model/names.ts";
import { linearShape } from "../model/linear_shape.ts";
import { ropeTables } from "../model/rope.ts";
import type { LlamaSpec } from "../model/spec.ts";
import { openOutputDir } from "../pipeline/output_dir.ts";
import { TOKENIZER_FILES } from "../pipeline/output.ts";
import {
  decoderGraph,
  type ExportDtype,
  type LinearShape,
  type WeightPlan,
  type WeightTensor,
} from "./graph.ts";
import { constTensor, ELEM_SIZE, ElemType, modelProto, tensorProto } from "./onnx_proto.ts";
import type { Message } from "./protobuf.ts";

export type { ExportDtype } from "./graph.ts";

/** The dtypes {@link exportOnnx} accepts. */
export const EXPORT_DTYPES: readonly ExportDtype[] = Object.freeze(["f32", "f16", "int8"]);

/** Options of {@link exportOnnx}. */
export interface ExportOnnxOptions {
  /** Weight storage: "f32" (default), "f16" or "int8" (see the module doc). */
  dtype?: ExportDtype;
  /** Replace an existing output folder (default false: refuse). */
  overwrite?: boolean;
  /**
   * Put the weights in `onnx/model.onnx_data` instead of inside the model: true, false, or "auto" (default:
   * when they pass 1.5 GiB, since a protobuf message cannot pass 2 GiB).
   */
  externalData?: boolean | "auto";
  /**
   * What the cache inputs/outputs hold: "full" keys and values (default, the layout transformers.js expects),
   * or "latent" (ASVD's KV-cache mode): for a low-rank k/v projection, the rank-r latent B·x of each token
   * (present shape batch×1×total×r), from which the keys/values are rebuilt when attending. Needs a model with
   * low-rank k/v; onnxruntime runs it, transformers.js does not (it sizes the cache from config.json).
   */
  kvCache?: "full" | "latent";
}

/** What {@link exportOnnx} wrote. */
export interface ExportOnnxReport {
  /** Output folder. */
  output: string;
  /** Files written, relative to the folder. */
  files: string[];
  /** Bytes of the ONNX model (graph + weights, external data included). */
  bytes: number;
  /** Weight dtype. */
  dtype: ExportDtype;
}

/** Above this many weight bytes, "auto" puts them in an external data file. */
const EXTERNAL_THRESHOLD = 1.5 * 2 ** 30;

/** The shape of every linear, from tensor headers only (no weight is read). */
export function weightPlan(model: ModelWeights): WeightPlan {
  const { spec, reader } = model;
  const blocks = [];
  for (let i = 0; i < spec.numLayers; i++) {
    const shapes = {} as Record<LinearName, LinearShape>;
    for (const name of LINEAR_NAMES) {
      const p = linearPrefix(i, name), [out, inDim] = linearShape(spec, name), bias = reader.has(`${p}.bias`);
      if (reader.has(`${p}.weight`)) shapes[name] = { kind: "dense", out, in: inDim, bias };
      else if (reader.has(`${p}.${SVD_A}`) && reader.has(`${p}.${SVD_B}`)) {
        const rank = reader.info(`${p}.${SVD_A}`).shape[1];
        shapes[name] = { kind: "lowrank", out, in: inDim, rank, bias };
      } else {
        throw new OptionError(`export ${reader.name}: ${p} has neither a weight nor svd_a/svd_b factors`);
      }
    }
    blocks.push(shapes);
  }
  return { blocks, tied: spec.tieWordEmbeddings };
}

/** Produces the stored bytes of each weight tensor. */
export interface WeightSource {
  /** The bytes of `w` as stored (transposed, converted, quantized). */
  bytes(w: WeightTensor): Promise<Uint8Array>;
}

/** Produces each weight's bytes in graph order, holding one block at a time. */
class WeightBytes implements WeightSource {
  #layer = -1;
  #block: Promise<LlamaBlock> | null = null;
  #scales = new Map<string, Float32Array>();

  /** The model read. */
  readonly model: ModelWeights;

  constructor(model: ModelWeights) {
    this.model = model;
  }

  async #source(w: WeightTensor): Promise<Matrix> {
    const vec = (v: Float32Array): Matrix => ({ rows: 1, cols: v.length, data: v });
    if ("head" in w.source) {
      // read directly, not through loadHead (which keeps the embedding and lm_head for the reader's life)
      const { spec, reader } = this.model, V = spec.vocabSize, d = spec.hiddenSize;
      const [name, shape] = w.source.head === "norm"
        ? [FINAL_NORM, [d]]
        : [w.source.head === "embed" ? EMBED : LM_HEAD, [V, d]];
      const got = reader.info(name).shape;
      if (got.length !== shape.length || got.some((n, i) => n !== shape[i])) {
        throw new ShapeError(
          `export ${reader.name}: ${name} has shape [${got.join(", ")}], the spec expects [${
            shape.join(", ")
          }]`,
        );
      }
      const data = await reader.read(name);
      return shape.length === 1 ? vec(data) : { rows: V, cols: d, data };
    }
    const { layer, field } = w.source;
    if (layer !== this.#layer) {
      this.#layer = layer;
      this.#block = loadBlock(this.model.reader, this.model.spec, layer); // the previous block is dropped
    }
    const b = await this.#block!;
    if (field === "inputNorm" || field === "postNorm") return vec(b[field]);
    const [lin, part] = field.split(".") as [keyof LlamaBlock, string | undefined];
    const l = b[lin] as LlamaBlock["q"];
    if (part === "bias") return vec(l.bias!);
    if (l.kind === "dense") return l.weight;
    return part === "a" ? l.a : l.b;
  }

  /** The stored bytes of `w`. */
  async bytes(w: WeightTensor): Promise<Uint8Array> {
    if (w.scaleOf) {
      const s = this.#scales.get(w.scaleOf);
      if (!s) throw new Error(`export: scale ${w.name} requested before ${w.scaleOf}`);
      this.#scales.delete(w.scaleOf);
      return f32Bytes(s);
    }
    const m = await this.#source(w);
    if (w.type === ElemType.INT8) {
      const { q, scale } = quantizeRows(m);
      this.#scales.set(w.name, scale);
      return new Uint8Array((w.transpose ? transposed(q, m.rows, m.cols) : q).buffer);
    }
    const data = w.transpose ? transposed(m.data, m.rows, m.cols) : m.data;
    if (w.type === ElemType.FLOAT16) {
      const h = new Uint16Array(data.length);
      for (let i = 0; i < data.length; i++) {
        if (Math.abs(data[i]) > F16_MAX) {
          throw new NumericError(
            `export ${this.model.reader.name}: ${w.name} holds ${
              data[i]
            }, beyond float16's range (±${F16_MAX}); export it with dtype f32 or int8`,
          );
        }
        h[i] = numberToF16Bits(data[i]);
      }
      return le16(h);
    }
    return f32Bytes(data);
  }
}

/** The largest finite float16 (a weight beyond it would become infinite). */
const F16_MAX = 65504;

function f32Bytes(a: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const out = new Uint8Array(a.length * 4), v = new DataView(out.buffer);
  for (let i = 0; i < a.length; i++) v.setFloat32(4 * i, a[i], true);
  return out;
}

function le16(h: Uint16Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(h.buffer);
  const out = new Uint8Array(h.length * 2), v = new DataView(out.buffer);
  for (let i = 0; i < h.length; i++) v.setUint16(2 * i, h[i], true);
  return out;
}

/** rows×cols → cols×rows (any typed array of the source's kind). */
function transposed<T extends Float32Array | Int8Array>(a: T, rows: number, cols: number): T {
  const out = new (a.constructor as { new (n: number): T })(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

/** Symmetric int8 per row (row = output channel): scale = max|w|/127, q = round(w/scale). */
export function quantizeRows(m: Matrix): { q: Int8Array; scale: Float32Array } {
  const q = new Int8Array(m.data.length), scale = new Float32Array(m.rows);
  for (let r = 0; r < m.rows; r++) {
    let max = 0;
    for (let c = 0; c < m.cols; c++) max = Math.max(max, Math.abs(m.data[r * m.cols + c]));
    const s = max > 0 ? max / 127 : 1;
    scale[r] = s;
    const inv = 1 / Math.fround(s);
    for (let c = 0; c < m.cols; c++) {
      q[r * m.cols + c] = Math.max(-127, Math.min(127, Math.round(m.data[r * m.cols + c] * inv)));
    }
  }
  return { q, scale };
}

function byteLength(w: WeightTensor): number {
  return w.dims.reduce((a, b) => a * b, 1) * ELEM_SIZE[w.type];
}

/** A model prepared for writing: the ModelProto and, for external data, the weights to stream after it. */
export interface OnnxModel {
  /** The model message (weights inside as deferred bytes, or referencing `external`). */
  proto: Message;
  /** With external data: the weights in file order and the file name; else null. */
  external: { location: string; weights: WeightTensor[] } | null;
  /** Produces weight bytes (block by block). */
  source: WeightSource;
  /** Total bytes of the model file plus external data. */
  bytes: number;
}

/** Refuse what the graph cannot express, naming it. */
function checkSupported(spec: LlamaSpec, where: string): void {
  if (spec.architecture !== "llama") {
    throw new OptionError(
      `export ${where}: architecture ${JSON.stringify(spec.architecture)} is not supported`,
    );
  }
  if (spec.headDim % 2 !== 0) throw new OptionError(`export ${where}: head_dim ${spec.headDim} is odd`);
}

/** Options of {@link onnxModel}. */
export interface OnnxModelOptions {
  /** Weight storage (default "f32"). */
  dtype?: ExportDtype;
  /** External data: true, false or "auto" (default; see {@link ExportOnnxOptions}). */
  externalData?: boolean | "auto";
  /** What present/past hold: "full" keys and values (default) or "latent" (see {@link ExportOnnxOptions}). */
  kvCache?: "full" | "latent";
  /** External data file name (default "model.onnx_data"). */
  location?: string;
}

const KV: readonly LinearName[] = ["self_attn.k_proj", "self_attn.v_proj"];

/** Build the ONNX model of `model` (nothing is read yet but headers; bytes come when the message is written). */
export function onnxModel(model: ModelWeights, opts: OnnxModelOptions = {}): OnnxModel {
  const { dtype = "f32", externalData = "auto", kvCache = "full", location = "model.onnx_data" } = opts;
  const { spec } = model;
  checkSupported(spec, model.reader.name);
  const plan = weightPlan(model);
  if (kvCache === "latent" && !plan.blocks.some((b) => KV.some((l) => b[l].kind === "lowrank"))) {
    throw new OptionError(
      `export ${model.reader.name}: kvCache "latent" needs low-rank k/v projections (compress with kvCache), and this model has none`,
    );
  }
  const graph = decoderGraph(spec, plan, dtype, kvCache);
  const tables = ropeTables(Math.max(spec.maxPositions, 64), spec.headDim, spec.ropeTheta, spec.ropeScaling);
  const ropeDims = [tables.positions, tables.pairs];
  const consts = [
    ...graph.constants,
    constTensor(graph.ropeNames.cos, ElemType.FLOAT, ropeDims, tables.cos),
    constTensor(graph.ropeNames.sin, ElemType.FLOAT, ropeDims, tables.sin),
  ];
  const weightBytes = graph.weights.reduce((s, w) => s + byteLength(w), 0);
  const external = externalData === true || (externalData === "auto" && weightBytes > EXTERNAL_THRESHOLD);
  const source = new WeightBytes(model);
  let offset = 0;
  const inits = graph.weights.map((w) => {
    const length = byteLength(w);
    if (!external) {
      return tensorProto(w.name, w.type, w.dims, {
        kind: "raw",
        bytes: { length, bytes: () => source.bytes(w) },
      });
    }
    const t = tensorProto(w.name, w.type, w.dims, { kind: "external", location, offset, length });
    offset += length;
    return t;
  });
  const proto = modelProto({
    name: "svd_llm_decoder",
    nodes: graph.nodes,
    initializers: [...consts, ...inits],
    inputs: graph.inputs,
    outputs: graph.outputs,
    doc: `LLaMA-family decoder exported by @svd/llm (weights ${dtype}; low-rank linears as two MatMuls)`,
  });
  return {
    proto,
    external: external ? { location, weights: graph.weights } : null,
    source,
    bytes: proto.size + (external ? weightBytes : 0),
  };
}

/** Write `m` into folder `dir`: `model.onnx` and, with external data, its data file. Returns bytes written. */
export async function writeOnnxModel(m: OnnxModel, dir: string, file = "model.onnx"): Promise<number> {
  const { open } = await import("node:fs/promises");
  const { join } = await import("node:path");
  let total = 0;
  const pipe = async (path: string, chunks: AsyncIterable<Uint8Array>) => {
    const fh = await open(path, "wx");
    try {
      for await (const c of chunks) (await fh.write(c), total += c.length);
    } finally {
      await fh.close();
    }
  };
  await pipe(join(dir, file), m.proto.chunks());
  if (m.external) {
    const { weights } = m.external, source = m.source;
    await pipe(
      join(dir, m.external.location),
      (async function* () {
        for (const w of weights) yield await source.bytes(w);
      })(),
    );
  }
  return total;
}

/**
 * config.json for the exported folder: the model's own fields, the architecture's from the spec
 * ({@link specConfig}, as a compressed folder's from a GGUF file), and what transformers.js needs.
 */
function exportConfig(
  spec: LlamaSpec,
  config: Record<string, unknown>,
  dtype: ExportDtype,
  external: boolean,
  kvCache: "full" | "latent",
) {
  const type = typeof config.model_type === "string" ? config.model_type : undefined;
  const { svd_llm: _drop, quantization_config: _q, ...rest } = config as Record<string, unknown>;
  const hf = type !== undefined ? rest : {}; // GGUF metadata is no config: the spec gives every field
  return {
    ...hf,
    ...specConfig(spec, type),
    use_cache: true,
    // the graph's inputs/outputs are float32 whatever the weights: transformers.js must load model.onnx
    "transformers.js_config": {
      dtype: "fp32",
      use_external_data_format: external,
      kv_cache_dtype: "float32",
    },
    svd_llm_onnx: { weights: dtype, kv_cache: kvCache },
  };
}

/**
 * The tokenizer files copied beside the ONNX model when present: a model folder's side files
 * ({@link TOKENIZER_FILES}), but generation_config.json, which the export writes itself.
 */
const EXPORT_TOKENIZER_FILES = TOKENIZER_FILES.filter((f) => f !== "generation_config.json");

/**
 * An already opened model to export: spec and weights, plus what the folder's files are made from (the
 * caller closes it). A path is opened with `loadModel` instead.
 */
export interface ExportInput extends ModelWeights {
  /** Display name (messages). */
  readonly name: string;
  /** The source config.json (its model_type and extra fields are kept), or GGUF metadata; default none. */
  readonly config?: Record<string, unknown>;
  /** The folder whose tokenizer files are copied beside the model, if any. */
  readonly tokenizerDir?: string;
}

/**
 * Export the model at `input` (a Hugging Face folder, dense or compressed, or a GGUF file; or an opened
 * {@link ExportInput}) to an ONNX folder at `output`. Refuses an unknown dtype, an existing output (without
 * `overwrite`), an output onto the input, and an architecture the graph does not express, before writing
 * anything; a failure while writing (a NaN weight, a read error) leaves nothing under `output`.
 */
export async function exportOnnx(
  input: string | ExportInput,
  output: string,
  opts: ExportOnnxOptions = {},
): Promise<ExportOnnxReport> {
  const dtype = opts.dtype ?? "f32";
  if (!EXPORT_DTYPES.includes(dtype)) {
    throw new OptionError(
      `export: dtype ${JSON.stringify(dtype)} is not supported (supported: ${EXPORT_DTYPES.join(", ")})`,
    );
  }
  const ext = opts.externalData ?? "auto";
  if (ext !== true && ext !== false && ext !== "auto") {
    throw new OptionError(`export: externalData must be true, false or "auto", got ${JSON.stringify(ext)}`);
  }
  const kvCache = opts.kvCache ?? "full";
  if (kvCache !== "full" && kvCache !== "latent") {
    throw new OptionError(
      `export: kvCache ${JSON.stringify(kvCache)} is not supported (supported: full, latent)`,
    );
  }
  const fs = await import("node:fs/promises");
  const { join } = await import("node:path");
  let model: ExportInput, close = async () => {};
  if (typeof input === "string") {
    const m = await loadModel(input);
    const isDir = (await fs.stat(input)).isDirectory();
    model = { ...m, tokenizerDir: isDir ? input : undefined };
    close = () => m.close();
  } else model = { ...input, reader: checkedReader(input.reader) };
  try {
    const m = onnxModel(model, { dtype, externalData: ext, kvCache });
    if (!m.external && m.proto.size >= 2 ** 31) {
      throw new OptionError(
        `export ${model.name}: the model passes protobuf's 2 GiB limit; use externalData`,
      );
    }
    const inputs = typeof input === "string" ? [input] : input.tokenizerDir ? [input.tokenizerDir] : [];
    const out = await openOutputDir(output, { inputs, overwrite: opts.overwrite, action: "export" });
    try {
      const files: string[] = [];
      await fs.mkdir(join(out.temp, "onnx"));
      const bytes = await writeOnnxModel(m, join(out.temp, "onnx"));
      files.push("onnx/model.onnx", ...(m.external ? [`onnx/${m.external.location}`] : []));
      const json = async (name: string, v: unknown) => {
        await fs.writeFile(join(out.temp, name), JSON.stringify(v, null, 2) + "\n");
        files.push(name);
      };
      await json(
        "config.json",
        exportConfig(model.spec, denseConfig(model.config ?? {}), dtype, m.external !== null, kvCache),
      );
      await json("generation_config.json", {
        ...(model.spec.bosTokenId >= 0 ? { bos_token_id: model.spec.bosTokenId } : {}),
        ...(model.spec.eosTokenId >= 0 ? { eos_token_id: model.spec.eosTokenId } : {}),
        do_sample: false,
      });
      for (const f of model.tokenizerDir ? EXPORT_TOKENIZER_FILES : []) {
        const src = join(model.tokenizerDir!, f);
        if (await fs.stat(src).then(() => true, () => false)) {
          await fs.copyFile(src, join(out.temp, f));
          files.push(f);
        }
      }
      await out.commit();
      return { output, files, bytes, dtype };
    } catch (e) {
      await out.abort();
      throw e;
    }
  } finally {
    await close();
  }
}
