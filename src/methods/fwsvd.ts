/**
 * FWSVD (Hsu et al. 2022, "Language model compression with weighted low-rank factorization"): weight W by the
 * Fisher information of its entries before truncating, so that what the loss is most sensitive to is
 * reconstructed best.
 *
 * The Fisher information of a weight is the mean over calibration batches of its squared loss gradient
 * (∂L/∂W = dyᵀ·x, x the layer's inputs and dy the loss gradient at its outputs). The paper sums it per output
 * row of W and truncates the SVD of diag(√I)·W: a diagonal weighting of one side. This module has that and
 * its generalisations (W out×in, as PyTorch stores it):
 * - `compressFwsvdKfac`, the library's default: the Kronecker-factored Fisher F ≈ E[x xᵀ] ⊗ E[dy dyᵀ] (as
 *   K-FAC approximates it), whose weighted error tr(ΔWᵀ·G_out·ΔW·G_in) = ‖L_oᵀ·ΔW·L_i‖²_F is minimised by the
 *   truncated SVD of L_oᵀ·W·L_i (L the Cholesky factors). It generalises the paper's row weighting (the
 *   diagonal of G_out) to both sides and to correlated features; G_out = I is SVD-LLM's whitening, so the
 *   output side is what Fisher weighting adds to it. Measured far better than every diagonal form on
 *   stories260K and tinylm-brown (see the README proposal).
 * - `compressFwsvd` with `"input"`: J_j = Σ_i (∂L/∂W_ij)² per input feature, SVD of W·diag(√J) (what the
 *   public PyTorch port of FWSVD computes: the gradient transposed to in×out, summed per input feature);
 *   `"output"`: I_i per output row, SVD of diag(√I)·W (the paper's, and `docs/methods.md`'s, row weighting;
 *   measured worse than plain SVD on both models); `"both"`: diag(√I)·W·diag(√J).
 *
 * Every form's A·B minimises its Fisher-weighted error over all rank-k products, and that error is
 * sqrt(Σ_{i>k} σ_i²) of the weighted matrix (Eckart–Young); a uniform Fisher gives the plain SVD.
 *
 * A diagonal Fisher value of 0 (a feature the loss never reaches on the calibration data, or underflow) would
 * make the weighting singular: every value is floored at {@link FISHER_FLOOR} × their mean before the square
 * root (an all-zero vector gives plain SVD). K-FAC factors are damped: G + λ·mean(diag G)·I
 * ({@link KFAC_DAMPING}).
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
import { cholesky } from "../linalg/cholesky.ts";
import { gemm64 } from "../linalg/factor_kernels.ts";
import { type FloatArray, type Matrix, type Matrix64, toFloat64 } from "../linalg/matrix.ts";
import { svdPart } from "../linalg/svd.ts";
import { solveTriangular } from "../linalg/triangular.ts";
import { compressSvdLlm } from "./svdllm.ts";
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
 * Which features of W (out×in) the diagonal Fisher information weights: `"input"` (per input feature j,
 * J_j = Σ_i (∂L/∂W_ij)²; SVD of W·diag(√J)), `"output"` (per output row i, I_i = Σ_j (∂L/∂W_ij)²; SVD of
 * diag(√I)·W) or `"both"` (SVD of diag(√I)·W·diag(√J): the two combined). The full two-sided (K-FAC) form
 * is {@link compressFwsvdKfac}.
 */
export type FisherSide = "input" | "output" | "both";

/**
 * How FWSVD weights W: "kfac" (two-sided with the full K-FAC factors, {@link compressFwsvdKfac}) or one of
 * the diagonal {@link FisherSide}s ({@link compressFwsvd}).
 */
export type FwsvdWeighting = FisherSide | "kfac";

/** The sides {@link compressFwsvd} accepts. */
const SIDES: readonly FisherSide[] = ["input", "output", "both"];

/**
 * FWSVD factors of `w: out×in` at rank k from its diagonal Fisher information: per output row (`side`
 * "output", `fisher` of length out: A = S⁻¹ U_k Σ_k^½, B = Σ_k^½ V_kᵀ for S·W = U Σ Vᵀ), per input feature
 * ("input", the default, length in: A = U_k Σ_k^½, B = Σ_k^½ V_kᵀ S⁻¹ for W·S = U Σ Vᵀ), or both ("both":
 * `fisher` the rows' values, `cols` the input features'; SVD of S_o·W·S_i). The report's singular values are
 * those of the weighted matrix. Throws ShapeError/NumericError on a bad shape, rank, weight or Fisher vector.
 */
export function compressFwsvd(
  w: Matrix<FloatArray>,
  fisher: Float64Array,
  rank: number,
  side: FisherSide = "input",
  cols?: Float64Array,
): Factors {
  if (!SIDES.includes(side)) {
    throw new ShapeError(
      `fwsvd compress: side must be "input", "output" or "both", got ${JSON.stringify(side)}`,
    );
  }
  checkWeight(w, rank, "fwsvd compress");
  const rowFisher = side === "input" ? undefined : fisher;
  const colFisher = side === "input" ? fisher : side === "both" ? cols : undefined;
  if (side === "both" && !cols) {
    throw new ShapeError(`fwsvd compress: side "both" needs the input features' Fisher`);
  }
  if (rowFisher && rowFisher.length !== w.rows) {
    throw new ShapeError(`fwsvd compress: ${rowFisher.length} Fisher values for a weight of ${w.rows} rows`);
  }
  if (colFisher && colFisher.length !== w.cols) {
    throw new ShapeError(
      `fwsvd compress: ${colFisher.length} Fisher values for a weight of ${w.cols} input features`,
    );
  }
  return weighted(w, rowFisher && fisherScale(rowFisher), colFisher && fisherScale(colFisher), rank);
}

/** Truncated SVD of diag(r)·W·diag(c) (a missing side: ones), the weights folded back into A and B. */
function weighted(
  w: Matrix<FloatArray>,
  r: Float64Array | undefined,
  c: Float64Array | undefined,
  rank: number,
): Factors {
  const t0 = performance.now();
  const m = w.rows, n = w.cols;
  const sw = new Float64Array(m * n); // diag(r)·W·diag(c)
  for (let i = 0; i < m; i++) {
    const ri = r ? r[i] : 1;
    for (let j = 0; j < n; j++) sw[i * n + j] = w.data[i * n + j] * ri * (c ? c[j] : 1);
  }
  const f = svdPart({ rows: m, cols: n, data: sw }, { left: rank, right: rank });
  // A = diag(r)⁻¹ U_k Σ_k^½, B = Σ_k^½ V_kᵀ diag(c)⁻¹.
  const u = f.u!, vt = f.vt!;
  if (r) { for (let i = 0; i < m; i++) for (let j = 0; j < u.cols; j++) u.data[i * u.cols + j] /= r[i]; }
  if (c) { for (let i = 0; i < vt.rows; i++) for (let j = 0; j < n; j++) vt.data[i * n + j] /= c[j]; }
  const a = leftFactor(u, f.s, rank);
  const b = toF32Checked(rightFactor64(vt, f.s, rank), "fwsvd compress");
  for (const v of a.data) {
    if (!Number.isFinite(v)) throw new NumericError("fwsvd compress: factor A is not finite");
  }
  return { a, b, report: report(f.s, rank, m, n, t0) };
}

function report(s: Float64Array, rank: number, rows: number, cols: number, t0: number): Factors["report"] {
  const { tail, total } = tailEnergy(s, rank);
  return {
    method: "fwsvd",
    rank,
    rows,
    cols,
    singularValues: s,
    energyKept: total > 0 ? 1 - tail / total : 1,
    seconds: since(t0),
  };
}

/**
 * The Kronecker-factored (K-FAC) Fisher information of one linear: F ≈ E[x xᵀ] ⊗ E[dy dyᵀ], the means over
 * calibration tokens of the layer's input x and of the loss gradient dy at its output (per token).
 */
export interface KfacFactors {
  /** E[x xᵀ], in×in (SVD-LLM's Gram matrix). */
  input: Matrix64;
  /** E[dy dyᵀ], out×out. */
  output: Matrix64;
}

/** Options of {@link compressFwsvdKfac}. */
export interface KfacOptions {
  /**
   * Damping of each factor relative to its mean diagonal: G + λ·mean(diag G)·I (default {@link KFAC_DAMPING});
   * 0 adds a shift only where a factor is singular (the Cholesky's "auto" schedule).
   */
  damping?: number;
  /**
   * Damping of the output factor alone, relative as `damping` (default {@link KFAC_OUTPUT_DAMPING}). Large
   * values approach G_out ∝ I, i.e. SVD-LLM's whitening: it sets how much the loss's sensitivity per output
   * reshapes the data whitening.
   */
  outputDamping?: number;
}

/**
 * Default relative damping of the K-FAC output factor, E[dy dyᵀ] + 10·mean(diag)·I: the gradient factor of a
 * few thousand calibration tokens is noisy. Chosen on held-out calibration text of both models (best or
 * near-best at 20 and 40 % removed; at 60 % stories260K prefers more, tinylm-brown less: see the README).
 */
export const KFAC_OUTPUT_DAMPING = 10;

/** Default relative damping of the K-FAC factors (chosen on held-out calibration text: see the README proposal). */
export const KFAC_DAMPING = 1e-2;

/**
 * FWSVD with the full two-sided (K-FAC) Fisher: with G_in = L_i L_iᵀ and G_out = L_o L_oᵀ (Cholesky, damped),
 * the Fisher-weighted error of W' is tr((W−W')ᵀ G_out (W−W') G_in) = ‖L_oᵀ (W−W') L_i‖²_F, minimised over
 * rank k by truncating the SVD of L_oᵀ W L_i = U Σ Vᵀ: A = L_o⁻ᵀ U_k Σ_k^½, B = Σ_k^½ V_kᵀ L_i⁻¹ (the weighted
 * error is then sqrt(Σ_{i>k} σ_i²), the report's `predictedLoss`). Diagonal G_out and G_in give the diagonal
 * two-sided FWSVD; G_out = I gives SVD-LLM's whitening. B and the input side are formed as SVD-LLM does
 * ({@link compressSvdLlm} of L_oᵀ·W), then A = L_o⁻ᵀ·A' by a triangular solve.
 */
export function compressFwsvdKfac(
  w: Matrix<FloatArray>,
  factors: KfacFactors,
  rank: number,
  opts: KfacOptions = {},
): Factors {
  const t0 = performance.now();
  checkWeight(w, rank, "fwsvd compress");
  const m = w.rows, n = w.cols, { input, output } = factors;
  if (output.rows !== m || output.cols !== m || input.rows !== n || input.cols !== n) {
    throw new ShapeError(
      `fwsvd compress: K-FAC factors ${output.rows}×${output.cols} (output) and ${input.rows}×${input.cols} (input) for a weight of ${m}×${n}`,
    );
  }
  const lambda = opts.damping ?? KFAC_DAMPING, lambdaOut = opts.outputDamping ?? KFAC_OUTPUT_DAMPING;
  for (const l of [lambda, lambdaOut]) {
    if (!(l >= 0) || !Number.isFinite(l)) {
      throw new ShapeError(`fwsvd compress: damping must be a finite number ≥ 0, got ${l}`);
    }
  }
  const damping = (g: Matrix64, l = lambda) => (l > 0 ? l * meanDiag(g) : "auto" as const);
  const lo = cholesky(output, { damping: damping(output, lambdaOut) }).factor; // out×out lower
  const low = gemm64(lo, toFloat64(w), { transA: true }); // L_oᵀ·W
  const f = compressSvdLlm(low, { gram: input }, rank, { damping: damping(input) });
  const a = solveTriangular(lo, toFloat64(f.a), { lower: true, transpose: true }); // L_oᵀ·A = A'
  return {
    a: toF32Checked(a, "fwsvd compress"),
    b: f.b,
    report: { ...report(f.report.singularValues!, rank, m, n, t0), shift: f.report.shift },
  };
}

function meanDiag(g: Matrix64): number {
  let s = 0;
  for (let i = 0; i < g.rows; i++) s += Math.abs(g.data[i * g.cols + i]) / g.rows;
  return s > 0 ? s : 1;
}
