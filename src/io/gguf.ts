/**
 * GGUF reader (llama.cpp's single-file format, versions 2 and 3): typed metadata key/values and tensors read
 * one at a time as float32, behind the common {@link TensorReader} interface.
 *
 * File layout (all little-endian): `"GGUF"` · u32 version · u64 tensor count · u64 key/value count ·
 * key/values (`string key`, u32 value type, value) · tensor infos (`string name`, u32 n_dims,
 * u64 ne[n_dims] innermost first, u32 ggml type, u64 offset relative to the data section) · padding to
 * `general.alignment` (default 32) · data section. A string is a u64 byte length then UTF-8 bytes.
 *
 * Every length, count and offset is checked against the file size before anything is allocated, so a corrupt
 * or hostile file fails with a {@link FormatError} naming the file and the problem, never with a RangeError or
 * an out-of-memory. Shapes are exposed outermost first (PyTorch order: `ne` reversed), so a linear weight is
 * `[out, in]` exactly as in safetensors.
 *
 * @module
 */
import type { ByteSource } from "./byte_source.ts";
import type { DType, TensorInfo, TensorReader } from "./tensor_reader.ts";
import { decodeToFloat32, DTYPE_SIZE } from "./dtype.ts";
import { isByteSource, openSource } from "./open_source.ts";
import { FormatError } from "../errors.ts";

/** A numeric GGUF array, as the typed array of its element type. */
export type GgufNumberArray =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array;

/**
 * A GGUF metadata value: integers as numbers (64-bit ones as bigint when beyond 2^53), floats as numbers,
 * booleans, strings; arrays of numbers as typed arrays, of strings or booleans as plain arrays, nested arrays
 * as arrays of values.
 */
export type GgufValue =
  | number
  | bigint
  | boolean
  | string
  | GgufNumberArray
  | readonly string[]
  | readonly boolean[]
  | readonly GgufValue[];

/** A parsed GGUF file: a {@link TensorReader} plus its typed metadata. */
export interface GgufFile extends TensorReader {
  /** Format version (2 or 3). */
  readonly version: number;
  /** Every metadata key/value, in file order, with its type preserved. */
  readonly kv: ReadonlyMap<string, GgufValue>;
  /** Absolute offset of the data section. */
  readonly dataStart: number;
  /** Tensor names in storage order, as stored (GGUF names such as `blk.0.attn_q.weight`). */
  readonly tensorNames: readonly string[];
}

/** Options of {@link openGguf}. */
export interface OpenGgufOptions {
  /**
   * Accept tensors of types this reader cannot convert (quantized ones): they are listed with dtype "U8" and
   * reading one throws. Default false: opening fails naming the first such tensor, which is what a caller that
   * wants the weights needs. Set it to read only the metadata (a tokenizer) of a quantized file.
   */
  allowUnsupportedTypes?: boolean;
}

/** ggml tensor type ids → names, for messages (llama.cpp's ggml.h numbering). */
const GGML_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  3: "Q4_1",
  6: "Q5_0",
  7: "Q5_1",
  8: "Q8_0",
  9: "Q8_1",
  10: "Q2_K",
  11: "Q3_K",
  12: "Q4_K",
  13: "Q5_K",
  14: "Q6_K",
  15: "Q8_K",
  16: "IQ2_XXS",
  17: "IQ2_XS",
  18: "IQ3_XXS",
  19: "IQ1_S",
  20: "IQ4_NL",
  21: "IQ3_S",
  22: "IQ2_S",
  23: "IQ4_XS",
  24: "I8",
  25: "I16",
  26: "I32",
  27: "I64",
  28: "F64",
  29: "IQ1_M",
  30: "BF16",
  34: "TQ1_0",
  35: "TQ2_0",
  39: "MXFP4",
};

/** ggml types read here, with the {@link DType} they decode as. */
const READABLE: Readonly<Record<number, DType>> = { 0: "F32", 1: "F16", 28: "F64", 30: "BF16", 26: "I32" };

/** Metadata value type ids (gguf.h). */
const enum VT {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
}

const VT_SIZE: Readonly<Record<number, number>> = {
  0: 1,
  1: 1,
  2: 2,
  3: 2,
  4: 4,
  5: 4,
  6: 4,
  7: 1,
  10: 8,
  11: 8,
  12: 8,
};

const VT_NAMES = [
  "u8",
  "i8",
  "u16",
  "i16",
  "u32",
  "i32",
  "f32",
  "bool",
  "string",
  "array",
  "u64",
  "i64",
  "f64",
];

/** Thrown inside the parser when the bytes read so far end before the header does: read more and retry. */
class NeedMore {
  constructor(readonly upTo: number) {}
}

const MAX_DIMS = 4;

/** Largest header (metadata + tensor infos) read: real ones are a few MB even for 256K-token vocabularies. */
export const GGUF_MAX_HEADER_BYTES = 256 << 20;
const utf8 = new TextDecoder("utf-8", { fatal: false });

/** A bounds-checked little-endian cursor over the first `buf.length` bytes of a file of `fileSize` bytes. */
class Cursor {
  pos = 0;
  readonly dv: DataView;
  constructor(readonly buf: Uint8Array, readonly fileSize: number, readonly fail: (msg: string) => never) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  /** Make sure `n` more bytes exist in the file (else FormatError) and in the buffer (else NeedMore). */
  need(n: number, what: string): void {
    if (!Number.isSafeInteger(n) || n < 0 || this.pos + n > this.fileSize) {
      this.fail(
        `${what} at offset ${this.pos} needs ${n} bytes, past the end of the file (${this.fileSize} bytes)`,
      );
    }
    if (this.pos + n > this.buf.length) throw new NeedMore(this.pos + n);
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.dv.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  /** A u64 that must fit a safe integer (lengths, counts, offsets). */
  u64(what: string): number {
    this.need(8, what);
    const lo = this.dv.getUint32(this.pos, true), hi = this.dv.getUint32(this.pos + 4, true);
    this.pos += 8;
    if (hi >= 0x200000) {
      this.fail(`${what} at offset ${this.pos - 8} is too large (${(BigInt(hi) << 32n) + BigInt(lo)})`);
    }
    return hi * 4294967296 + lo;
  }
  str(what: string): string {
    const n = this.u64(`${what} length`);
    this.need(n, what);
    const s = utf8.decode(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
}

function typeName(t: number): string {
  return GGML_TYPE_NAMES[t] ?? `unknown type ${t}`;
}

function readScalar(c: Cursor, t: number, what: string): GgufValue {
  switch (t) {
    case VT.STRING:
      return c.str(what);
    case VT.BOOL: {
      c.need(1, what);
      const b = c.buf[c.pos++];
      if (b > 1) c.fail(`${what}: boolean byte is ${b}, expected 0 or 1`);
      return b === 1;
    }
    case VT.U64:
    case VT.I64: {
      c.need(8, what);
      const v = t === VT.U64 ? c.dv.getBigUint64(c.pos, true) : c.dv.getBigInt64(c.pos, true);
      c.pos += 8;
      return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
    }
  }
  const size = VT_SIZE[t];
  if (size === undefined) c.fail(`${what}: unknown value type ${t}`);
  c.need(size, what);
  const p = c.pos;
  c.pos += size;
  switch (t) {
    case VT.U8:
      return c.dv.getUint8(p);
    case VT.I8:
      return c.dv.getInt8(p);
    case VT.U16:
      return c.dv.getUint16(p, true);
    case VT.I16:
      return c.dv.getInt16(p, true);
    case VT.U32:
      return c.dv.getUint32(p, true);
    case VT.I32:
      return c.dv.getInt32(p, true);
    case VT.F32:
      return c.dv.getFloat32(p, true);
    default: // F64
      return c.dv.getFloat64(p, true);
  }
}

function readNumberArray(c: Cursor, t: number, n: number, what: string): GgufNumberArray {
  const size = VT_SIZE[t];
  c.need(n * size, what);
  // Copy out of the header buffer: the typed array must own aligned memory.
  const bytes = c.buf.slice(c.pos, c.pos + n * size);
  c.pos += n * size;
  const b = bytes.buffer;
  switch (t) {
    case VT.U8:
      return bytes;
    case VT.I8:
      return new Int8Array(b);
    case VT.U16:
      return new Uint16Array(b);
    case VT.I16:
      return new Int16Array(b);
    case VT.U32:
      return new Uint32Array(b);
    case VT.I32:
      return new Int32Array(b);
    case VT.F32:
      return new Float32Array(b);
    case VT.F64:
      return new Float64Array(b);
    case VT.U64:
      return new BigUint64Array(b);
    default:
      return new BigInt64Array(b);
  }
}

function readValue(c: Cursor, t: number, what: string, depth: number): GgufValue {
  if (t !== VT.ARRAY) return readScalar(c, t, what);
  if (depth > 8) c.fail(`${what}: arrays nested more than 8 deep`);
  const et = c.u32(`${what} array element type`);
  const n = c.u64(`${what} array length`);
  if (et === VT.STRING || et === VT.ARRAY) {
    // each element takes at least 8 bytes (a length): refuse impossible counts before looping
    if (c.pos + n * 8 > Math.min(c.fileSize, GGUF_MAX_HEADER_BYTES)) {
      c.fail(`${what}: array of ${n} ${VT_NAMES[et]}s at offset ${c.pos} runs past the end of the file`);
    }
    const out: GgufValue[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = readValue(c, et, `${what}[${i}]`, depth + 1);
    return out as readonly string[] | readonly GgufValue[];
  }
  if (et === VT.BOOL) {
    if (n > GGUF_MAX_HEADER_BYTES) c.fail(`${what}: array of ${n} bools is larger than any header`);
    c.need(n, what);
    const out: boolean[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = readScalar(c, et, `${what}[${i}]`) as boolean;
    return out;
  }
  if (VT_SIZE[et] === undefined) c.fail(`${what}: unknown array element type ${et}`);
  return readNumberArray(c, et, n, what);
}

/** Render a value for the string-only {@link TensorReader.metadata}; long arrays are summarised. */
function render(v: GgufValue): string {
  if (typeof v === "string") return v;
  if (typeof v !== "object") return String(v);
  const arr = v as ArrayLike<unknown>;
  if (arr.length > 64) return `[array of ${arr.length}]`;
  return JSON.stringify(Array.from(arr, (x) => (typeof x === "bigint" ? x.toString() : x)));
}

interface ParsedHeader {
  version: number;
  kv: Map<string, GgufValue>;
  tensors: { name: string; ne: number[]; type: number; offset: number }[];
  headerEnd: number;
}

function parseHeader(buf: Uint8Array, fileSize: number, fail: (msg: string) => never): ParsedHeader {
  const c = new Cursor(buf, fileSize, fail);
  if (fileSize < 4) fail(`file is ${fileSize} bytes, too short for the GGUF magic`);
  c.need(4, "magic");
  const magic = String.fromCharCode(buf[0], buf[1], buf[2], buf[3]);
  if (magic !== "GGUF") {
    fail(
      `not a GGUF file: magic is ${JSON.stringify(magic)} (bytes ${
        Array.from(buf.subarray(0, 4))
      }), expected "GGUF"`,
    );
  }
  c.pos = 4;
  const version = c.u32("version");
  if (version !== 2 && version !== 3) {
    const hint = version === 1
      ? " (version 1 used 32-bit lengths; re-convert the model with a current llama.cpp)"
      : (version & 0xffff) === 0
      ? " (a big-endian GGUF? only little-endian files are read)"
      : "";
    fail(`unsupported GGUF version ${version}; versions 2 and 3 are supported${hint}`);
  }
  const nTensors = c.u64("tensor count");
  const nKv = c.u64("key/value count");
  // a key/value takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least 8 + 4 + 4 + 8
  if (c.pos + nKv * 13 + nTensors * 24 > Math.min(fileSize, GGUF_MAX_HEADER_BYTES)) {
    fail(
      `header claims ${nKv} key/values and ${nTensors} tensors, more than a ${
        Math.min(fileSize, GGUF_MAX_HEADER_BYTES)
      }-byte file can hold`,
    );
  }
  const kv = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const key = c.str(`key of metadata entry ${i}`);
    const t = c.u32(`value type of ${JSON.stringify(key)}`);
    if (t > VT.F64) fail(`metadata ${JSON.stringify(key)}: unknown value type ${t}`);
    if (kv.has(key)) fail(`metadata key ${JSON.stringify(key)} appears twice`);
    kv.set(key, readValue(c, t, `metadata ${JSON.stringify(key)}`, 0));
  }
  const tensors: ParsedHeader["tensors"] = [];
  const seen = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = c.str(`name of tensor ${i}`);
    const what = `tensor ${JSON.stringify(name)}`;
    if (seen.has(name)) fail(`${what} appears twice`);
    seen.add(name);
    const nDims = c.u32(`${what} dimension count`);
    if (nDims < 1 || nDims > MAX_DIMS) fail(`${what} has ${nDims} dimensions (1 to ${MAX_DIMS} allowed)`);
    const ne: number[] = [];
    let count = 1;
    for (let d = 0; d < nDims; d++) {
      const n = c.u64(`${what} dimension ${d}`);
      ne.push(n);
      count *= n;
      if (!Number.isSafeInteger(count)) fail(`${what} has too many elements (${ne.join("×")}…)`);
    }
    const type = c.u32(`${what} type`);
    const offset = c.u64(`${what} data offset`);
    tensors.push({ name, ne, type, offset });
  }
  return { version, kv, tensors, headerEnd: c.pos };
}

/**
 * Open a GGUF file (path, URL, Blob, bytes or {@link ByteSource}). Reads and validates the header now; tensors
 * are read one at a time by `read(name)` and converted to float32. Supported tensor types: F32, F16, BF16, F64
 * (and I32); a quantized tensor makes opening fail with a {@link FormatError} naming it and its type, unless
 * `allowUnsupportedTypes` is set.
 *
 * @example
 * ```ts
 * import { openGguf } from "./gguf.ts";
 * const g = await openGguf("models/stories260K/stories260K.gguf");
 * console.log(g.kv.get("general.architecture"), g.info("token_embd.weight").shape); // llama [512, 64]
 * await g.close();
 * ```
 */
export async function openGguf(
  input: string | URL | Blob | Uint8Array | ArrayBuffer | ByteSource,
  opts: OpenGgufOptions = {},
): Promise<GgufFile> {
  const owned = !isByteSource(input);
  const src = await openSource(input);
  try {
    return await parse(src, opts);
  } catch (e) {
    if (owned) await src.close().catch(() => {});
    throw e;
  }
}

async function parse(src: ByteSource, opts: OpenGgufOptions): Promise<GgufFile> {
  const file = src.name;
  const fail = (msg: string): never => {
    throw new FormatError(file, `GGUF: ${msg}`);
  };
  let want = Math.min(src.size, 1 << 20);
  let h: ParsedHeader;
  for (;;) {
    const buf = await src.read(0, want);
    try {
      h = parseHeader(buf, src.size, fail);
      break;
    } catch (e) {
      if (!(e instanceof NeedMore)) throw e;
      if (e.upTo > GGUF_MAX_HEADER_BYTES) {
        fail(`the header needs more than ${GGUF_MAX_HEADER_BYTES} bytes (a corrupt length or count?)`);
      }
      want = Math.min(src.size, Math.max(e.upTo, want * 2));
    }
  }
  const alignValue = h.kv.get("general.alignment") ?? 32;
  if (
    typeof alignValue !== "number" || !Number.isInteger(alignValue) || alignValue < 1 ||
    alignValue > 1 << 30 ||
    (alignValue & (alignValue - 1)) !== 0
  ) {
    fail(`general.alignment is ${render(alignValue)}, expected a power of two`);
  }
  const align = alignValue as number;
  const dataStart = Math.ceil(h.headerEnd / align) * align;
  if (dataStart > src.size && h.tensors.length > 0) {
    fail(
      `the data section would start at ${dataStart}, past the end of the file (${src.size} bytes): truncated?`,
    );
  }
  const dataSize = src.size - dataStart;
  const infos: TensorInfo[] = [];
  const where = new Map<string, { info: TensorInfo; offset: number; readable: boolean; type: number }>();
  for (const t of h.tensors) {
    const what = `tensor ${JSON.stringify(t.name)}`;
    const dtype = READABLE[t.type];
    if (dtype === undefined && !opts.allowUnsupportedTypes) {
      fail(
        `${what} has type ${
          typeName(t.type)
        }, which this library cannot read (supported: F32, F16, BF16, F64); ` +
          `convert the model to F16 or F32 GGUF, or use its safetensors checkpoint`,
      );
    }
    if (t.offset % align !== 0) {
      fail(`${what} data offset ${t.offset} is not a multiple of the alignment ${align}`);
    }
    const count = t.ne.reduce((a, b) => a * b, 1);
    const byteLength = dtype === undefined ? 0 : count * DTYPE_SIZE[dtype];
    if (t.offset + byteLength > dataSize) {
      fail(
        `${what} (${byteLength} bytes at data offset ${t.offset}) lies outside the data section ` +
          `(${dataSize} bytes from offset ${dataStart}): truncated file or bad offset`,
      );
    }
    const info: TensorInfo = Object.freeze({
      name: t.name,
      dtype: dtype ?? "U8",
      shape: Object.freeze([...t.ne].reverse()),
      byteLength,
    });
    infos.push(info);
    where.set(t.name, { info, offset: dataStart + t.offset, readable: dtype !== undefined, type: t.type });
  }
  // Two tensors sharing bytes: writing one would change the other, and a reader could not tell which is right
  const spans = [...where.entries()].filter(([, w]) => w.info.byteLength > 0)
    .sort((x, y) => x[1].offset - y[1].offset);
  for (let i = 1; i < spans.length; i++) {
    const [pn, p] = spans[i - 1], [qn, q] = spans[i];
    if (q.offset < p.offset + p.info.byteLength) {
      fail(
        `tensors ${JSON.stringify(pn)} (data offset ${
          p.offset - dataStart
        }, ${p.info.byteLength} bytes) and ` +
          `${JSON.stringify(qn)} (data offset ${q.offset - dataStart}) overlap`,
      );
    }
  }
  const metadata: Record<string, string> = {};
  for (const [k, v] of h.kv) metadata[k] = render(v);
  const frozenInfos = Object.freeze(infos);
  const lookup = (name: string) => {
    const w = where.get(name);
    if (!w) throw new FormatError(file, `no tensor named ${JSON.stringify(name)} in this GGUF file`);
    return w;
  };
  return {
    name: file,
    version: h.version,
    kv: h.kv,
    dataStart,
    tensorNames: Object.freeze(h.tensors.map((t) => t.name)),
    metadata: Object.freeze(metadata),
    tensors: () => frozenInfos,
    has: (name: string) => where.has(name),
    info: (name: string) => lookup(name).info,
    async read(name: string): Promise<Float32Array> {
      const w = lookup(name);
      if (!w.readable) {
        throw new FormatError(
          file,
          `GGUF: tensor ${JSON.stringify(name)} has type ${typeName(w.type)}, which this library cannot read`,
        );
      }
      return decodeToFloat32(w.info.dtype, await src.read(w.offset, w.info.byteLength));
    },
    close: () => src.close(),
  };
}
