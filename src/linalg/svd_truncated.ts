/**
 * Rank-k truncated SVD by randomized range finding (Halko, Martinsson & Tropp 2011): a Gaussian sketch,
 * power iterations with QR re-orthogonalisation after every product, then an exact float64 SVD of the small
 * projected matrix QᵀA (never eig(BBᵀ), which would square the condition number).
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import { checkFinite, gemm64 } from "./factor_kernels.ts";
import type { FloatArray, Matrix, Matrix64 } from "./matrix.ts";
import { toFloat64 } from "./matrix.ts";
import { qr } from "./qr.ts";
import { createRng, randomNormal } from "./random.ts";
import { svd, type SvdResult } from "./svd.ts";

/** Options of {@link svdTruncated}. */
export interface SvdTruncatedOptions {
  /** Extra sketch columns beyond k (default 10). */
  oversample?: number;
  /** Power iterations, each Aᵀ then A with QR in between (default 4). */
  powerIterations?: number;
  /** Seed of the Gaussian sketch (default 0): results are reproducible. */
  seed?: number;
}

/**
 * The k leading singular triplets of `a: m×n` (float32 or float64, computed in float64): U m×k, s k,
 * Vᵀ k×n. With l = k + oversample, when l ≥ min(m, n)/2 the sketch saves nothing and the exact {@link svd}
 * is computed and truncated instead. The error of a randomized result depends on the spectrum's decay:
 * with q power iterations the leading σ are exact to within ~(σ_{l+1}/σ_k)^{2q+1} relative; for flat
 * spectra raise `powerIterations` or use {@link svd}.
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
  const p = opts.oversample ?? 10, q = opts.powerIterations ?? 4;
  if (!Number.isInteger(p) || p < 0) {
    throw new OptionError(`svdTruncated: oversample must be an integer ≥ 0, got ${p}`);
  }
  if (!Number.isInteger(q) || q < 0) {
    throw new OptionError(`svdTruncated: powerIterations must be an integer ≥ 0, got ${q}`);
  }
  checkFinite(a, "svdTruncated");
  const l = Math.min(k + p, r);
  if (2 * l >= r) return truncate(svd(a), k);

  // Widen once: every product below reads A (a float32 input costs one float64 copy of it).
  const a64: Matrix64 = a.data instanceof Float64Array ? a as Matrix64 : toFloat64(a);
  const rng = createRng(opts.seed ?? 0);
  let y = gemm64(a64, randomNormal(n, l, rng)); // m×l
  let basis = qr(y).q;
  for (let it = 0; it < q; it++) {
    const z = qr(gemm64(a64, basis, { transA: true })).q; // n×l
    y = gemm64(a64, z);
    basis = qr(y).q; // m×l
  }
  const b = gemm64(basis, a64, { transA: true }); // l×n
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
