/**
 * FWSVD (Hsu et al. 2022, "Language model compression with weighted low-rank factorization"): weight each
 * output row of W by its Fisher information before truncating, so the rows the loss is most sensitive to
 * are reconstructed best.
 *
 * Per row i of W (out×in), I_i = mean over calibration batches of Σ_j (∂L/∂W_ij)² (a batch's loss gradient,
 * ∂L/∂W = dyᵀ·x summed over its tokens; `fisherRows` accumulates it). With S = diag(√I):
 * S·W = U Σ Vᵀ, A = S⁻¹ U_k Σ_k^½ (out×k), B = Σ_k^½ V_kᵀ (k×in). By Eckart–Young, A·B minimises the
 * Fisher-weighted error ‖S (W − A B)‖_F = sqrt(Σ_{i>k} σ_i²) over all rank-k products; with a uniform I it is
 * the plain SVD.
 *
 * A row whose Fisher information is 0 (never reached by the loss on the calibration data, or underflow)
 * would make S singular: every I_i is floored at {@link FISHER_FLOOR} × the mean of I before the square root,
 * so such a row is still approximated, with the least weight (and an all-zero I gives the plain SVD).
 *
 * @example
 * ```ts
 * import { compressFwsvd } from "./fwsvd.ts";
 * const w = { rows: 2, cols: 2, data: new Float32Array([3, 0, 0, 1]) };
 * // Row 1 matters 100× more than row 0: rank 1 keeps it exactly and drops row 0.
 * const { a, b } = compressFwsvd(w, new Float64Array([1, 100]), 1);
 * ```
 *
 * @module
 */
import { NumericError, ShapeError } from "../errors.ts";
import type { FloatArray, Matrix } from "../linalg/matrix.ts";
import { svdPart } from "../linalg/svd.ts";
import { mm } from "../model/backward_ops.ts";
import {
  checkWeight,
  type Factors,
  leftFactor,
  rightFactor64,
  since,
  tailEnergy,
  toF32Checked,
} from "./factors.ts";

/** Relative floor of the Fisher information: I_i ← max(I_i, FISHER_FLOOR · mean(I)) (see the module doc). */
export const FISHER_FLOOR = 1e-6;

/**
 * Add Σ_j (dyᵀ·x)_ij² of one batch to `rows` (out): the per-row squared norms of the batch's dL/dW
 * (x: tokens×in, dy: tokens×out, one element type). dL/dW is formed once (out×in, a weight's size) by a GEMM.
 */
export function addFisherBatch<T extends FloatArray>(rows: Float64Array, x: Matrix<T>, dy: Matrix<T>): void {
  if (x.rows !== dy.rows || rows.length !== dy.cols) {
    throw new ShapeError(
      `fwsvd fisher: x is ${x.rows}×${x.cols}, dy ${dy.rows}×${dy.cols}, ${rows.length} rows to accumulate`,
    );
  }
  const g = mm(dy, x, { transA: true }), n = g.cols; // out×in
  for (let i = 0; i < g.rows; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += g.data[i * n + j] * g.data[i * n + j];
    rows[i] += s;
  }
}

/** S_ii = √max(I_i, floor·mean(I)); all ones for an all-zero I. Throws on a negative or non-finite I_i. */
export function fisherScale(fisher: Float64Array, floor = FISHER_FLOOR): Float64Array {
  let mean = 0;
  for (let i = 0; i < fisher.length; i++) {
    const v = fisher[i];
    if (!(v >= 0) || !Number.isFinite(v)) {
      throw new NumericError(`fwsvd: Fisher information of row ${i} is ${v} (must be finite and ≥ 0)`);
    }
    mean += v / fisher.length;
  }
  const s = new Float64Array(fisher.length);
  for (let i = 0; i < s.length; i++) s[i] = mean > 0 ? Math.sqrt(Math.max(fisher[i], floor * mean)) : 1;
  return s;
}

/**
 * FWSVD factors of `w: out×in` at rank k from its per-row Fisher information (out). Returns `a: out×k`,
 * `b: k×in`; the report's singular values are those of diag(√I)·W. Throws ShapeError/NumericError on a
 * bad shape, rank, weight or Fisher vector.
 */
export function compressFwsvd(w: Matrix<FloatArray>, fisher: Float64Array, rank: number): Factors {
  const t0 = performance.now();
  checkWeight(w, rank, "fwsvd compress");
  if (fisher.length !== w.rows) {
    throw new ShapeError(`fwsvd compress: ${fisher.length} Fisher values for a weight of ${w.rows} rows`);
  }
  const m = w.rows, n = w.cols, s = fisherScale(fisher);
  const sw = new Float64Array(m * n); // S·W: row i scaled by S_ii
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) sw[i * n + j] = w.data[i * n + j] * s[i];
  const f = svdPart({ rows: m, cols: n, data: sw }, { left: rank, right: rank });
  // A = S⁻¹ U_k Σ_k^½: U_k Σ_k^½ with row i divided by S_ii.
  const u = f.u!;
  for (let i = 0; i < m; i++) for (let j = 0; j < u.cols; j++) u.data[i * u.cols + j] /= s[i];
  const a = leftFactor(u, f.s, rank);
  const b = toF32Checked(rightFactor64(f.vt!, f.s, rank), "fwsvd compress");
  const { tail, total } = tailEnergy(f.s, rank);
  for (const v of a.data) {
    if (!Number.isFinite(v)) throw new NumericError("fwsvd compress: factor A is not finite");
  }
  return {
    a,
    b,
    report: {
      method: "fwsvd",
      rank,
      rows: m,
      cols: n,
      singularValues: f.s,
      energyKept: total > 0 ? 1 - tail / total : 1,
      seconds: since(t0),
    },
  };
}
