/**
 * SoCo (arXiv 2502.15092): a learned singular spectrum. Each compressed linear W (out×in) is written in a
 * spectral basis W = U·diag(σ)·R and trained as
 *
 *   W'(s) = U · diag(σ ⊙ s) · R = U · diag(s) · C,   C = diag(σ)·R = Uᵀ·W   (r×in, r = min(out, in))
 *
 * with one learnable score s_i per component, initialised at 1 (W'(1) = W up to rounding). Two bases:
 *
 * - `"svd"`: W = U Σ Vᵀ, R = Vᵀ: the plain SVD of the weight.
 * - `"whitened"`: SVD-LLM's basis, W·L = U Σ Vᵀ with G = L·Lᵀ the Cholesky factor of the mean Gram matrix of
 *   the linear's calibration inputs, R = Vᵀ·L⁻¹. Then (W − W'(s))·L = U·diag(σ ⊙ (1 − s))·Vᵀ: on the calibration
 *   inputs the layer's output error is exactly Σ σ_i² (1 − s_i)² per token ({@link layerError}).
 *
 * Both bases are stored the same way, as U and C = Uᵀ·W (true for both, since UᵀU = I), so the model needs
 * neither L⁻¹ nor a triangular solve. They are computed in float64 and kept in float32 (as the weights are):
 * for square linears U and C hold twice the weight's values, so float64 would quadruple the model. For the layer's input x (tokens×in) and the loss gradient dy with
 * respect to its output y = x·W'ᵀ = (x·Cᵀ)·diag(s)·Uᵀ (tokens×out):
 *
 *   ∂L/∂s_i = Σ_t (x·Cᵀ)_{t,i} · (dy·U)_{t,i}   ({@link addScoreGradient})
 *
 * which is the brief's σ_i·Σ_t (dy·U)_{t,i}(x·Rᵀ)_{t,i} with σ folded into C.
 *
 * @example
 * ```ts
 * import { spectralWeight, svdBasis } from "./soco.ts";
 * import { matrix } from "../linalg/matrix.ts";
 * const w = matrix(2, 3, new Float32Array([1, 2, 3, 4, 5, 6]));
 * const basis = svdBasis("demo", w);
 * const same = spectralWeight(basis, new Float64Array(basis.rank).fill(1)); // ≈ w
 * Math.abs(same.data[5] - 6) < 1e-5; // true
 * ```
 *
 * @module
 */
import { NumericError, ShapeError } from "../errors.ts";
import { cholesky, type CholeskyResult } from "../linalg/cholesky.ts";
import { matmul, matmul64 } from "../linalg/gemm.ts";
import {
  assertFinite,
  type FloatArray,
  type Matrix,
  type Matrix64,
  toFloat32,
  toFloat64,
} from "../linalg/matrix.ts";
import { svd, svdPart } from "../linalg/svd.ts";
import { breakEvenRank } from "./ratio.ts";

/** Which basis the spectrum is learned in. */
export type SocoBasisKind = "svd" | "whitened";

/** One linear's spectral parameterisation W'(s) = U·diag(s)·C (see the module doc). */
export interface SpectralBasis {
  /** Tensor prefix, e.g. "model.layers.0.self_attn.q_proj" (for errors and reports). */
  readonly name: string;
  /** The basis: plain SVD of W or SVD of W·L. */
  readonly kind: SocoBasisKind;
  /** Output features m. */
  readonly rows: number;
  /** Input features n. */
  readonly cols: number;
  /** Components r = min(m, n). */
  readonly rank: number;
  /** Left singular vectors: m×r, orthonormal columns (float32). */
  readonly u: Matrix;
  /** C = diag(σ)·R = Uᵀ·W: r×n (float32). */
  readonly c: Matrix;
  /** σ: r singular values of W (svd) or W·L (whitened), descending. */
  readonly sigma: Float64Array;
  /** The most components worth keeping: the largest k with k·(m+n) < m·n (a larger rank saves nothing). */
  readonly cap: number;
  /** Whitened basis: the Cholesky shift added to the Gram matrix (0 when none was needed). */
  readonly shift: number;
}

/** Largest rank whose factors store fewer values than the dense m×n weight. */
export function rankCap(m: number, n: number): number {
  const b = breakEvenRank(m, n);
  return Math.min(m, n, Number.isInteger(b) ? b - 1 : Math.floor(b));
}

function checkW(w: Matrix<FloatArray>, name: string, what: string): void {
  if (!(w.rows >= 1 && w.cols >= 1) || w.data.length !== w.rows * w.cols) {
    throw new ShapeError(`soco ${what} ${name}: invalid weight shape ${w.rows}×${w.cols}`);
  }
  assertFinite(w, `soco ${what} ${name}: weight`); // NumericError naming the element
}

/** The plain SVD basis of `w: out×in`: W = U·diag(σ)·Vᵀ, C = diag(σ)·Vᵀ. */
export function svdBasis(name: string, w: Matrix<FloatArray>): SpectralBasis {
  checkW(w, name, "svd basis");
  const { u, s, vt } = svd(w);
  const r = s.length, n = w.cols;
  const c = new Float32Array(r * n);
  for (let i = 0; i < r; i++) for (let j = 0; j < n; j++) c[i * n + j] = s[i] * vt.data[i * n + j];
  return basis(name, "svd", w, toFloat32(u), { rows: r, cols: n, data: c }, s, 0);
}

/**
 * SVD-LLM's whitened basis of `w: out×in` from the mean Gram matrix of its inputs `gram: in×in` (or its
 * Cholesky factorisation, shared by linears reading the same input): W·L = U·diag(σ)·Vᵀ, C = Uᵀ·W.
 * The Gram matrix is damped as SVD-LLM does ("auto") when not positive definite.
 */
export function whitenedBasis(
  name: string,
  w: Matrix<FloatArray>,
  stats: { gram?: Matrix64; cholesky?: CholeskyResult },
): SpectralBasis {
  checkW(w, name, "whitened basis");
  const n = w.cols;
  const chol = stats.cholesky ?? (stats.gram ? cholesky(stats.gram, { damping: "auto" }) : undefined);
  if (!chol || chol.factor.rows !== n || chol.factor.cols !== n) {
    throw new ShapeError(
      `soco whitened basis ${name}: the weight is ${w.rows}×${n}, its Gram matrix must be ${n}×${n}, got ${
        chol ? `${chol.factor.rows}×${chol.factor.cols}` : "none"
      }`,
    );
  }
  const w64 = toFloat64(w);
  // W·L = U Σ Vᵀ; V is not needed (C comes from W), so it is never formed (r×n float64 saved).
  const f = svdPart(matmul64(w64, chol.factor), { left: Math.min(w.rows, n), label: name });
  const u = f.u!, s = f.s;
  const c = matmul64(u, w64, { transA: true }); // Uᵀ·W = Σ Vᵀ L⁻¹
  return basis(name, "whitened", w, toFloat32(u), toFloat32(c), s, chol.shift);
}

function basis(
  name: string,
  kind: SocoBasisKind,
  w: Matrix<FloatArray>,
  u: Matrix,
  c: Matrix,
  sigma: Float64Array,
  shift: number,
): SpectralBasis {
  return {
    name,
    kind,
    rows: w.rows,
    cols: w.cols,
    rank: sigma.length,
    u,
    c,
    sigma,
    cap: rankCap(w.rows, w.cols),
    shift,
  };
}

function checkScores(b: SpectralBasis, s: ArrayLike<number>, what: string): void {
  if (s.length !== b.rank) {
    throw new ShapeError(`soco ${what} ${b.name}: ${s.length} scores for ${b.rank} components`);
  }
}

/**
 * W'(s) = U·diag(s)·C as a dense float32 out×in matrix (for the forward and backward passes). `scratch`: an
 * array of at least out·r values to hold U·diag(s) (a caller forming many weights reuses one instead of leaving
 * an out×r temporary per call to the collector); its contents are overwritten.
 */
export function spectralWeight(b: SpectralBasis, s: ArrayLike<number>, scratch?: Float32Array): Matrix {
  checkScores(b, s, "weight");
  const m = b.rows, r = b.rank;
  const us = scratch && scratch.length >= m * r ? scratch.subarray(0, m * r) : new Float32Array(m * r);
  for (let i = 0; i < m; i++) for (let k = 0; k < r; k++) us[i * r + k] = b.u.data[i * r + k] * s[k];
  return matmul({ rows: m, cols: r, data: us }, b.c);
}

/**
 * Compressed factors of W'(s) keeping the components `keep` (indices into the spectrum, any order):
 * A = U_k·diag(s_k·√g_k) (out×k), B = diag(1/√g_k)·C_k (k×in) with g_i = ‖C_i‖, so A·B = U_k diag(s_k) C_k and
 * the two factors have balanced magnitudes (as SVD's Σ^½ split). Throws NumericError on a value float32
 * cannot hold — never a NaN model.
 */
export function spectralFactors(
  b: SpectralBasis,
  s: ArrayLike<number>,
  keep: readonly number[],
): { a: Matrix; b: Matrix } {
  checkScores(b, s, "factors");
  const m = b.rows, n = b.cols, r = b.rank, k = keep.length;
  const a = new Float32Array(m * k), bb = new Float32Array(k * n);
  for (let j = 0; j < k; j++) {
    const i = keep[j];
    if (!Number.isInteger(i) || i < 0 || i >= r) {
      throw new ShapeError(`soco factors ${b.name}: component ${i} is not in 0..${r - 1}`);
    }
    let g = 0;
    for (let c = 0; c < n; c++) g += b.c.data[i * n + c] ** 2;
    g = Math.sqrt(Math.sqrt(g)); // √‖C_i‖
    const ha = g > 0 ? s[i] * g : 0, hb = g > 0 ? 1 / g : 0;
    for (let o = 0; o < m; o++) a[o * k + j] = b.u.data[o * r + i] * ha;
    for (let c = 0; c < n; c++) bb[j * n + c] = b.c.data[i * n + c] * hb;
  }
  for (const [v, what] of [[a, "A"], [bb, "B"]] as const) {
    for (let i = 0; i < v.length; i++) {
      if (!Number.isFinite(v[i])) {
        throw new NumericError(`soco factors ${b.name}: factor ${what} has a non-finite value at ${i}`);
      }
    }
  }
  return { a: { rows: m, cols: k, data: a }, b: { rows: k, cols: n, data: bb } };
}

/**
 * Add this batch's ∂L/∂s to `grad` (length r): Σ_t (x·Cᵀ)_{t,i}·(dy·U)_{t,i} for the linear's input
 * `x: tokens×in` and the loss gradient with respect to its output `dy: tokens×out`.
 */
export function addScoreGradient(
  b: SpectralBasis,
  x: Matrix<FloatArray>,
  dy: Matrix<FloatArray>,
  grad: Float64Array,
): void {
  if (x.cols !== b.cols || dy.cols !== b.rows || x.rows !== dy.rows || grad.length !== b.rank) {
    throw new ShapeError(
      `soco gradient ${b.name}: x ${x.rows}×${x.cols}, dy ${dy.rows}×${dy.cols}, ${grad.length} scores do not fit a ${b.rows}×${b.cols} linear of ${b.rank} components`,
    );
  }
  // float32 products (the bases are float32), summed in float64
  const f32 = (
    m: Matrix<FloatArray>,
  ): Matrix => (m.data instanceof Float32Array ? m as Matrix : toFloat32(m));
  const p = matmul(f32(x), b.c, { transB: true }); // tokens×r
  const q = matmul(f32(dy), b.u); // tokens×r
  const r = b.rank;
  for (let t = 0; t < x.rows; t++) {
    for (let i = 0; i < r; i++) grad[i] += p.data[t * r + i] * q.data[t * r + i];
  }
}

/**
 * The layer's output error on inputs with mean Gram matrix `gram`, per token: tr((W − W'(s))·G·(W − W'(s))ᵀ)
 * = Σ_i (1 − s_i)²·(C·G·Cᵀ)_{ii} (UᵀU = I makes it diagonal in s). In the whitened basis with G the Gram
 * matrix it was built from (undamped), (C·G·Cᵀ)_{ii} = σ_i²: truncation loses exactly the σ tail, as in
 * SVD-LLM. Returns the per-component weights q_i = (C·G·Cᵀ)_{ii}; the error is Σ q_i (1 − s_i)².
 */
export function layerError(b: SpectralBasis, gram: Matrix64): Float64Array {
  if (gram.rows !== b.cols || gram.cols !== b.cols) {
    throw new ShapeError(`soco layer error ${b.name}: Gram ${gram.rows}×${gram.cols}, needs ${b.cols}²`);
  }
  const c = toFloat64(b.c);
  const cg = matmul64(c, gram); // r×n
  const q = new Float64Array(b.rank), n = b.cols;
  for (let i = 0; i < b.rank; i++) {
    let t = 0;
    for (let j = 0; j < n; j++) t += cg.data[i * n + j] * c.data[i * n + j];
    q[i] = t;
  }
  return q;
}
