/**
 * Thin singular value decomposition A = U·diag(σ)·Vᵀ in float64 (LAPACK dgesdd's structure):
 * 1. clearly tall (m ≥ 1.5·n) or wide inputs are first reduced to their square R factor by a blocked QR;
 * 2. Householder bidiagonalisation: while more than 96 columns remain, panels of 32 (dlabrd: matrix–vector
 *    products for the panel, one rank-64 DGEMM for the trailing matrix, `bidiag_blocked.ts`), then one
 *    step at a time with one read pass and one fused update pass (`dlarf_left_w`, `dbidiag_fused`);
 * 3. the bidiagonal SVD B = Ub·Σ·Wbᵀ: from order 48 by divide and conquer (`bidiag_dc.ts`: secular
 *    equation, Löwner's z, merges by DGEMM), below by implicit-shift QR (Wilkinson shift, zero-diagonal
 *    chasing, absolute and relative deflation) whose rotations are batched (`drot_sweeps`);
 * 4. U = Q·Ub and V = P·Wb by applying the reflectors in blocks of 32 (compact WY: matrix products).
 * Backward stable: ‖A − UΣVᵀ‖ ≈ n·ε·‖A‖ and every σ is accurate to ~ε·‖A‖, whatever the condition
 * (the tests use condition 1e12, clusters and exact zeros). No squaring of A (no eigendecomposition of AᵀA).
 *
 * @module
 */
import { NumericError } from "../errors.ts";
import { bidiagBlockedScratch, bidiagonalizeBlocked } from "./bidiag_blocked.ts";
import { bidiagonalDc, bidiagonalDcScratch } from "./bidiag_dc.ts";
import {
  checkFinite,
  formBlocked,
  gemm64,
  householder,
  hypot,
  NB,
  RotationBatch,
  rotationBatchSize,
  Workspace,
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
  if (m < 1.5 * n || n < 8) return svdTall(m, n, a.data);
  const f = qr(a);
  const r = svdTall(n, n, f.r.data);
  return { u: gemm64(f.q, r.u), s: r.s, vt: r.vt };
}

/** SVD of a row-major m×n matrix with m ≥ n (`src` is read, not modified). */
function svdTall(m: number, n: number, src: FloatArray): SvdResult {
  if (n === 0) {
    return {
      u: { rows: m, cols: 0, data: new Float64Array(0) },
      s: new Float64Array(0),
      vt: { rows: 0, cols: 0, data: new Float64Array(0) },
    };
  }
  const capSweeps = 32, capRot = capSweeps * n;
  const batch = rotationBatchSize(capRot, capSweeps);
  const blockF64 = m * NB + 2 * m * NB + 2 * NB * NB + Workspace.gemmScratch();
  const lw = padLd(n), lu = padLd(m), lv = padLd(n);
  const dcF64 = (n >= DC_MIN ? 2 * n * n + bidiagonalDcScratch(n) : 0) +
    (n > BLOCKED_MIN ? bidiagBlockedScratch(m, n) : 0);
  const ws = new Workspace(
    m * lw + n * lu + n * lv + 2 * m + n + 2 * batch.f64 + blockF64 + dcF64,
    2 * batch.i32,
  );
  try {
    return svdTallIn(ws, m, n, src, capRot, capSweeps, lw, lu, lv);
  } finally {
    ws.dispose();
  }
}

/**
 * A leading dimension ≥ x whose row stride in bytes is an odd multiple of 64: rows of a power-of-two
 * width would otherwise all fall into a few cache sets when a rotation sweep walks down a column chunk.
 */
function padLd(x: number): number {
  return x < 16 ? x : x + ((24 - (x % 16)) % 16);
}

function svdTallIn(
  ws: Workspace,
  m: number,
  n: number,
  src: FloatArray,
  capRot: number,
  capSweeps: number,
  lw: number,
  lu: number,
  lv: number,
): SvdResult {
  // Scale to unit max so squares in the shift computation cannot overflow or underflow.
  let amax = 0;
  for (let i = 0; i < src.length; i++) amax = Math.max(amax, Math.abs(src[i]));
  if (amax === 0) amax = 1;
  const w = ws.f64(m * lw), ut = ws.f64(n * lu), vt = ws.f64(n * lv);
  const vbuf = ws.f64(m), wbuf = ws.f64(m + n);
  const ubatch = new RotationBatch(ws, ut, lu, m, n, capRot, capSweeps);
  const vbatch = new RotationBatch(ws, vt, lv, n, n, capRot, capSweeps);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) w[i * lw + j] = src[i * n + j] / amax;

  const d = new Float64Array(n), e = new Float64Array(n);
  const lt = new Float64Array(n), rtau = new Float64Array(n);
  // Panels of NBB with a rank-2·NBB DGEMM update while the trailing matrix is large, then one step at a time.
  const k0 = n > BLOCKED_MIN
    ? bidiagonalizeBlocked(ws, w, lw, m, n, d, e, lt, rtau, ws.f64(bidiagBlockedScratch(m, n)), BLOCKED_MIN)
    : 0;
  for (let k = k0; k < n; k++) {
    // Left reflector: zero column k below the diagonal; v stays in that column (v[0] = 1 implied).
    const len = m - k;
    const [tau, beta] = householder(w, k * lw + k, lw, len);
    vbuf[0] = 1;
    for (let i = 1; i < len; i++) vbuf[i] = w[(k + i) * lw + k];
    d[k] = beta;
    lt[k] = tau;
    if (k === n - 1) break;
    const o = k * lw + k + 1, rl = n - k - 1;
    // wbuf = tau·vᵀ·A[k.., k+1..]; row k gets its update now because the right reflector is built from it.
    ws.leftW(w, lw, k, len, k + 1, n, tau, vbuf, wbuf);
    for (let j = 0; j < rl; j++) w[o + j] -= wbuf[j];
    // Right reflector: zero row k beyond the superdiagonal; v stays in that row.
    const [t2, b2] = householder(w, o, 1, rl);
    e[k] = b2;
    rtau[k] = t2;
    // Rows below: the left update and the right reflector in one pass.
    ws.bidiagFused(w, lw, k + 1, m, k + 1, rl, vbuf.subarray(1), wbuf, t2, w.subarray(o, o + rl));
  }
  // Uᵀ (n×m) = X·[I 0]·H_{n−1}·…·H_0 and Vᵀ (n×n) = Y·G_{n−2}·…·G_0, applied right to left in blocks of NB
  // reflectors (compact WY, so the work is matrix products). With divide and conquer, B = Ub·Σ·Wbᵀ comes
  // first and X = Ubᵀ, Y = Wbᵀ; with QR iteration X = Y = I (only rows ≥ k then meet reflector k) and the
  // rotations follow.
  const dc = n >= DC_MIN;
  if (dc) {
    const ub = ws.f64(n * n), wb = ws.f64(n * n);
    bidiagonalDc(ws, d, e, ub, wb, ws.f64(bidiagonalDcScratch(n)));
    transposeTiles(ub, n, ut, lu, n, n, null);
    transposeTiles(wb, n, vt, lv, n, n, null);
  } else {
    for (let i = 0; i < n; i++) ut[i * lu + i] = 1;
    for (let i = 0; i < n; i++) vt[i * lv + i] = 1;
  }
  const y = ws.f64(m * NB), tmp = ws.f64(2 * m * NB), tb = ws.f64(NB * NB), g = ws.f64(NB * NB);
  // Left reflector k: coordinates k.., vector in column k of w below the diagonal.
  const leftVec = (k: number, i: number) => w[(k + i) * lw + k];
  formBlocked(ws, ut, lu, n, n, 0, NB, y, tmp, tb, g, lt, leftVec, (k) => m - k, dc);
  // Right reflector k (k ≤ n−2): coordinates k+1.., vector in row k of w right of the superdiagonal.
  const rightVec = (k: number, i: number) => w[k * lw + k + 1 + i];
  formBlocked(ws, vt, lv, n, n - 1, 1, NB, y, tmp, tb, g, rtau, rightVec, (k) => n - k - 1, dc);
  if (!dc) bidiagonalQr(d, e, ws, ubatch, vbatch);

  // Signs, then descending order.
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => Math.abs(d[y]) - Math.abs(d[x]));
  const s = new Float64Array(n), u = new Float64Array(m * n), vto = new Float64Array(n * n);
  transposeTiles(ut, lu, u, n, n, m, order);
  for (let q = 0; q < n; q++) {
    const src = order[q];
    s[q] = Math.abs(d[src]) * amax;
    const row = vt.subarray(src * lv, src * lv + n);
    if (d[src] < 0) { for (let j = 0; j < n; j++) vto[q * n + j] = -row[j]; }
    else vto.set(row, q * n);
  }
  return { u: { rows: m, cols: n, data: u }, s, vt: { rows: n, cols: n, data: vto } };
}

/**
 * dst[i·ldd + q] = src[rows[q]·lds + i] for q < nq, i < ni (a transpose, rows of src picked by `rows`, all
 * when null), in 32×32 tiles: a plain loop writes dst with stride ldd, one cache miss per element
 * (0.3 s for 2048², against ~20 ms tiled).
 */
function transposeTiles(
  src: Float64Array,
  lds: number,
  dst: Float64Array,
  ldd: number,
  nq: number,
  ni: number,
  rows: number[] | null,
): void {
  const T = 32;
  for (let q0 = 0; q0 < nq; q0 += T) {
    const q1 = Math.min(nq, q0 + T);
    for (let i0 = 0; i0 < ni; i0 += T) {
      const i1 = Math.min(ni, i0 + T);
      for (let q = q0; q < q1; q++) {
        const so = (rows ? rows[q] : q) * lds;
        for (let i = i0; i < i1; i++) dst[i * ldd + q] = src[so + i];
      }
    }
  }
}

/** Columns left below which the bidiagonalisation goes one reflector at a time (LAPACK's crossover is 128). */
const BLOCKED_MIN = 96;

/** From this order on, the bidiagonal SVD is divide and conquer (fewer flops, and most of them DGEMM). */
const DC_MIN = 48;

/**
 * Golub–Kahan implicit-shift QR on the upper bidiagonal (d, e[0..n−2]) until e vanishes; rotations go to
 * the rows of Uᵀ and Vᵀ through the batches. Deflation is absolute (|e_i| ≤ ε·‖B‖) or relative
 * (|e_i| ≤ ε·(|d_i| + |d_{i+1}|)): what backward stability needs, without crawling on tiny singular values.
 */
function bidiagonalQr(d: Float64Array, e: Float64Array, ws: Workspace, ub: RotationBatch, vb: RotationBatch) {
  const n = d.length, ut = ub.data, vt = vb.data, m = ub.len, lu = ub.ld, lv = vb.ld;
  let bnorm = 0;
  for (let i = 0; i < n; i++) bnorm = Math.max(bnorm, Math.abs(d[i]) + (i < n - 1 ? Math.abs(e[i]) : 0));
  const tol = EPS * bnorm;
  const smallE = (i: number) =>
    Math.abs(e[i]) <= tol || Math.abs(e[i]) <= EPS * (Math.abs(d[i]) + Math.abs(d[i + 1]));
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
      vb.flush();
      d[h] = 0;
      let f = e[h - 1];
      e[h - 1] = 0;
      for (let j = h - 1; j >= l; j--) {
        const r = hypot(d[j], f), c = r === 0 ? 1 : d[j] / r, s = r === 0 ? 0 : f / r;
        d[j] = r;
        if (j > l) {
          f = -s * e[j - 1];
          e[j - 1] *= c;
        }
        ws.rotateRows(vt, lv, n, j, h, c, s);
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
      ub.flush();
      d[zi] = 0;
      let f = e[zi];
      e[zi] = 0;
      for (let j = zi + 1; j <= h; j++) {
        const r = hypot(d[j], f), c = r === 0 ? 1 : d[j] / r, s = r === 0 ? 0 : f / r;
        d[j] = r;
        if (j < h) {
          f = -s * e[j];
          e[j] *= c;
        }
        ws.rotateRows(ut, lu, m, j, zi, c, s);
      }
      continue;
    }
    // Wilkinson shift from the trailing 2×2 of BᵀB.
    const t11 = d[h - 1] * d[h - 1] + (h - 1 > l ? e[h - 2] * e[h - 2] : 0);
    const t12 = d[h - 1] * e[h - 1];
    const t22 = d[h] * d[h] + e[h - 1] * e[h - 1];
    const delta = 0.5 * (t11 - t22);
    const den = delta + (delta >= 0 ? 1 : -1) * hypot(delta, t12);
    const mu = den === 0 ? t22 : t22 - (t12 * t12) / den;
    let y = d[l] * d[l] - mu, z = d[l] * e[l];
    const ou = ub.reserve(h - l), ov = vb.reserve(h - l);
    const cu = ub.c, su = ub.s, cv = vb.c, sv = vb.s;
    for (let k = l; k < h; k++) {
      // Right rotation on columns k, k+1.
      let r = hypot(y, z);
      let c = r === 0 ? 1 : y / r, s = r === 0 ? 0 : z / r;
      if (k > l) e[k - 1] = r;
      const dk = c * d[k] + s * e[k];
      e[k] = c * e[k] - s * d[k];
      const bulge = s * d[k + 1];
      d[k + 1] *= c;
      cv[ov + k - l] = c;
      sv[ov + k - l] = s;
      // Left rotation on rows k, k+1 to remove the bulge at (k+1, k).
      r = hypot(dk, bulge);
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
      cu[ou + k - l] = c;
      su[ou + k - l] = s;
    }
    ub.commit(l, h - l);
    vb.commit(l, h - l);
  }
  ub.flush();
  vb.flush();
}
