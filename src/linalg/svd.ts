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
import { bidiagonalQrIterate } from "./bidiag_qr.ts";
import {
  checkFinite,
  formBlocked,
  householder,
  NB,
  RotationBatch,
  rotationBatchSize,
  Workspace,
} from "./factor_kernels.ts";
import type { FloatArray, Matrix, Matrix64 } from "./matrix.ts";
import { transpose } from "./matrix.ts";
import { qrCompact, qrR } from "./qr.ts";

/** Result of {@link svd} and `svdTruncated`: A ≈ U·diag(s)·Vᵀ. */
export interface SvdResult {
  /** m×r, orthonormal columns (left singular vectors). */
  u: Matrix64;
  /** r singular values, descending, ≥ 0. */
  s: Float64Array;
  /** r×n, orthonormal rows (right singular vectors). */
  vt: Matrix64;
}

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
  const r = Math.min(a.rows, a.cols);
  const f = svdPart(a, { left: r, right: r });
  const none = new Float64Array(0);
  return {
    u: f.u ?? { rows: a.rows, cols: 0, data: none },
    s: f.s,
    vt: f.vt ?? { rows: 0, cols: a.cols, data: none },
  };
}

/** Options of {@link svdPart}: how many leading singular vectors of each side to compute. */
export interface SvdPartOptions {
  /** Leading left singular vectors (columns of U), 0 to min(m, n); default 0. */
  left?: number;
  /** Leading right singular vectors (rows of Vᵀ), 0 to min(m, n); default 0. */
  right?: number;
  /**
   * What is factored, e.g. `model.layers.3.mlp.up_proj (model.safetensors)`: prefixed to any error so that
   * a failure names the layer and the file.
   */
  label?: string;
}

/** Result of {@link svdPart}. */
export interface SvdPartResult {
  /** All r = min(m, n) singular values, descending, ≥ 0. */
  s: Float64Array;
  /** m×left: the leading left singular vectors (absent when left = 0). */
  u?: Matrix64;
  /** right×n: the leading right singular vectors (absent when right = 0). */
  vt?: Matrix64;
}

/**
 * All singular values of `a: m×n` and only the leading singular vectors asked for (see {@link svd}, same
 * algorithm and accuracy; the vectors are the same as svd's up to rounding). A side not asked for costs
 * nothing of its back-transformation (for the vectors of the short side, neither the merges' products of
 * the divide and conquer), and each side's back-transformation is applied to the vectors asked for only:
 * SVD-LLM, which needs U_k alone, does a fraction of a full SVD's work. Throws NumericError on non-finite
 * input (with `label`, its message starts with the label), RangeError on a count outside [0, min(m, n)].
 *
 * @example
 * ```ts
 * import { svdPart } from "./svd.ts";
 * import { matrix64 } from "./matrix.ts";
 * const { s, u } = svdPart(matrix64(2, 2, new Float64Array([3, 0, 0, -4])), { left: 1 }); // s = [4, 3], u = ±e₂
 * ```
 */
export function svdPart(a: Matrix<FloatArray>, opts: SvdPartOptions = {}): SvdPartResult {
  if (opts.label === undefined) return svdPartOf(a, opts);
  try {
    return svdPartOf(a, opts);
  } catch (e) {
    if (e instanceof NumericError) {
      const err = new NumericError(`${opts.label}: ${e.message}`);
      err.cause = e;
      throw err;
    }
    throw e;
  }
}

function svdPartOf(a: Matrix<FloatArray>, opts: SvdPartOptions): SvdPartResult {
  checkFinite(a, "svd");
  const r = Math.min(a.rows, a.cols), kl = opts.left ?? 0, kr = opts.right ?? 0;
  for (const [name, k] of [["left", kl], ["right", kr]] as const) {
    if (!Number.isInteger(k) || k < 0 || k > r) {
      throw new RangeError(`svd: ${name} = ${k} vectors asked of a ${a.rows}×${a.cols} matrix (0 to ${r})`);
    }
  }
  if (a.rows >= a.cols) return svdTallQr(a, kl, kr);
  // Wide: A = (Aᵀ)ᵀ = (U' S V'ᵀ)ᵀ = V' S U'ᵀ.
  const f = svdTallQr(transpose(a), kr, kl);
  return {
    s: f.s,
    ...(kl > 0 ? { u: transpose(f.vt!) } : {}),
    ...(kr > 0 ? { vt: transpose(f.u!) } : {}),
  };
}

/** m ≥ n. Clearly tall matrices are first reduced to their n×n R factor: the rotations then act on short rows. */
function svdTallQr(a: Matrix<FloatArray>, kl: number, kr: number): SvdPartResult {
  const m = a.rows, n = a.cols;
  if (m < 1.5 * n || n < 8) return svdTall(m, n, a.data, kl, kr);
  if (kl === 0) return svdTall(n, n, qrR(a).data, 0, kr); // Q is never needed
  // U = Q·U_R with Q applied to the kl columns as reflectors, never formed (m×kl work instead of m×n).
  const c = qrCompact(a);
  const r = svdTall(n, n, c.r.data, kl, kr);
  return { ...r, u: transpose(c.qTimesT(transpose(r.u!))) };
}

/**
 * SVD of a row-major m×n matrix with m ≥ n (`src` is read, not modified): all singular values, the leading
 * kl left and kr right singular vectors.
 */
function svdTall(m: number, n: number, src: FloatArray, kl: number, kr: number): SvdPartResult {
  if (n === 0) {
    return {
      s: new Float64Array(0),
      ...(kl > 0 ? { u: { rows: m, cols: 0, data: new Float64Array(0) } } : {}),
      ...(kr > 0 ? { vt: { rows: 0, cols: 0, data: new Float64Array(0) } } : {}),
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
    return svdTallIn(ws, m, n, src, capRot, capSweeps, lw, lu, lv, kl, kr);
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
  kl: number,
  kr: number,
): SvdPartResult {
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
  // With divide and conquer the order of the singular values is known before the back-transformations:
  // rows of X and Y are then the wanted vectors only, in descending order (`picked`: row q is vector
  // order[q]); with QR iteration every row takes part in the rotations, so all n are formed and picked after.
  let order: number[] | null = null;
  const rowsU = dc ? kl : kl > 0 ? n : 0, rowsV = dc ? kr : kr > 0 ? n : 0;
  if (dc) {
    const ub = ws.f64(n * n), wb = ws.f64(n * n);
    bidiagonalDc(ws, d, e, ub, wb, ws.f64(bidiagonalDcScratch(n)), kl > 0);
    order = descending(d);
    if (kl > 0) pickTransposed(ub, n, ut, lu, order, kl, n);
    if (kr > 0) pickTransposed(wb, n, vt, lv, order, kr, n);
  } else {
    for (let i = 0; i < n; i++) ut[i * lu + i] = 1;
    for (let i = 0; i < n; i++) vt[i * lv + i] = 1;
  }
  const y = ws.f64(m * NB), tmp = ws.f64(2 * m * NB), tb = ws.f64(NB * NB), g = ws.f64(NB * NB);
  // Left reflector k: coordinates k.., vector in column k of w below the diagonal.
  const leftVec = (k: number, i: number) => w[(k + i) * lw + k];
  if (rowsU > 0) formBlocked(ws, ut, lu, rowsU, n, 0, NB, y, tmp, tb, g, lt, leftVec, (k) => m - k, dc);
  // Right reflector k (k ≤ n−2): coordinates k+1.., vector in row k of w right of the superdiagonal.
  const rightVec = (k: number, i: number) => w[k * lw + k + 1 + i];
  if (rowsV > 0) {
    formBlocked(ws, vt, lv, rowsV, n - 1, 1, NB, y, tmp, tb, g, rtau, rightVec, (k) => n - k - 1, dc);
  }
  if (!dc) {
    bidiagonalQr(d, e, ws, ubatch, vbatch);
    order = descending(d);
  }

  // Signs (QR iteration leaves some d negative: their V rows flip), then descending order.
  const ord = order!;
  const s = new Float64Array(n);
  for (let q = 0; q < n; q++) s[q] = Math.abs(d[ord[q]]) * amax;
  const rowOf = (q: number) => (dc ? q : ord[q]); // row of X / Y holding the q-th vector
  const out: SvdPartResult = { s };
  if (kl > 0) {
    const u = new Float64Array(m * kl);
    transposeTiles(ut, lu, u, kl, kl, m, dc ? null : ord);
    out.u = { rows: m, cols: kl, data: u };
  }
  if (kr > 0) {
    const vto = new Float64Array(kr * n);
    for (let q = 0; q < kr; q++) {
      const src = rowOf(q);
      const row = vt.subarray(src * lv, src * lv + n);
      if (d[ord[q]] < 0) { for (let j = 0; j < n; j++) vto[q * n + j] = -row[j]; }
      else vto.set(row, q * n);
    }
    out.vt = { rows: kr, cols: n, data: vto };
  }
  return out;
}

/** Indices of d by descending |d|. */
function descending(d: Float64Array): number[] {
  return Array.from({ length: d.length }, (_, i) => i).sort((x, y) => Math.abs(d[y]) - Math.abs(d[x]));
}

/**
 * dst[q·ldd + i] = src[i·lds + order[q]] for q < count, i < ni: the columns `order[0..count)` of src as rows
 * of dst, in 32×32 tiles (see {@link transposeTiles}).
 */
function pickTransposed(
  src: Float64Array,
  lds: number,
  dst: Float64Array,
  ldd: number,
  order: number[],
  count: number,
  ni: number,
): void {
  const T = 32;
  for (let i0 = 0; i0 < ni; i0 += T) {
    const i1 = Math.min(ni, i0 + T);
    for (let q0 = 0; q0 < count; q0 += T) {
      const q1 = Math.min(count, q0 + T);
      for (let i = i0; i < i1; i++) {
        const so = i * lds;
        for (let q = q0; q < q1; q++) dst[q * ldd + i] = src[so + order[q]];
      }
    }
  }
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
 * Golub–Kahan QR ({@link bidiagonalQrIterate}) on the upper bidiagonal (d, e[0..n−2]), its rotations recorded
 * in the batches of Uᵀ and Vᵀ (flushed before a single rotation touches that matrix, and at the end).
 */
function bidiagonalQr(d: Float64Array, e: Float64Array, ws: Workspace, ub: RotationBatch, vb: RotationBatch) {
  const record = (b: RotationBatch, l: number, count: number, c: Float64Array, s: Float64Array) => {
    const o = b.reserve(count);
    b.c.set(c.subarray(0, count), o);
    b.s.set(s.subarray(0, count), o);
    b.commit(l, count);
  };
  bidiagonalQrIterate(d, e, {
    rotate(side, a, b, c, s) {
      const batch = side === "u" ? ub : vb;
      batch.flush();
      ws.rotateRows(batch.data, batch.ld, batch.len, a, b, c, s);
    },
    sweep(l, count, cv, sv, cu, su) {
      record(ub, l, count, cu, su);
      record(vb, l, count, cv, sv);
    },
  }, "svd");
  ub.flush();
  vb.flush();
}
