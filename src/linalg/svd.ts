/**
 * Thin singular value decomposition A = U·diag(σ)·Vᵀ in float64: Householder bidiagonalisation, then the
 * implicit-shift Golub–Kahan QR iteration on the bidiagonal (with zero-diagonal chasing), singular vectors
 * accumulated by plane rotations. Backward stable: every σ is accurate to ~ε·‖A‖ whatever the condition.
 *
 * @module
 */
import { NumericError } from "../errors.ts";
import {
  checkFinite,
  gemm64,
  householder,
  reflectCols,
  reflectRows,
  rotateRows,
  rotateRowsSeq,
} from "./factor_kernels.ts";
import type { FloatArray, Matrix, Matrix64 } from "./matrix.ts";
import { transpose } from "./matrix.ts";
import { qr } from "./qr.ts";

/** Result of {@link svd} and `svdTruncated`: A ≈ U·diag(s)·Vᵀ. */
export interface SvdResult {
  /** m×r, orthonormal columns (left singular vectors). */
  u: Matrix64;
  /** r singular values, descending, ≥ 0. */
  s: Float64Array;
  /** r×n, orthonormal rows (right singular vectors). */
  vt: Matrix64;
}

const EPS = 2.220446049250313e-16;

/**
 * Thin SVD of `a: m×n` (float32 or float64; computed in float64): U m×r, s r, Vᵀ r×n with r = min(m, n).
 * Throws NumericError on non-finite input.
 *
 * @example
 * ```ts
 * import { svd } from "./svd.ts";
 * import { matrix64 } from "./matrix.ts";
 * const { s } = svd(matrix64(2, 2, new Float64Array([3, 0, 0, -4]))); // [4, 3]
 * ```
 */
export function svd(a: Matrix<FloatArray>): SvdResult {
  checkFinite(a, "svd");
  if (a.rows >= a.cols) return svdTallQr(a);
  // Wide: A = (Aᵀ)ᵀ = (U' S V'ᵀ)ᵀ = V' S U'ᵀ.
  const r = svdTallQr(transpose(a));
  return { u: transpose(r.vt), s: r.s, vt: transpose(r.u) };
}

/** m ≥ n. Clearly tall matrices are first reduced to their n×n R factor: the rotations then act on short rows. */
function svdTallQr(a: Matrix<FloatArray>): SvdResult {
  const m = a.rows, n = a.cols;
  if (m < 1.5 * n || n < 8) return svdTall(m, n, Float64Array.from(a.data));
  const f = qr(a);
  const r = svdTall(n, n, f.r.data);
  return { u: gemm64(f.q, r.u), s: r.s, vt: r.vt };
}

/** SVD of a row-major m×n matrix with m ≥ n; `w` is overwritten. */
function svdTall(m: number, n: number, w: Float64Array): SvdResult {
  if (n === 0) {
    return {
      u: { rows: m, cols: 0, data: new Float64Array(0) },
      s: new Float64Array(0),
      vt: { rows: 0, cols: 0, data: new Float64Array(0) },
    };
  }
  // Scale to unit max so squares in the shift computation cannot overflow or underflow.
  let amax = 0;
  for (let i = 0; i < w.length; i++) amax = Math.max(amax, Math.abs(w[i]));
  if (amax === 0) amax = 1;
  for (let i = 0; i < w.length; i++) w[i] /= amax;

  const d = new Float64Array(n), e = new Float64Array(n);
  const lv: Float64Array[] = [], lt = new Float64Array(n);
  const rv: Float64Array[] = [], rtau = new Float64Array(n);
  const scratch = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    // Left reflector: zero column k below the diagonal.
    const len = m - k;
    const v = new Float64Array(len);
    for (let i = 0; i < len; i++) v[i] = w[(k + i) * n + k];
    const [tau, beta] = householder(v, 0, 1, len);
    reflectCols(w, n, k, len, k + 1, n, tau, v, scratch);
    d[k] = beta;
    lv.push(v);
    lt[k] = tau;
    if (k < n - 1) {
      // Right reflector: zero row k beyond the superdiagonal.
      const o = k * n + k + 1, rl = n - k - 1;
      const [t2, b2] = householder(w, o, 1, rl);
      e[k] = b2;
      const vr = w.slice(o, o + rl);
      rv.push(vr);
      rtau[k] = t2;
      reflectRows(w, n, k + 1, m, k + 1, rl, t2, vr);
    }
  }
  // Uᵀ (n×m) = [I 0]·H_{n−1}·…·H_0 and Vᵀ (n×n) = G_{n−2}·…·G_0, built right to left.
  const ut = new Float64Array(n * m);
  for (let i = 0; i < n; i++) ut[i * m + i] = 1;
  for (let k = n - 1; k >= 0; k--) reflectRows(ut, m, k, n, k, m - k, lt[k], lv[k]);
  const vt = new Float64Array(n * n);
  for (let i = 0; i < n; i++) vt[i * n + i] = 1;
  for (let k = n - 2; k >= 0; k--) reflectRows(vt, n, k + 1, n, k + 1, n - k - 1, rtau[k], rv[k]);

  bidiagonalQr(d, e, ut, m, vt, n);

  // Signs, then descending order.
  for (let i = 0; i < n; i++) {
    if (d[i] < 0) {
      d[i] = -d[i];
      for (let j = 0; j < n; j++) vt[i * n + j] = -vt[i * n + j];
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[y] - d[x]);
  const s = new Float64Array(n), u = new Float64Array(m * n), vto = new Float64Array(n * n);
  for (let q = 0; q < n; q++) {
    const src = order[q];
    s[q] = d[src] * amax;
    for (let i = 0; i < m; i++) u[i * n + q] = ut[src * m + i];
    vto.set(vt.subarray(src * n, src * n + n), q * n);
  }
  return { u: { rows: m, cols: n, data: u }, s, vt: { rows: n, cols: n, data: vto } };
}

/**
 * Golub–Kahan implicit-shift QR on the upper bidiagonal (d, e[0..n−2]) until e vanishes; rotations are
 * applied to rows of `ut` (n×m) and `vt` (n×n). Deflation is absolute (|e_i| ≤ ε·‖B‖), which is what
 * backward stability needs and avoids crawling on tiny singular values.
 */
export function bidiagonalQr(
  d: Float64Array,
  e: Float64Array,
  ut: Float64Array,
  m: number,
  vt: Float64Array,
  n: number,
) {
  let bnorm = 0;
  for (let i = 0; i < n; i++) bnorm = Math.max(bnorm, Math.abs(d[i]) + (i < n - 1 ? Math.abs(e[i]) : 0));
  const tol = EPS * bnorm;
  const smallE = (i: number) =>
    Math.abs(e[i]) <= tol || Math.abs(e[i]) <= EPS * (Math.abs(d[i]) + Math.abs(d[i + 1]));
  const cu = new Float64Array(n),
    su = new Float64Array(n),
    cv = new Float64Array(n),
    sv = new Float64Array(n);
  let iter = 0;
  const maxIter = 40 * n + 40;
  let h = n - 1;
  while (h > 0) {
    if (smallE(h - 1)) {
      e[h - 1] = 0;
      h--;
      continue;
    }
    let l = h - 1;
    while (l > 0 && !smallE(l - 1)) l--;
    if (++iter > maxIter) throw new NumericError(`svd: bidiagonal QR did not converge (n = ${n})`);
    if (Math.abs(d[h]) <= tol) {
      // Zero at the bottom of the block: chase e[h−1] up column h with right rotations.
      d[h] = 0;
      let f = e[h - 1];
      e[h - 1] = 0;
      for (let j = h - 1; j >= l; j--) {
        const r = Math.hypot(d[j], f), c = d[j] / r, s = f / r;
        d[j] = r;
        if (j > l) {
          f = -s * e[j - 1];
          e[j - 1] *= c;
        }
        rotateRows(vt, n, n, j, h, c, s);
      }
      continue;
    }
    let zi = -1;
    for (let i = h - 1; i >= l; i--) {
      if (Math.abs(d[i]) <= tol) {
        zi = i;
        break;
      }
    }
    if (zi >= 0) {
      // Zero on the diagonal inside the block: chase e[zi] along row zi with left rotations.
      d[zi] = 0;
      let f = e[zi];
      e[zi] = 0;
      for (let j = zi + 1; j <= h; j++) {
        const r = Math.hypot(d[j], f), c = d[j] / r, s = f / r;
        d[j] = r;
        if (j < h) {
          f = -s * e[j];
          e[j] *= c;
        }
        rotateRows(ut, m, m, j, zi, c, s);
      }
      continue;
    }
    // Wilkinson shift from the trailing 2×2 of BᵀB.
    const t11 = d[h - 1] * d[h - 1] + (h - 1 > l ? e[h - 2] * e[h - 2] : 0);
    const t12 = d[h - 1] * e[h - 1];
    const t22 = d[h] * d[h] + e[h - 1] * e[h - 1];
    const delta = 0.5 * (t11 - t22);
    const den = delta + (delta >= 0 ? 1 : -1) * Math.hypot(delta, t12);
    const mu = den === 0 ? t22 : t22 - (t12 * t12) / den;
    let y = d[l] * d[l] - mu, z = d[l] * e[l];
    for (let k = l; k < h; k++) {
      // Right rotation on columns k, k+1.
      let r = Math.hypot(y, z);
      let c = r === 0 ? 1 : y / r, s = r === 0 ? 0 : z / r;
      if (k > l) e[k - 1] = r;
      const dk = c * d[k] + s * e[k];
      e[k] = c * e[k] - s * d[k];
      const bulge = s * d[k + 1];
      d[k + 1] *= c;
      cv[k - l] = c;
      sv[k - l] = s;
      // Left rotation on rows k, k+1 to remove the bulge at (k+1, k).
      r = Math.hypot(dk, bulge);
      c = r === 0 ? 1 : dk / r;
      s = r === 0 ? 0 : bulge / r;
      d[k] = r;
      const ek = c * e[k] + s * d[k + 1];
      d[k + 1] = c * d[k + 1] - s * e[k];
      e[k] = ek;
      if (k < h - 1) {
        z = s * e[k + 1];
        e[k + 1] *= c;
        y = e[k];
      }
      cu[k - l] = c;
      su[k - l] = s;
    }
    rotateRowsSeq(vt, n, n, l, cv, sv, h - l);
    rotateRowsSeq(ut, m, m, l, cu, su, h - l);
  }
}
