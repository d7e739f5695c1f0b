/**
 * Rank-k truncated SVD by randomized range finding (Halko, Martinsson & Tropp 2011): a Gaussian sketch,
 * power iterations with re-orthonormalisation after every product, then an exact float64 SVD of the small
 * projected matrix QᵀA (never eig(BBᵀ), which would square the condition number).
 *
 * Speed: the 2q + 1 products of the range finder dominate. They only have to find the dominant subspace (an
 * error δ in the basis moves the σ and the Eckart–Young error by O(δ²)), so for float32 input they run in
 * float32 SGEMM (opt-in for float64 input, `sketch`). The tall-skinny blocks are re-orthonormalised by
 * CholeskyQR (one pass between products, with a float32 Gram in the float32 path; the final basis Q is
 * brought to float64 orthonormality by a second pass), falling back to Householder QR when the Gram matrix
 * is not numerically positive definite. The projection QᵀA, whose
 * rounding reaches the σ to first order, runs in the input's precision; the small SVD and U = Q·Ũ in float64.
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
   * Element type of the range finder's products A·Ω, Aᵀ·Q, A·Z. `"auto"` (default): that of the input.
   * `"float32"` on a float64 input is ~2× faster (the last A·Z and QᵀA stay float64, so a low-rank A is
   * still recovered to ~ε) but the power iterations cannot resolve directions with σ below ~1e-6·σ₁, where
   * float32 rounding of A swamps them. `"float64"`: every product in float64.
   */
  sketch?: "auto" | "float32" | "float64";
}

/**
 * The k leading singular triplets of `a: m×n` (float32 or float64): U m×k, s k, Vᵀ k×n, all float64 with
 * U, V orthonormal to float64 precision. For float32 input (default `sketch`) the σ carry an extra error of
 * ~√m·ε₃₂·σ₁ from the float32 projection QᵀA (the order of A's own float32 rounding); the Eckart–Young
 * error is only affected to second order. With l = k + oversample, when l ≥ min(m, n)/2 the sketch saves
 * nothing and the exact {@link svd} is computed and truncated instead. The error of a randomized result
 * depends on the spectrum's decay: with q power iterations the leading σ are exact to within
 * ~(σ_{l+1}/σ_k)^{2q+1} relative; for flat spectra raise `powerIterations` or use {@link svd}.
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
  const p = opts.oversample ?? 10, q = opts.powerIterations ?? 4, sketch = opts.sketch ?? "auto";
  if (!Number.isInteger(p) || p < 0) {
    throw new OptionError(`svdTruncated: oversample must be an integer ≥ 0, got ${p}`);
  }
  if (!Number.isInteger(q) || q < 0) {
    throw new OptionError(`svdTruncated: powerIterations must be an integer ≥ 0, got ${q}`);
  }
  if (sketch !== "auto" && sketch !== "float32" && sketch !== "float64") {
    throw new OptionError(
      `svdTruncated: sketch must be "auto", "float32" or "float64", got ${String(sketch)}`,
    );
  }
  checkFinite(a, "svdTruncated");
  const l = Math.min(k + p, r);
  if (2 * l >= r) return truncate(svd(a), k);

  const f32 = sketch === "float32" || (sketch === "auto" && a.data instanceof Float32Array);
  const rng = createRng(opts.seed ?? 0);
  const omega = randomNormal(n, l, rng); // n×l
  let basis: Matrix64, b: Matrix64; // basis m×l, orthonormal to ~ε; b = basisᵀ·A l×n
  if (f32) {
    const a32: Matrix = a.data instanceof Float32Array ? a as Matrix : narrow(a);
    // A float64 input gets its last product A·Z in float64: range(A·Z) ⊆ range(A) then holds to ~ε, so a
    // low-rank A is still captured exactly (the float32 products only have to steer Z).
    const last64 = a.data instanceof Float64Array;
    // Between products the basis only has to be well conditioned: CholeskyQR with a float32 Gram.
    let y = last64 && q === 0 ? null : matmul(a32, narrow(omega)); // m×l
    let y64 = last64 && q === 0 ? gemm64(a, omega) : null;
    for (let it = 0; it < q; it++) {
      const z = orthonormalize32(matmul(a32, orthonormalize32(y!), { transA: true })); // n×l
      if (last64 && it === q - 1) y64 = gemm64(a, widen(z));
      else y = matmul(a32, z);
    }
    // A float32 pass makes Y well conditioned, so one float64 pass then orthonormalises it to ~ε.
    basis = y64 ? orthonormalize(y64, 2) : orthonormalize(widen(orthonormalize32(y!)), 1);
    // The projection is first order in its rounding, so it runs in the input's precision.
    b = last64 ? gemm64(basis, a, { transA: true }) : widen(matmul(narrow(basis), a32, { transA: true }));
  } else {
    const a64: Matrix64 = a.data instanceof Float64Array ? a as Matrix64 : widen(a);
    let y = gemm64(a64, omega);
    for (let it = 0; it < q; it++) {
      const z = gemm64(a64, orthonormalize(y, 1), { transA: true });
      y = gemm64(a64, orthonormalize(z, 1));
    }
    basis = orthonormalize(y, 2);
    b = gemm64(basis, a64, { transA: true });
  }
  const small = svd(b); // u: l×l, vt: l×n
  const res: SvdResult = { u: gemm64(basis, small.u), s: small.s, vt: small.vt };
  return truncate(res, k);
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
 * conditioned enough for one more float64 CholeskyQR pass to reach ~ε.
 */
function orthonormalize32(y: Matrix): Matrix {
  const g = widen(matmul(y, y, { transA: true })); // l×l
  try {
    const factor = cholesky(g, { damping: "none" }).factor;
    const x = matmul(y, narrow(invertLower(factor)), { transB: true });
    if (maxOffIdentity(widen(matmul(x, x, { transA: true }))) <= 0.5) return x;
  } catch (e) {
    if (!(e instanceof NumericError)) throw e;
  }
  return narrow(orthonormalize(widen(y), 2));
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
