/**
 * Storage types: byte sizes, decoding little-endian tensor bytes to float32 and encoding float32 to
 * F32 / F16 / BF16 bytes (round to nearest, ties to even) for the writers.
 *
 * Decoders accept any byte offset (a tensor's bytes need not be aligned in a file or a buffer).
 *
 * @module
 */
import type { DType } from "./tensor_reader.ts";

/** Bytes per element of every {@link DType}. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = Object.freeze({
  F32: 4,
  F16: 2,
  BF16: 2,
  F64: 8,
  I32: 4,
  I64: 8,
  U8: 1,
});

/** The storage types the writers produce. */
export type WritableDType = "F32" | "F16" | "BF16";

/** True if `s` names a {@link DType} this library reads. */
export function isDType(s: unknown): s is DType {
  return typeof s === "string" && Object.hasOwn(DTYPE_SIZE, s);
}

/** Bytes per element of `dtype`. */
export function dtypeSize(dtype: DType): number {
  return DTYPE_SIZE[dtype];
}

/** True on little-endian hosts (every current JS platform), where float32 bytes can be viewed directly. */
export const LITTLE_ENDIAN: boolean = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// f16 bits → f32 bits for all 65,536 halves: 256 KB, built on first use. A lookup beats bit fiddling per element.
let f16Table: Uint32Array | undefined;

function halfTable(): Uint32Array {
  if (f16Table) return f16Table;
  const t = new Uint32Array(65536);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) {
      // zero or subnormal: mant × 2^-24 is exact in float32
      f[0] = mant * 2 ** -24;
      t[h] = (sign | u[0]) >>> 0;
    } else if (exp === 0x1f) {
      t[h] = (sign | 0x7f800000 | (mant << 13)) >>> 0;
    } else {
      t[h] = (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
    }
  }
  f16Table = t;
  return t;
}

/** Convert one IEEE half (as its 16 bits) to a number. */
export function f16BitsToNumber(h: number): number {
  const f = new Float32Array(new Uint32Array([halfTable()[h & 0xffff]]).buffer);
  return f[0];
}

const scratchF = new Float32Array(1);
const scratchU = new Uint32Array(scratchF.buffer);

/** Bits of the IEEE half nearest to float32 `x` (ties to even; overflow → ±Inf; NaN stays NaN). */
export function numberToF16Bits(x: number): number {
  scratchF[0] = x;
  return f32BitsToF16Bits(scratchU[0]);
}

function f32BitsToF16Bits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e >= 1) {
    // normal half: keep 10 mantissa bits, round on the 13 dropped; a carry may roll into the exponent (→ Inf)
    const h = (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    const up = rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1) ? 1 : 0;
    return sign | (h + up);
  }
  // subnormal half: value = m × 2^-24 with m = significand >> (14 - e)
  const shift = 14 - e;
  if (shift > 24) return sign;
  const sig = mant | 0x800000;
  const m = sig >>> shift;
  const rest = sig & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  const up = rest > half || (rest === half && (m & 1) === 1) ? 1 : 0;
  return sign | (m + up);
}

/** Bits of the bfloat16 nearest to float32 `x` (ties to even; NaN stays NaN). */
export function numberToBf16Bits(x: number): number {
  scratchF[0] = x;
  return f32BitsToBf16Bits(scratchU[0]);
}

function f32BitsToBf16Bits(b: number): number {
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Decode `count` elements of `dtype` from little-endian `bytes` (any byte offset) into `out` starting at `outOffset`.
 * `bytes` must hold at least `count × size` bytes. Integers are converted to the nearest float32.
 */
export function decodeInto(
  dtype: DType,
  bytes: Uint8Array,
  out: Float32Array,
  outOffset = 0,
  count: number = Math.floor(bytes.byteLength / DTYPE_SIZE[dtype]),
): void {
  const size = DTYPE_SIZE[dtype];
  if (count * size > bytes.byteLength || outOffset + count > out.length) {
    throw new RangeError(
      `decode ${dtype}: ${count} elements need ${
        count * size
      } bytes and room in the output, got ${bytes.byteLength} bytes / ${out.length - outOffset} slots`,
    );
  }
  if (dtype === "F32") {
    if (LITTLE_ENDIAN) {
      // Copy bytes straight into the output's memory: safe for any source alignment.
      new Uint8Array(out.buffer, out.byteOffset + outOffset * 4, count * 4).set(bytes.subarray(0, count * 4));
    } else {
      const dv = new DataView(bytes.buffer, bytes.byteOffset, count * 4);
      for (let i = 0; i < count; i++) out[outOffset + i] = dv.getFloat32(i * 4, true);
    }
    return;
  }
  if (dtype === "F16" || dtype === "BF16") {
    // View the output as uint32 and store float32 bit patterns directly.
    const o = new Uint32Array(out.buffer, out.byteOffset + outOffset * 4, count);
    if (dtype === "F16") {
      const t = halfTable();
      for (let i = 0, j = 0; i < count; i++, j += 2) o[i] = t[bytes[j] | (bytes[j + 1] << 8)];
    } else {
      for (let i = 0, j = 0; i < count; i++, j += 2) o[i] = ((bytes[j] << 16) | (bytes[j + 1] << 24)) >>> 0;
    }
    return;
  }
  if (dtype === "U8") {
    for (let i = 0; i < count; i++) out[outOffset + i] = bytes[i];
    return;
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, count * size);
  if (dtype === "F64") {
    for (let i = 0; i < count; i++) out[outOffset + i] = dv.getFloat64(i * 8, true);
  } else if (dtype === "I32") {
    for (let i = 0; i < count; i++) out[outOffset + i] = dv.getInt32(i * 4, true);
  } else {
    // I64: hi × 2^32 + lo is exact up to 2^53 and then rounds once more to float32
    for (let i = 0; i < count; i++) {
      out[outOffset + i] = dv.getInt32(i * 8 + 4, true) * 4294967296 + dv.getUint32(i * 8, true);
    }
  }
}

/** Decode little-endian `bytes` of `dtype` (any byte offset) into a new Float32Array. */
export function decodeToFloat32(dtype: DType, bytes: Uint8Array): Float32Array {
  const size = DTYPE_SIZE[dtype];
  if (bytes.byteLength % size !== 0) {
    throw new RangeError(`decode ${dtype}: ${bytes.byteLength} bytes is not a multiple of ${size}`);
  }
  const out = new Float32Array(bytes.byteLength / size);
  decodeInto(dtype, bytes, out, 0, out.length);
  return out;
}

/**
 * Encode float32 values to little-endian `dtype` bytes, rounding to nearest (ties to even) for F16 and BF16.
 * With `out` given (at least `data.length × size` bytes, any offset) the bytes are written there; else a new array.
 */
export function encodeFromFloat32(dtype: WritableDType, data: Float32Array, out?: Uint8Array): Uint8Array {
  const size = DTYPE_SIZE[dtype];
  const n = data.length;
  const dst = out ?? new Uint8Array(n * size);
  if (dst.byteLength < n * size) {
    throw new RangeError(`encode ${dtype}: ${n} values need ${n * size} bytes, output has ${dst.byteLength}`);
  }
  if (dtype === "F32") {
    if (LITTLE_ENDIAN) {
      dst.set(new Uint8Array(data.buffer, data.byteOffset, n * 4));
    } else {
      const dv = new DataView(dst.buffer, dst.byteOffset, n * 4);
      for (let i = 0; i < n; i++) dv.setFloat32(i * 4, data[i], true);
    }
    return dst.subarray(0, n * 4);
  }
  // Read float32 bit patterns through a uint32 view of the input (host order = float32's own order).
  const bits = new Uint32Array(data.buffer, data.byteOffset, n);
  if (dtype === "F16") {
    for (let i = 0, j = 0; i < n; i++, j += 2) {
      const h = f32BitsToF16Bits(bits[i]);
      dst[j] = h & 0xff;
      dst[j + 1] = h >>> 8;
    }
  } else {
    for (let i = 0, j = 0; i < n; i++, j += 2) {
      const h = f32BitsToBf16Bits(bits[i]);
      dst[j] = h & 0xff;
      dst[j + 1] = h >>> 8;
    }
  }
  return dst.subarray(0, n * 2);
}
