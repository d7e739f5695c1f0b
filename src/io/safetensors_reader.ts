/**
 * Safetensors reader: reads the 8-byte header length and the JSON header, validates every entry, then reads
 * one tensor's bytes at a time on request. Works on any {@link ByteSource}: file, URL (Range), Blob, bytes.
 *
 * File layout: `u64 LE n` · `n bytes of JSON header` · data section. Each header entry is
 * `name: {dtype, shape, data_offsets: [begin, end]}` with offsets relative to the data section;
 * an optional `__metadata__` entry maps strings to strings.
 *
 * @module
 */
import type { ByteSource } from "./byte_source.ts";
import type { DType, TensorInfo, TensorReader } from "./tensor_reader.ts";
import { decodeInto, DTYPE_SIZE, isDType, LITTLE_ENDIAN } from "./dtype.ts";
import { isByteSource, openSource, type SourceInput } from "./open_source.ts";
import type { OpenUrlOptions } from "./url_source.ts";
import { FormatError } from "../errors.ts";

/** Largest JSON header accepted (the reference implementation's cap is also 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

/** A tensor's description plus where its bytes are, as absolute file offsets. */
export interface SafetensorsEntry extends TensorInfo {
  /** Absolute byte offset of the tensor's first byte in the file. */
  readonly offset: number;
}

/** A validated safetensors header. */
export interface SafetensorsHeader {
  /** `__metadata__`, or `{}` when absent. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Every tensor, sorted by position in the file. */
  readonly entries: readonly SafetensorsEntry[];
  /** Absolute offset of the data section (8 + header length). */
  readonly dataStart: number;
}

const SUPPORTED = Object.keys(DTYPE_SIZE).join(", ");

function describe(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return "an array";
  if (typeof x === "string") return `the string ${JSON.stringify(x.length > 40 ? x.slice(0, 40) + "…" : x)}`;
  if (typeof x === "object") return "an object";
  return `${typeof x} ${String(x)}`;
}

function isNonNegativeSafeInt(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

/**
 * The first key that appears twice at the top level of the JSON object `text` (already known to parse), or
 * undefined. One pass over the text, tracking depth and strings.
 */
export function firstDuplicateKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      const start = i;
      let escaped = false;
      for (i++; text.charCodeAt(i) !== 34; i++) {
        if (text.charCodeAt(i) === 92 /* \ */) {
          escaped = true;
          i++;
        }
      }
      if (depth !== 1) continue;
      let j = i + 1;
      while (isJsonSpace(text.charCodeAt(j))) j++;
      if (text.charCodeAt(j) !== 58 /* : */) continue; // a string value, not a key
      const key = escaped ? JSON.parse(text.slice(start, i + 1)) as string : text.slice(start + 1, i);
      if (seen.has(key)) return key;
      seen.add(key);
    } else if (c === 123 || c === 91) depth++; // { [
    else if (c === 125 || c === 93) depth--; // } ]
  }
  return undefined;
}

/** JSON's white space: space, tab, line feed, carriage return. */
function isJsonSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13;
}

/**
 * Read and validate the header of a safetensors source. Throws a {@link FormatError} naming the source and the
 * tensor or field at fault. Reads 8 bytes plus the header, nothing else.
 */
export async function readSafetensorsHeader(src: ByteSource): Promise<SafetensorsHeader> {
  const file = src.name;
  const fail = (msg: string): never => {
    throw new FormatError(file, `safetensors header: ${msg}`);
  };
  if (src.size < 8) fail(`file is ${src.size} bytes, too short for the 8-byte header length (truncated?)`);
  const lenBytes = await src.read(0, 8);
  const dv = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8);
  const lo = dv.getUint32(0, true), hi = dv.getUint32(4, true);
  const headerLength = hi * 4294967296 + lo;
  const lenText = hi === 0 ? String(lo) : `${hi}·2^32+${lo}`;
  if (headerLength === 0) fail("header length is 0 (no JSON header)");
  if (headerLength > MAX_HEADER_BYTES) {
    fail(`header length ${lenText} exceeds the ${MAX_HEADER_BYTES}-byte cap (not a safetensors file?)`);
  }
  if (8 + headerLength > src.size) {
    fail(`header length ${lenText} runs past the end of the file (${src.size} bytes; truncated?)`);
  }
  const raw = await src.read(8, headerLength);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
  } catch {
    return fail("header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    fail(`header must be a JSON object, got ${describe(json)}`);
  }
  const dup = firstDuplicateKey(text);
  if (dup !== undefined) {
    // JSON.parse keeps the last of two equal keys: which tensor is read would depend on the parser
    fail(`tensor ${JSON.stringify(dup)} appears twice in the header`);
  }
  const dataStart = 8 + headerLength;
  const dataSize = src.size - dataStart;
  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (value === null) continue;
      if (typeof value !== "object" || Array.isArray(value)) {
        fail(`__metadata__ must be an object, got ${describe(value)}`);
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== "string") {
          fail(`__metadata__ must map strings to strings, but key ${JSON.stringify(k)} holds ${describe(v)}`);
        }
        // defineProperty, not assignment: a "__proto__" key must stay an ordinary entry
        Object.defineProperty(metadata, k, { value: v, enumerable: true });
      }
      continue;
    }
    const where = `tensor ${JSON.stringify(name)}`;
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      fail(`${where}: entry must be an object {dtype, shape, data_offsets}, got ${describe(value)}`);
    }
    const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
    if (typeof dtype !== "string") fail(`${where}: dtype must be a string, got ${describe(dtype)}`);
    if (!isDType(dtype)) {
      fail(`${where}: unknown or unsupported dtype ${JSON.stringify(dtype)} (supported: ${SUPPORTED})`);
    }
    if (!Array.isArray(shape)) {
      fail(`${where}: shape must be an array of non-negative integers, got ${describe(shape)}`);
    }
    let count = 1;
    for (const d of shape as unknown[]) {
      if (!isNonNegativeSafeInt(d)) {
        fail(`${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
      }
      count *= d as number;
    }
    if (!Number.isSafeInteger(count * DTYPE_SIZE[dtype as DType])) {
      fail(`${where}: shape ${JSON.stringify(shape)} is too large`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeSafeInt)) {
      fail(
        `${where}: data_offsets must be a [begin, end] pair of non-negative integers, got ${
          JSON.stringify(offsets)
        }`,
      );
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) fail(`${where}: data_offsets [${begin}, ${end}] end before begin`);
    if (end > dataSize) {
      fail(
        `${where}: data_offsets [${begin}, ${end}] outside the data section (${dataSize} bytes after the header; truncated?)`,
      );
    }
    const byteLength = end - begin;
    const expected = count * DTYPE_SIZE[dtype as DType];
    if (byteLength !== expected) {
      fail(
        `${where}: shape ${
          JSON.stringify(shape)
        } × ${dtype} needs ${expected} bytes but data_offsets [${begin}, ${end}] span ${byteLength}`,
      );
    }
    entries.push({
      name,
      dtype: dtype as DType,
      shape: Object.freeze([...(shape as number[])]),
      byteLength,
      offset: dataStart + begin,
    });
  }
  entries.sort((a, b) => a.offset - b.offset || a.byteLength - b.byteLength);
  // Overlap check on sorted ranges; empty tensors occupy no bytes and cannot overlap. Gaps are allowed.
  let prev: SafetensorsEntry | undefined;
  for (const e of entries) {
    if (e.byteLength === 0) continue;
    if (prev && e.offset < prev.offset + prev.byteLength) {
      const r = (x: SafetensorsEntry) => `[${x.offset - dataStart}, ${x.offset - dataStart + x.byteLength}]`;
      fail(`tensors ${JSON.stringify(prev.name)} ${r(prev)} and ${JSON.stringify(e.name)} ${r(e)} overlap`);
    }
    prev = e;
  }
  return { metadata: Object.freeze(metadata), entries: Object.freeze(entries), dataStart };
}

/** Read elements in chunks of this many bytes when converting, so a conversion never doubles a tensor's memory. */
const CHUNK_BYTES = 1 << 22;
/** Largest float32 tensor read in one piece (file reads are limited to 2 GiB per call); larger ones are chunked. */
const SINGLE_READ_MAX = 1 << 30;

/** Read one tensor described by `entry` from `src` as float32, allocating only the result (plus a small chunk). */
export async function readTensorFloat32(src: ByteSource, entry: SafetensorsEntry): Promise<Float32Array> {
  const size = DTYPE_SIZE[entry.dtype];
  const count = entry.byteLength / size;
  if (count === 0) return new Float32Array(0);
  if (entry.dtype === "F32" && LITTLE_ENDIAN && entry.byteLength <= SINGLE_READ_MAX) {
    const bytes = await src.read(entry.offset, entry.byteLength);
    // A fresh, whole, aligned buffer becomes the result as it is: no copy.
    if (
      bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.byteLength &&
      bytes.buffer instanceof ArrayBuffer
    ) {
      return new Float32Array(bytes.buffer, 0, count);
    }
    const out = new Float32Array(count);
    decodeInto("F32", bytes, out, 0, count);
    return out;
  }
  const out = new Float32Array(count);
  const perChunk = Math.max(1, Math.floor(CHUNK_BYTES / size));
  for (let i = 0; i < count; i += perChunk) {
    const n = Math.min(perChunk, count - i);
    const bytes = await src.read(entry.offset + i * size, n * size);
    decodeInto(entry.dtype, bytes, out, i, n);
  }
  return out;
}

/** The parsed layout of a safetensors file plus the source it is read from. */
export interface SafetensorsReader extends TensorReader {
  /** Where each tensor is: absolute offsets, for tools that copy raw bytes. */
  entry(name: string): SafetensorsEntry;
  /** Read a tensor's stored bytes unconverted (little-endian, its own dtype). */
  readRaw(name: string): Promise<Uint8Array>;
}

/**
 * Open a safetensors file (path, `file:`/`http(s):` URL, Blob, bytes or {@link ByteSource}) as a
 * {@link TensorReader} (`urlOptions`: timeout, headers, retries of an `http(s)` input). Only the header is read now; `read(name)` reads that tensor's bytes alone and
 * widens them to float32. `close()` releases the source (a ByteSource passed in is closed too).
 *
 * @example
 * ```ts ignore
 * import { openSafetensors } from "./safetensors_reader.ts";
 * const st = await openSafetensors("model.safetensors");
 * for (const t of st.tensors()) console.log(t.name, t.dtype, t.shape);
 * const w = await st.read("model.embed_tokens.weight"); // vocab×hidden, float32
 * await st.close();
 * ```
 */
export async function openSafetensors(
  input: SourceInput,
  urlOptions: OpenUrlOptions = {},
): Promise<SafetensorsReader> {
  const owned = !isByteSource(input);
  const src = await openSource(input, urlOptions);
  let header: SafetensorsHeader;
  try {
    header = await readSafetensorsHeader(src);
  } catch (e) {
    if (owned) await src.close().catch(() => {});
    throw e;
  }
  const byName = new Map(header.entries.map((e) => [e.name, e]));
  const infos: readonly TensorInfo[] = Object.freeze(
    header.entries.map((e) =>
      Object.freeze({ name: e.name, dtype: e.dtype, shape: e.shape, byteLength: e.byteLength })
    ),
  );
  const infoByName = new Map(infos.map((i) => [i.name, i]));
  let closed = false;
  const entry = (name: string): SafetensorsEntry => {
    if (closed) throw new Error(`${src.name}: read of tensor ${JSON.stringify(name)} after close()`);
    const e = byName.get(name);
    if (!e) {
      throw new FormatError(src.name, `no tensor named ${JSON.stringify(name)} in this safetensors file`);
    }
    return e;
  };
  return {
    name: src.name,
    metadata: header.metadata,
    tensors: () => infos,
    has: (name: string) => byName.has(name),
    info(name: string): TensorInfo {
      const i = infoByName.get(name);
      if (!i) {
        throw new FormatError(src.name, `no tensor named ${JSON.stringify(name)} in this safetensors file`);
      }
      return i;
    },
    entry,
    async read(name: string): Promise<Float32Array> {
      return await readTensorFloat32(src, entry(name));
    },
    async readRaw(name: string): Promise<Uint8Array> {
      const e = entry(name);
      return await src.read(e.offset, e.byteLength);
    },
    close(): Promise<void> {
      closed = true;
      return src.close();
    },
  };
}
