/**
 * What every method returns, and the step they share: split a truncated SVD U Σ Vᵀ into the two stored
 * factors A = U_k Σ_k^½ (out×k) and B = Σ_k^½ V_kᵀ (k×in), so both carry half of the scale.
 *
 * @module
 */
import { NumericError, ShapeError } from "../errors.ts";
import type { FloatArray, Matrix, Matrix64 } from "../linalg/matrix.ts";

/** Facts about one factorisation, for the compression report. */
export interface MethodReport {
  /** "svd", "asvd" or "svdllm". */
  method: string;
  /** Rank kept. */
  rank: number;
  /** Output features m. */
  rows: number;
  /** Input features n. */
  cols: number;
  /** Singular values of the matrix that was truncated (W, W·S or W·L), descending. */
  singularValues: Float64Array;
  /** Fraction of Σσ² kept by the top k. */
  energyKept: number;
  /** SVD-LLM: predicted per-token layer loss sqrt(Σ_{i>k} σ_i²) = ‖(W − AB)Xᵀ‖_F / √T (mean Gram). */
  predictedLoss?: number;
  /** SVD-LLM: predicted loss relative to ‖W Xᵀ‖_F: sqrt(Σ_{i>k} σ_i² / Σ σ_i²). */
  relativeLoss?: number;
  /** SVD-LLM: diagonal shift added to the Gram matrix before Cholesky (0 if none was needed). */
  shift?: number;
  /** SVD-LLM: Cholesky attempts. */
  tries?: number;
  /** Wall time of the factorisation, seconds. */
  seconds: number;
}

/** A rank-k factorisation W ≈ A·B. */
export interface Factors {
  /** out×k, float32. */
  a: Matrix;
  /** k×in, float32. */
  b: Matrix;
  /** What was done and measured. */
  report: MethodReport;
}

/** Throw unless `w` is a finite out×in matrix and `rank` an integer in [1, min(out, in)]. */
export function checkWeight(w: Matrix<FloatArray>, rank: number, what: string): void {
  if (!w || w.rows < 1 || w.cols < 1 || w.data.length !== w.rows * w.cols) {
    throw new ShapeError(`${what}: weight must be a non-empty out×in matrix, got ${w?.rows}×${w?.cols}`);
  }
  if (!Number.isInteger(rank) || rank < 1 || rank > Math.min(w.rows, w.cols)) {
    throw new ShapeError(
      `${what}: rank ${rank} is outside [1, ${Math.min(w.rows, w.cols)}] for a ${w.rows}×${w.cols} weight`,
    );
  }
  const d = w.data;
  for (let i = 0; i < d.length; i++) {
    if (!Number.isFinite(d[i])) {
      throw new NumericError(
        `${what}: weight has a non-finite value ${d[i]} at (${Math.floor(i / w.cols)}, ${i % w.cols})`,
      );
    }
  }
}

/** A = U_k Σ_k^½ as float32 (`u: m×r`, r ≥ k). */
export function leftFactor(u: Matrix64, s: Float64Array, k: number): Matrix {
  const m = u.rows, r = u.cols;
  const a = new Float32Array(m * k);
  for (let j = 0; j < k; j++) {
    const h = Math.sqrt(s[j]);
    for (let i = 0; i < m; i++) a[i * k + j] = u.data[i * r + j] * h;
  }
  return { rows: m, cols: k, data: a };
}

/** Σ_k^½ V_kᵀ in float64 (`vt: r×n`, r ≥ k): the first k rows of Vᵀ, row j scaled by √σ_j. */
export function rightFactor64(vt: Matrix64, s: Float64Array, k: number): Matrix64 {
  const n = vt.cols;
  const b = new Float64Array(k * n);
  for (let j = 0; j < k; j++) {
    const h = Math.sqrt(s[j]);
    for (let c = 0; c < n; c++) b[j * n + c] = vt.data[j * n + c] * h;
  }
  return { rows: k, cols: n, data: b };
}

/** Σ_{i≥k} σ_i² and Σ σ_i², summed from the small end for accuracy. */
export function tailEnergy(s: Float64Array, k: number): { tail: number; total: number } {
  let tail = 0, total = 0;
  for (let i = s.length - 1; i >= 0; i--) {
    const e = s[i] * s[i];
    total += e;
    if (i >= k) tail += e;
  }
  return { tail, total };
}

/** Seconds since `t0` (a `performance.now()` reading). */
export function since(t0: number): number {
  return (performance.now() - t0) / 1000;
}

/** Copy a float64 matrix into float32, throwing NumericError (naming `what`) on overflow or NaN. */
export function toF32Checked(m: Matrix64, what: string): Matrix {
  const out = Float32Array.from(m.data);
  for (let i = 0; i < out.length; i++) {
    if (!Number.isFinite(out[i])) {
      throw new NumericError(`${what}: factor value ${m.data[i]} is not representable in float32`);
    }
  }
  return { rows: m.rows, cols: m.cols, data: out };
}
