/**
 * Rank-k truncated SVD by randomized range finding (Halko, Martinsson & Tropp 2011): a Gaussian sketch,
 * power iterations with re-orthonormalisation after every product, then an exact float64 SVD of the small
 * projected matrix QᵀA (never eig(BBᵀ), which would square the condition number).
 *
 * Speed: the 2q + 2 products with A dominate (for 4096², l = 266: 10 × 8.9 GFLOP). A is converted once to
 * the working precision and kept in wasm memory across all of them ({@link ResidentMatrix}: no copy of A
 * per product). In the default `precision: "f32"` every product with A is a float32 SGEMM, about twice as
 * fast as DGEMM: the range finder only has to find the dominant subspace (an error δ in the basis moves the
 * σ and the Eckart–Young error by O(δ²)), and the projection QᵀA in float32 moves the σ by ~√n·ε₃₂·σ₁
 * (A's own float32 rounding is of that order). The thin n×l blocks are re-orthonormalised between products
 * by CholeskyQR with a float32 Gram (SGEMM) and an l×l float64 Cholesky factor, falling back to Householder
 * QR in float64 when the Gram matrix is not numerically positive definite; the final basis Q is brought to
 * float64 orthonormality by one more float64 CholeskyQR pass. The small SVD and U = Q·Ũ run in float64.
 * `precision: "f64"` runs the same steps with DGEMM and float64 CholeskyQR throughout.
 *
 * @module
 */
import { NumericError, OptionError } from "../errors.ts";
import { cholesky } from "./cholesky.ts";
import { checkFinite, gemm64 } from "./factor_kernels.ts";
import { matmul } from "./gemm.ts";
import type { FloatArray, Matrix, Matrix64 } from "./matrix.ts";
import { qr } from "./qr.ts";
import { createRng, randomNormal } from "./random.ts";
import { ResidentMatrix } from "./resident.ts";
import { svd, type SvdResult } from "./svd.ts";

/** Options of {@link svdTruncated}. */
export interface SvdTruncatedOptions {
  /** Extra sketch columns beyond k (default 10). */
  oversample?: number;
  /** Power iterations, each Aᵀ then A with re-orthonormalisation in between (default 4). */
  powerIterations?: number;
  /** Seed of the Gaussian sketch (default 0): results are reproducible. */
  seed?: number;
  /**
   * Element type of every product with A (range finder, power iterations, projection QᵀA), whatever the
   * input's type. `"f32"` (default): SGEMM, ~2× faster; the σ carry an extra error of ~√n·ε₃₂·σ₁ (~1e-6
   * relative for the leading ones), directions with σ below ~1e-6·σ₁ are not resolved, and the Eckart–Young
   * error is affected only to second order. `"f64"`: DGEMM throughout, σ to ~ε·σ₁ and a low-rank float64
   * A recovered exactly. The small SVD and the singular vectors are float64 either way.
   */
  precision?: "f32" | "f64";
}

/**
 * The k leading singular triplets of `a: m×n` (float32 or float64): U m×k, s k, Vᵀ k×n, all float64 with
 * U, V orthonormal to float64 precision. See {@link SvdTruncatedOptions.precision} for the accuracy of the
 * default float32 products. With l = k + oversample, when l ≥ min(m, n)/2 the sketch saves nothing and the
 * exact {@link svd} is computed and truncated instead. The error of a randomized result depends on the
 * spectrum's decay: with q power iterations the leading σ are exact to within ~(σ_{l+1}/σ_k)^{2q+1}
 * relative; for flat spectra raise `powerIterations` or use {@link svd}.
 * Throws OptionError on a bad k or option, NumericError on non-finite input.
 *
 * @example
 * ```ts
 * import { svdTruncated } from "./svd_truncated.ts";
 * import { matrix64 } from "./matrix.ts";
 * const { s } = svdTruncated(matrix64(2, 2, new Float64Array([3, 0, 0, -4])), 1); // [4]
 * ```
 */
export function svdTruncated(a: Matrix<FloatArray>, k: number, opts: SvdTruncatedOptions = {}): SvdResult {
  const m = a.rows, n = a.cols, r = Math.min(m, n);
  if (!Number.isInteger(k) || k < 0 || k > r) {
    throw new OptionError(
      `svdTruncated: rank k must be an integer in [0, ${r}] for a ${m}×${n} matrix, got ${k}`,
    );
  }
  const p = opts.oversample ?? 10, q = opts.powerIterations ?? 4, precision = opts.precision ?? "f32";
  if (!Number.isInteger(p) || p < 0) {
    throw new OptionError(`svdTruncated: oversample must be an integer ≥ 0, got ${p}`);
  }
  if (!Number.isInteger(q) || q < 0) {
    throw new OptionError(`svdTruncated: powerIterations must be an integer ≥ 0, got ${q}`);
  }
  if (precision !== "f32" && precision !== "f64") {
    throw new OptionError(`svdTruncated: precision must be "f32" or "f64", got ${String(precision)}`);
  }
  checkFinite(a, "svdTruncated");
  const l = Math.min(k + p, r);
  if (2 * l >= r) return truncate(svd(a), k);

  const omega = randomNormal(n, l, createRng(opts.seed ?? 0)); // n×l
  let basis: Matrix64, bt: Matrix64; // basis m×l, orthonormal to ~ε; bt = Aᵀ·basis = (basisᵀA)ᵀ n×l
  if (precision === "f32") {
    const res = new ResidentMatrix(a, "f32");
    try {
      let y = res.mul(narrow(omega)); // m×l
      // `since`: products with A since the last orthonormal basis; `growth`: the condition number one
      // product was seen to add (from the last orthonormalisation's Cholesky diagonal).
      let since = 1, growth = Infinity;
      const ortho = (x: Matrix): Matrix => {
        const o = orthonormalize32(x, false);
        growth = o.ratio ** (1 / since);
        since = 0;
        return o.q;
      };
      for (let it = 0; it < q; it++) {
        // Re-orthonormalising between Aᵀ and A changes the basis, not the span: it only guards against
        // rounding. When one product spreads the condition by ≤ SKIP_GROWTH, two in a row stay within the
        // reach of the float32 CholeskyQR after them, so Y's pass is skipped (flat spectra over the sketch).
        const yb = growth <= SKIP_GROWTH ? y : ortho(y);
        since++;
        const z = ortho(res.mul(yb, true));
        y = res.mul(z);
        since++;
      }
      // A float32 pass makes Y well conditioned, so one float64 pass then orthonormalises it to ~ε.
      basis = orthonormalize(widen(orthonormalize32(y, true).q), 1);
      bt = widen(res.mul(narrow(basis), true));
    } finally {
      res.dispose();
    }
  } else {
    const res = new ResidentMatrix(a, "f64");
    try {
      let y = res.mul(omega);
      for (let it = 0; it < q; it++) y = res.mul(orthonormalize(res.mul(orthonormalize(y, 1), true), 1));
      basis = orthonormalize(y, 2);
      bt = res.mul(basis, true);
    } finally {
      res.dispose();
    }
  }
  // Bᵀ = U'·S·V'ᵀ (tall: its SVD starts with a QR), so B = V'·S·U'ᵀ and A ≈ (Q·V')·S·U'ᵀ.
  const small = svd(bt); // u: n×l, vt: l×l
  const vk: Matrix64 = { rows: k, cols: l, data: small.vt.data.slice(0, k * l) }; // first k columns of V'
  const vt = new Float64Array(k * n);
  for (let j = 0; j < n; j++) for (let i = 0; i < k; i++) vt[i * n + j] = small.u.data[j * l + i];
  return {
    u: gemm64(basis, vk, { transB: true }),
    s: small.s.slice(0, k),
    vt: { rows: k, cols: n, data: vt },
  };
}

/** The first k triplets of an SVD. */
export function truncate(res: SvdResult, k: number): SvdResult {
  const { u, s, vt } = res;
  if (k === s.length) return res;
  const m = u.rows, r = u.cols;
  const ud = new Float64Array(m * k);
  for (let i = 0; i < m; i++) ud.set(u.data.subarray(i * r, i * r + k), i * k);
  const vtk: Matrix64 = { rows: k, cols: vt.cols, data: vt.data.slice(0, k * vt.cols) };
  return { u: { rows: m, cols: k, data: ud }, s: s.slice(0, k), vt: vtk };
}

/**
 * An orthonormal basis of the columns of `y: n×l` (n ≥ l) by CholeskyQR with `passes` passes (1: a basis
 * good enough to multiply by A again, orthonormal to ~κ(Y)²·ε; 2: orthonormal to ~ε when κ(Y)²·ε ≲ 1).
 * Falls back to Householder QR when the Gram matrix is numerically singular (rank-deficient or
 * ill-conditioned Y) or the first pass left Q too far from orthonormal for the second to repair.
 * Used by {@link svdTruncated}; exported for its tests.
 */
export function orthonormalize(y: Matrix64, passes: number): Matrix64 {
  let x = y;
  for (let pass = 0; pass < passes; pass++) {
    const g = gemm64(x, x, { transA: true }); // l×l
    if (pass > 0 && maxOffIdentity(g) > 0.5) return qr(x).q;
    let factor: Matrix64;
    try {
      factor = cholesky(g, { damping: "none" }).factor; // G = L·Lᵀ, so Y = (Y·L⁻ᵀ)·Lᵀ
    } catch (e) {
      if (e instanceof NumericError) return qr(x).q;
      throw e;
    }
    x = gemm64(x, invertLower(factor), { transB: true });
  }
  return x;
}

/**
 * A well-conditioned float32 basis of the columns of `y: n×l` (float32), for the next product of the range
 * finder: CholeskyQR with the Gram matrix by SGEMM (float32 accumulation, so only good to ~√n·ε₃₂ relative)
 * and its factor in float64. The result is checked (its own Gram must be within 0.5 of I) and replaced by
 * the two-pass float64 {@link orthonormalize} when Y is too ill-conditioned for that, so it is always well
 * conditioned enough for one more float64 CholeskyQR pass to reach ~ε. Between products (`always` false)
 * the check, a third SGEMM, is skipped when the factor's diagonal spans at most {@link TRUST_RATIO}: that
 * ratio is a lower bound on κ(L) = κ(Y), so a Y worse conditioned than it shows could slip through, but a
 * less orthonormal basis between products only slows the power iteration; the final basis is always checked.
 * Returns the basis and that diagonal ratio (∞ when the float64 fallback ran).
 */
function orthonormalize32(y: Matrix, always: boolean): { q: Matrix; ratio: number } {
  const g = widen(matmul(y, y, { transA: true })); // l×l
  try {
    const factor = cholesky(g, { damping: "none" }).factor;
    const x = matmul(y, narrow(invertLower(factor)), { transB: true });
    const ratio = diagonalRatio(factor);
    if (!always && ratio <= TRUST_RATIO) return { q: x, ratio };
    if (maxOffIdentity(widen(matmul(x, x, { transA: true }))) <= 0.5) return { q: x, ratio };
  } catch (e) {
    if (!(e instanceof NumericError)) throw e;
  }
  return { q: narrow(orthonormalize(widen(y), 2)), ratio: Infinity };
}

/**
 * Largest ratio of diagonal entries of the Cholesky factor (a lower bound on its condition number) up to
 * which {@link orthonormalize32} trusts its result unchecked. The float32 Gram of n-long columns carries a
 * relative error ~√n·ε₃₂ (≤ 1e-5 for n ≤ 30 000), amplified by κ² ≤ 1e4 into QᵀQ − I.
 */
const TRUST_RATIO = 100;

/**
 * {@link svdTruncated} skips the orthonormalisation between Aᵀ and A when one product was seen to spread
 * the basis' condition number by at most this: two products then leave κ ≤ 100 = {@link TRUST_RATIO}.
 */
const SKIP_GROWTH = 10;

/** max |L_ii| / min |L_ii| of a square lower-triangular `lm` (∞ for a zero diagonal entry). */
function diagonalRatio(lm: Matrix64): number {
  const n = lm.rows;
  let lo = Infinity, hi = 0;
  for (let i = 0; i < n; i++) {
    const v = Math.abs(lm.data[i * n + i]);
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return n === 0 ? 1 : hi / lo;
}

/** max |G − I| over all entries. */
function maxOffIdentity(g: Matrix64): number {
  const l = g.rows;
  let err = 0;
  for (let i = 0; i < l; i++) {
    for (let j = 0; j < l; j++) err = Math.max(err, Math.abs(g.data[i * l + j] - (i === j ? 1 : 0)));
  }
  return err;
}

/** L⁻¹ of a lower-triangular `lm: n×n` with non-zero diagonal (lower triangular, by forward substitution). */
function invertLower(lm: Matrix64): Matrix64 {
  const n = lm.rows, L = lm.data, inv = new Float64Array(n * n);
  // Column j of L⁻¹ solves L·x = e_j; x_i = 0 for i < j.
  for (let j = 0; j < n; j++) {
    inv[j * n + j] = 1 / L[j * n + j];
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      const li = i * n;
      for (let t = j; t < i; t++) s += L[li + t] * inv[t * n + j];
      inv[li + j] = -s / L[li + i];
    }
  }
  return { rows: n, cols: n, data: inv };
}

function widen(x: Matrix<FloatArray>): Matrix64 {
  return { rows: x.rows, cols: x.cols, data: new Float64Array(x.data) };
}

function narrow(x: Matrix<FloatArray>): Matrix {
  return { rows: x.rows, cols: x.cols, data: new Float32Array(x.data) };
}
