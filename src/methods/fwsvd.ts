/**
 * FWSVD (Hsu et al. 2022, "Language model compression with weighted low-rank factorization"): weight the
 * features of W by their Fisher information before truncating, so those the loss is most sensitive to are
 * reconstructed best.
 *
 * The Fisher information of a weight is the mean over calibration batches of its squared loss gradient
 * (∂L/∂W = dyᵀ·x per batch, summed over the batch's tokens: {@link addFisherBatch}); FWSVD sums it along
 * one side of W (out×in here, as PyTorch stores it) and weights that side by its square root:
 * - `"input"` (the default): J_j = Σ_i (∂L/∂W_ij)² per input feature; W·S = U Σ Vᵀ with S = diag(√J),
 *   A = U_k Σ_k^½, B = Σ_k^½ V_kᵀ S⁻¹. This is what the public PyTorch port of FWSVD computes (the weight
 *   gradient transposed to in×out, squared, summed per input feature).
 * - `"output"`: I_i = Σ_j (∂L/∂W_ij)² per output row; S·W = U Σ Vᵀ with S = diag(√I), A = S⁻¹ U_k Σ_k^½,
 *   B = Σ_k^½ V_kᵀ (the formula of `docs/methods.md` read with W out×in). Measured worse than plain SVD on
 *   stories260K (ppl 496 vs 220 at 20 % removed), while "input" beats it (133): see the README proposal.
 *
 * Either way A·B minimises the Fisher-weighted error (‖(W − AB)·S‖_F or ‖S·(W − AB)‖_F) over all rank-k
 * products, and equals sqrt(Σ_{i>k} σ_i²) of the weighted matrix (Eckart–Young); a uniform Fisher gives the
 * plain SVD.
 *
 * A feature whose Fisher information is 0 (never reached by the loss on the calibration data, or underflow)
 * would make S singular: every value is floored at {@link FISHER_FLOOR} × their mean before the square root,
 * so such a feature is still approximated, with the least weight (and an all-zero vector gives plain SVD).
 *
 * @example
 * ```ts
 * import { compressFwsvd } from "./fwsvd.ts";
 * const w = { rows: 2, cols: 2, data: new Float32Array([3, 0, 0, 1]) };
 * // Output row 1 matters 100× more than row 0: rank 1 keeps it exactly and drops row 0.
 * const { a, b } = compressFwsvd(w, new Float64Array([1, 100]), 1, "output");
 * ```
 *
 * @module
 */
import { NumericError, ShapeError } from "../errors.ts";
import { type FloatArray, type Matrix, transpose } from "../linalg/matrix.ts";
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
 * Add one batch's squared loss gradient dL/dW = dyᵀ·x (x: tokens×in, dy: tokens×out, one element type) to the
 * Fisher sums: `rows[i] += Σ_j dW_ij²` (out) and, when given, `cols[j] += Σ_i dW_ij²` (in). dL/dW is formed
 * once (out×in, a weight's size) by a GEMM.
 */
export function addFisherBatch<T extends FloatArray>(
  rows: Float64Array | undefined,
  x: Matrix<T>,
  dy: Matrix<T>,
  cols?: Float64Array,
): void {
  if (x.rows !== dy.rows || (rows && rows.length !== dy.cols) || (cols && cols.length !== x.cols)) {
    throw new ShapeError(
      `fwsvd fisher: x is ${x.rows}×${x.cols}, dy ${dy.rows}×${dy.cols}, sums of ${rows?.length} rows and ${cols?.length} columns`,
    );
  }
  const g = mm(dy, x, { transA: true }), n = g.cols; // out×in
  for (let i = 0; i < g.rows; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) {
      const v = g.data[i * n + j] * g.data[i * n + j];
      s += v;
      if (cols) cols[j] += v;
    }
    if (rows) rows[i] += s;
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
 * Which features of W (out×in) the Fisher information is summed over and weights: `"input"` (per input
 * feature j, J_j = Σ_i (∂L/∂W_ij)²; SVD of W·diag(√J)) or `"output"` (per output row i, I_i = Σ_j (∂L/∂W_ij)²;
 * SVD of diag(√I)·W). See the module doc for which is the paper's.
 */
export type FisherSide = "input" | "output";

/**
 * FWSVD factors of `w: out×in` at rank k from its Fisher information per output row (`side` "output", length
 * out: A = S⁻¹ U_k Σ_k^½, B = Σ_k^½ V_kᵀ for S·W = U Σ Vᵀ) or per input feature ("input", the default, length
 * in: A = U_k Σ_k^½, B = Σ_k^½ V_kᵀ S⁻¹ for W·S = U Σ Vᵀ). The report's singular values are those of the
 * weighted matrix. Throws ShapeError/NumericError on a bad shape, rank, weight or Fisher vector.
 */
export function compressFwsvd(
  w: Matrix<FloatArray>,
  fisher: Float64Array,
  rank: number,
  side: FisherSide = "input",
): Factors {
  if (side !== "input" && side !== "output") {
    throw new ShapeError(`fwsvd compress: side must be "input" or "output", got ${JSON.stringify(side)}`);
  }
  if (side === "output") return weightRows(w, fisher, rank);
  // W·S = (S·Wᵀ)ᵀ: the output-side factors of Wᵀ, transposed and swapped.
  checkWeight(w, rank, "fwsvd compress");
  if (fisher.length !== w.cols) {
    throw new ShapeError(
      `fwsvd compress: ${fisher.length} Fisher values for a weight of ${w.cols} input features`,
    );
  }
  const t = weightRows(transpose(w), fisher, rank);
  return { a: transpose(t.b), b: transpose(t.a), report: { ...t.report, rows: w.rows, cols: w.cols } };
}

/** FWSVD with the Fisher information per output row (see {@link compressFwsvd}). */
function weightRows(w: Matrix<FloatArray>, fisher: Float64Array, rank: number): Factors {
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
