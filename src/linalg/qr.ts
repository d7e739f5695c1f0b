/**
 * Thin QR factorisation by Householder reflections (float64), plus the checks the SVD tests use:
 * orthonormality error and reconstruction U·diag(s)·Vᵀ.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { checkFinite, formBlocked, gemm64, householder, NB, Workspace } from "./factor_kernels.ts";
import type { FloatArray, Matrix, Matrix64 } from "./matrix.ts";

/** Result of {@link qr}: A = Q·R. */
export interface QrResult {
  /** m×r with orthonormal columns, r = min(m, n). */
  q: Matrix64;
  /** r×n upper triangular (upper trapezoidal when n > m). */
  r: Matrix64;
}

/**
 * Thin QR of `a: m×n` (float32 or float64, computed in float64): Q m×r, R r×n, r = min(m, n).
 * Throws NumericError on non-finite input.
 *
 * @example
 * ```ts
 * import { qr } from "./qr.ts";
 * import { matrix64 } from "./matrix.ts";
 * const { q, r } = qr(matrix64(2, 1, new Float64Array([3, 4]))); // q = ±[0.6, 0.8], r = ±[5]
 * ```
 */
export function qr(a: Matrix<FloatArray>): QrResult {
  const m = a.rows, n = a.cols, r = Math.min(m, n);
  return withReflectors(a, r * m, (ws, w, taus, scratch) => {
    const { y, tmp, t, g } = scratch;
    const qt = ws.f64(r * m);
    // Qᵀ = [I 0]·H_{r−1}·…·H_0, applied right to left; rows < k are untouched by H_k.
    for (let i = 0; i < r; i++) qt[i * m + i] = 1;
    formBlocked(ws, qt, m, r, r, 0, NB, y, tmp, t, g, taus, (k, i) => w[(k + i) * n + k], (k) => m - k);
    const qd = new Float64Array(m * r);
    for (let i = 0; i < r; i++) for (let j = 0; j < m; j++) qd[j * r + i] = qt[i * m + j];
    return { q: { rows: m, cols: r, data: qd }, r: upper(w, r, n) };
  });
}

/** The R factor of {@link qr} alone (Q is not formed: half the work). */
export function qrR(a: Matrix<FloatArray>): Matrix64 {
  return withReflectors(a, 0, (_ws, w) => upper(w, Math.min(a.rows, a.cols), a.cols));
}

/** Result of {@link qrCompact}: A = Q·R with Q kept as its Householder reflectors. */
export interface QrCompact {
  /** r×n upper triangular (r = min(m, n)). */
  r: Matrix64;
  /**
   * (Q·Y)ᵀ (k×m) for `yt` = Yᵀ (k×r): Q applied to k vectors without ever being formed (about 4·m·r·k
   * flops, against 4·m·r² to form Q and 2·m·r·k to multiply by it).
   */
  qTimesT(yt: Matrix64): Matrix64;
}

/**
 * Thin QR of `a: m×n` with Q left in compact form (the reflectors, m·n values): for callers that need Q
 * applied to a few vectors only. Same factorisation as {@link qr}. Throws NumericError on non-finite input.
 */
export function qrCompact(a: Matrix<FloatArray>): QrCompact {
  const m = a.rows, n = a.cols, r = Math.min(m, n);
  const { v, taus, rf } = withReflectors(a, 0, (_ws, w, taus) => ({
    v: Float64Array.from(w),
    taus: Float64Array.from(taus),
    rf: upper(w, r, n),
  }));
  return {
    r: rf,
    qTimesT(yt: Matrix64): Matrix64 {
      if (yt.cols !== r) throw new ShapeError(`qr: Yᵀ is ${yt.rows}×${yt.cols}, Q·Y needs ${r} columns`);
      const k = yt.rows, big = Math.max(m, n);
      const ws = new Workspace(
        m * n + k * m + 3 * big * NB + 2 * k * NB + 2 * NB * NB + Workspace.gemmScratch(),
      );
      try {
        const w = ws.f64(m * n), x = ws.f64(k * m);
        const y = ws.f64(big * NB),
          tmp = ws.f64(2 * Math.max(k, 1) * NB),
          t = ws.f64(NB * NB),
          g = ws.f64(NB * NB);
        w.set(v);
        for (let i = 0; i < k; i++) x.set(yt.data.subarray(i * r, (i + 1) * r), i * m);
        // (Q·Y)ᵀ = [Yᵀ 0]·H_{r−1}·…·H_0: every row meets every reflector.
        formBlocked(
          ws,
          x,
          m,
          k,
          r,
          0,
          NB,
          y,
          tmp,
          t,
          g,
          taus,
          (q, i) => w[(q + i) * n + q],
          (q) => m - q,
          true,
        );
        return { rows: k, cols: m, data: Float64Array.from(x) };
      } finally {
        ws.dispose();
      }
    },
  };
}

/** Block-reflector scratch of {@link withReflectors}. */
interface QrScratch {
  y: Float64Array;
  tmp: Float64Array;
  t: Float64Array;
  g: Float64Array;
}

/**
 * Householder QR of `a` in a workspace with `extra` more doubles: reflector k below the diagonal of column k
 * of `w` (v[0] = 1 implied), R on and above the diagonal, taus apart; then `use` (inside the workspace).
 */
function withReflectors<T>(
  a: Matrix<FloatArray>,
  extra: number,
  use: (ws: Workspace, w: Float64Array, taus: Float64Array, scratch: QrScratch) => T,
): T {
  checkFinite(a, "qr");
  const m = a.rows, n = a.cols, r = Math.min(m, n);
  const big = Math.max(m, n);
  const ws = new Workspace(m * n + extra + 2 * m + n + 3 * big * NB + 2 * NB * NB + Workspace.gemmScratch());
  try {
    const w = ws.f64(m * n), v = ws.f64(m), scratch = ws.f64(m + n);
    const y = ws.f64(big * NB), tmp = ws.f64(2 * big * NB), t = ws.f64(NB * NB), g = ws.f64(NB * NB);
    w.set(a.data);
    const taus = new Float64Array(r);
    const vec = (k: number, i: number) => w[(k + i) * n + k];
    // Panels of NB columns: reflectors applied one by one inside the panel (it stays in cache), then to the
    // columns right of it all at once as a block reflector (matrix products).
    for (let k0 = 0; k0 < r; k0 += NB) {
      const k1 = Math.min(r, k0 + NB);
      for (let k = k0; k < k1; k++) {
        // Reflector k zeroes column k below the diagonal; its vector stays there (v[0] = 1 implied).
        const len = m - k;
        const [tau, beta] = householder(w, k * n + k, n, len);
        v[0] = 1;
        for (let i = 1; i < len; i++) v[i] = vec(k, i);
        const c1 = k1 < n && m - k0 >= 2 * NB ? k1 : n;
        ws.reflectCols(w, n, k, len, k + 1, c1, tau, v, scratch);
        w[k * n + k] = beta;
        taus[k] = tau;
      }
      if (k1 >= n || m - k0 < 2 * NB) continue;
      const b = k1 - k0, span = m - k0;
      y.fill(0, 0, span * b);
      for (let j = 0; j < b; j++) {
        y[j * b + j] = 1;
        for (let i = 1; i < span - j; i++) y[(j + i) * b + j] = vec(k0 + j, i);
      }
      ws.blockT(y, span, b, taus.subarray(k0, k1), t, g);
      ws.applyBlockLeft(w, n, k0, span, k1, n, y, t, b, tmp);
    }
    return use(ws, w, taus, { y, tmp, t, g });
  } finally {
    ws.dispose();
  }
}

/** The upper trapezoid (rows < r) of the row-major r×n-or-taller `w` (ld n), as a new r×n matrix. */
function upper(w: Float64Array, r: number, n: number): Matrix64 {
  const rd = new Float64Array(r * n);
  for (let i = 0; i < r; i++) for (let j = i; j < n; j++) rd[i * n + j] = w[i * n + j];
  return { rows: r, cols: n, data: rd };
}

/** max |QᵀQ − I| over all entries, for `q: m×r` (0 for exactly orthonormal columns). */
export function orthonormalityError(q: Matrix<FloatArray>): number {
  const g = gemm64(q, q, { transA: true });
  let err = 0;
  for (let i = 0; i < g.rows; i++) {
    for (let j = 0; j < g.cols; j++) {
      err = Math.max(err, Math.abs(g.data[i * g.cols + j] - (i === j ? 1 : 0)));
    }
  }
  return err;
}

/** U·diag(s)·Vᵀ for `u: m×r`, `s: r`, `vt: r×n` → m×n (float64). Extra entries of s beyond r are ignored. */
export function reconstruct(u: Matrix<FloatArray>, s: ArrayLike<number>, vt: Matrix<FloatArray>): Matrix64 {
  const r = u.cols;
  if (vt.rows !== r || s.length < r) {
    throw new ShapeError(`reconstruct: u is ${u.rows}×${r}, s has ${s.length}, vt is ${vt.rows}×${vt.cols}`);
  }
  const us = Float64Array.from(u.data);
  for (let i = 0; i < u.rows; i++) for (let j = 0; j < r; j++) us[i * r + j] *= s[j];
  return gemm64({ rows: u.rows, cols: r, data: us }, vt);
}
