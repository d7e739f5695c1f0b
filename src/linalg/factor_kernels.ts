/**
 * Internal float64 building blocks of the factorisations: the general product {@link gemm64} (WASM DGEMM when
 * the kernels are loaded, plain TypeScript otherwise) and the checks every factorisation starts with.
 * Not part of the public API.
 *
 * @module
 */
import { NumericError, ShapeError } from "../errors.ts";
import { matmul64 } from "./gemm.ts";
import type { FloatArray, Matrix, Matrix64 } from "./matrix.ts";
import { toFloat64 } from "./matrix.ts";
import { wasmRuntime } from "./wasm/runtime.ts";

/** Options of {@link gemm64}. */
export interface Gemm64Options {
  /** Use Aᵀ. */
  transA?: boolean;
  /** Use Bᵀ. */
  transB?: boolean;
  /** Force the TypeScript path (tests compare both). */
  ts?: boolean;
}

/** Whether the WASM float64 kernels are loaded. */
export function hasWasm64(): boolean {
  const rt = wasmRuntime();
  return rt !== null && rt.has("dgemm");
}

/**
 * C = op(A)·op(B) in float64 through {@link matmul64} (WASM DGEMM, threads when enabled). Float32 operands
 * are widened first. Shapes: op(A) m×k, op(B) k×n → C m×n.
 */
export function gemm64(a: Matrix<FloatArray>, b: Matrix<FloatArray>, opts: Gemm64Options = {}): Matrix64 {
  return matmul64(toF64(a), toF64(b), {
    transA: opts.transA,
    transB: opts.transB,
    ...(opts.ts ? { backend: "ts" as const } : {}),
  });
}

function toF64(m: Matrix<FloatArray>): Matrix64 {
  return m.data instanceof Float64Array ? m as Matrix64 : toFloat64(m);
}

/** Throw a {@link NumericError} naming `op` if any value is NaN or ±Inf. */
export function checkFinite(m: Matrix<FloatArray>, op: string): void {
  const d = m.data;
  for (let i = 0; i < d.length; i++) {
    if (!Number.isFinite(d[i])) {
      throw new NumericError(
        `${op}: input ${m.rows}×${m.cols} has non-finite value ${d[i]} at (${Math.floor(i / m.cols)}, ${
          i % m.cols
        })`,
      );
    }
  }
}

/** Throw a {@link ShapeError} naming `op` unless `m` is square. */
export function checkSquare(m: Matrix<FloatArray>, op: string): void {
  if (m.rows !== m.cols) throw new ShapeError(`${op}: needs a square matrix, got ${m.rows}×${m.cols}`);
  if (m.data.length !== m.rows * m.cols) {
    throw new ShapeError(`${op}: ${m.rows}×${m.cols} matrix has ${m.data.length} values`);
  }
}

/**
 * Householder reflector of `x[off], x[off+stride], …` (len values), LAPACK dlarfg convention:
 * H = I − tau·v·vᵀ with v[0] = 1 and H·x = beta·e₁. Writes v[1..] back over x[1..] (v[0] is implicit),
 * returns [tau, beta]; tau = 0 when x is already a multiple of e₁.
 */
export function householder(x: Float64Array, off: number, stride: number, len: number): [number, number] {
  const alpha = x[off];
  let scale = 0;
  for (let i = 1; i < len; i++) scale = Math.max(scale, Math.abs(x[off + i * stride]));
  if (scale === 0) return [0, alpha];
  let ss = 0;
  for (let i = 1; i < len; i++) {
    const v = x[off + i * stride] / scale;
    ss += v * v;
  }
  const xnorm = scale * Math.sqrt(ss);
  const beta = -(alpha >= 0 ? 1 : -1) * Math.hypot(alpha, xnorm);
  const tau = (beta - alpha) / beta;
  const inv = 1 / (alpha - beta);
  for (let i = 1; i < len; i++) x[off + i * stride] *= inv;
  return [tau, beta];
}

/**
 * Apply plane rotations to consecutive rows of a row-major matrix, in order: rotation q acts on rows
 * first+q and first+q+1 (x' = c·x + s·y, y' = −s·x + c·y) over columns [0, len). Column-chunked so a whole
 * sweep of rotations runs over a cache-resident slice.
 */
export function rotateRowsSeq(
  data: Float64Array,
  ld: number,
  len: number,
  first: number,
  c: Float64Array,
  s: Float64Array,
  count: number,
): void {
  const CH = 512;
  for (let j0 = 0; j0 < len; j0 += CH) {
    const j1 = Math.min(len, j0 + CH);
    for (let q = 0; q < count; q++) {
      const cq = c[q], sq = s[q];
      if (sq === 0 && cq === 1) continue;
      const x = (first + q) * ld, y = x + ld;
      for (let j = j0; j < j1; j++) {
        const a = data[x + j], b = data[y + j];
        data[x + j] = cq * a + sq * b;
        data[y + j] = cq * b - sq * a;
      }
    }
  }
}

/** One plane rotation of rows `rx` and `ry` (x' = c·x + s·y, y' = −s·x + c·y) over columns [0, len). */
export function rotateRows(
  data: Float64Array,
  ld: number,
  len: number,
  rx: number,
  ry: number,
  c: number,
  s: number,
) {
  const x = rx * ld, y = ry * ld;
  for (let j = 0; j < len; j++) {
    const a = data[x + j], b = data[y + j];
    data[x + j] = c * a + s * b;
    data[y + j] = c * b - s * a;
  }
}

/**
 * Apply H = I − tau·v·vᵀ from the right to rows [r0, r1) of a row-major matrix, on columns [c0, c0+len):
 * row ← row − tau·(row·v)·vᵀ. `v` is given as v[voff + i·vstride], with v[0] taken as 1.
 */
export function reflectRows(
  data: Float64Array,
  ld: number,
  r0: number,
  r1: number,
  c0: number,
  len: number,
  tau: number,
  v: Float64Array,
): void {
  if (tau === 0) return;
  for (let i = r0; i < r1; i++) {
    const o = i * ld + c0;
    let dot = data[o];
    for (let j = 1; j < len; j++) dot += data[o + j] * v[j];
    if (dot === 0) continue;
    const f = tau * dot;
    data[o] -= f;
    for (let j = 1; j < len; j++) data[o + j] -= f * v[j];
  }
}

/**
 * Apply H = I − tau·v·vᵀ from the left to rows [r0, r0+len) × columns [c0, c1) of a row-major matrix
 * (v[0] = 1 implicit, v[1..] in `v`): w = vᵀ·block, block −= tau·v·w. `w` is scratch of ≥ c1 − c0 values.
 */
export function reflectCols(
  data: Float64Array,
  ld: number,
  r0: number,
  len: number,
  c0: number,
  c1: number,
  tau: number,
  v: Float64Array,
  w: Float64Array,
): void {
  if (tau === 0 || c1 <= c0) return;
  const nc = c1 - c0;
  for (let j = 0; j < nc; j++) w[j] = data[r0 * ld + c0 + j];
  for (let i = 1; i < len; i++) {
    const vi = v[i];
    if (vi === 0) continue;
    const o = (r0 + i) * ld + c0;
    for (let j = 0; j < nc; j++) w[j] += vi * data[o + j];
  }
  for (let j = 0; j < nc; j++) w[j] *= tau;
  for (let i = 0; i < len; i++) {
    const vi = i === 0 ? 1 : v[i];
    if (vi === 0) continue;
    const o = (r0 + i) * ld + c0;
    for (let j = 0; j < nc; j++) data[o + j] -= vi * w[j];
  }
}
