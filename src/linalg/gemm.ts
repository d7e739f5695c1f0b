/**
 * General matrix product C = op(A)·op(B) in float32.
 * Plain-TypeScript fallback; faster backends (WASM SIMD, WebGPU) plug in behind the same function.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import type { Matrix } from "./matrix.ts";

/** Options of {@link matmul}. */
export interface MatmulOptions {
  /** Use Aᵀ instead of A. */
  transA?: boolean;
  /** Use Bᵀ instead of B (the usual case for y = x·Wᵀ with W stored out×in). */
  transB?: boolean;
}

/**
 * C = op(A)·op(B). Shapes: op(A) m×k, op(B) k×n → C m×n.
 *
 * @example
 * ```ts
 * import { matmul } from "./gemm.ts";
 * import { matrix } from "./matrix.ts";
 * const x = matrix(1, 2, new Float32Array([1, 2]));      // tokens×in
 * const w = matrix(3, 2, new Float32Array([1, 0, 0, 1, 1, 1])); // out×in
 * const y = matmul(x, w, { transB: true });             // 1×3: [1, 2, 3]
 * ```
 */
export function matmul(a: Matrix, b: Matrix, opts: MatmulOptions = {}): Matrix {
  const m = opts.transA ? a.cols : a.rows;
  const k = opts.transA ? a.rows : a.cols;
  const kb = opts.transB ? b.cols : b.rows;
  const n = opts.transB ? b.rows : b.cols;
  if (k !== kb) {
    throw new ShapeError(
      `matmul: inner dimensions differ: op(A) is ${m}×${k}, op(B) is ${kb}×${n}`,
    );
  }
  const c = new Float32Array(m * n);
  // Bring both operands to the cache-friendly layout (A row-major m×k, B row-major k×n) once.
  const ad = opts.transA ? transposeData(a.data, a.rows, a.cols) : a.data;
  const bd = opts.transB ? transposeData(b.data, b.rows, b.cols) : b.data;
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    const ai = i * k;
    for (let p = 0; p < k; p++) {
      const av = ad[ai + p];
      if (av === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) row[j] += av * bd[bp + j];
    }
    c.set(row, i * n);
  }
  return { rows: m, cols: n, data: c };
}

function transposeData(d: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = d[i * cols + j];
  return out;
}
