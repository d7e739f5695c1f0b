/**
 * Symmetric eigendecomposition A = V·diag(λ)·Vᵀ in float64: Householder tridiagonalisation, then implicit
 * symmetric QR with Wilkinson shifts on the tridiagonal, eigenvectors accumulated by plane rotations.
 *
 * @module
 */
import { NumericError } from "../errors.ts";
import {
  checkFinite,
  checkSquare,
  householder,
  hypot,
  RotationBatch,
  rotationBatchSize,
  Workspace,
} from "./factor_kernels.ts";
import type { Matrix64 } from "./matrix.ts";

/** Result of {@link eigh}. */
export interface EighResult {
  /** Eigenvalues, descending. */
  values: Float64Array;
  /** n×n orthogonal; column j is the eigenvector of values[j]. */
  vectors: Matrix64;
}

const EPS = 2.220446049250313e-16;

/**
 * Eigenvalues (descending) and orthonormal eigenvectors of a symmetric `a: n×n` (both triangles are read;
 * an asymmetric input is treated as its symmetric part (A + Aᵀ)/2). Backward stable: A·V = V·Λ to
 * ~n·ε·‖A‖. Throws NumericError on non-finite input or (never seen in practice) non-convergence.
 *
 * @example
 * ```ts
 * import { eigh } from "./eigh.ts";
 * import { matrix64 } from "./matrix.ts";
 * const { values } = eigh(matrix64(2, 2, new Float64Array([2, 1, 1, 2]))); // [3, 1]
 * ```
 */
export function eigh(a: Matrix64): EighResult {
  checkSquare(a, "eigh");
  checkFinite(a, "eigh");
  const n = a.rows;
  if (n === 0) {
    return { values: new Float64Array(0), vectors: { rows: 0, cols: 0, data: new Float64Array(0) } };
  }
  const capSweeps = 32, capRot = capSweeps * n;
  const bs = rotationBatchSize(capRot, capSweeps);
  const ws = new Workspace(2 * n * n + n + bs.f64, bs.i32);
  const d = new Float64Array(n), e = new Float64Array(Math.max(0, n - 1)), taus = new Float64Array(n);
  const zt = new Float64Array(n * n);
  let amax = 0;
  for (let i = 0; i < n * n; i++) amax = Math.max(amax, Math.abs(a.data[i]));
  const scale = amax > 1e150 || (amax > 0 && amax < 1e-150) ? 1 / amax : 1;
  try {
    const w = ws.f64(n * n), p = ws.f64(n), z = ws.f64(n * n);
    // Scale to max |a_ij| = 1 when the entries are huge or tiny (LAPACK dsyev does the same): the QR
    // iteration squares off-diagonals for its shifts, which overflow from ~1e154 and underflow below ~1e-154.
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        w[i * n + j] = 0.5 * (a.data[i * n + j] * scale + a.data[j * n + i] * scale);
      }
    }
    // Tridiagonalise: reflector k zeroes row/column k beyond k+1; v_k is kept in row k of w (v[0] = 1 stored).
    for (let k = 0; k < n - 2; k++) {
      const o = k * n + k + 1, len = n - k - 1, s0 = k + 1;
      const [tau, beta] = householder(w, o, 1, len);
      taus[k] = tau;
      d[k] = w[k * n + k];
      e[k] = beta;
      w[o] = 1;
      if (tau === 0) continue;
      const v = w.subarray(o, o + len);
      // p = tau·A22·v (= tau·(vᵀ·A22)ᵀ, A22 symmetric); p −= (tau/2)(pᵀv)·v; A22 −= v·pᵀ + p·vᵀ.
      ws.leftW(w, n, s0, len, s0, n, tau, v, p);
      let pv = 0;
      for (let i = 0; i < len; i++) pv += p[i] * v[i];
      const kk = 0.5 * tau * pv;
      for (let i = 0; i < len; i++) p[i] -= kk * v[i];
      // Two rank-1 passes (the fused kernel with no right reflector).
      ws.bidiagFused(w, n, s0, n, s0, len, v, p, 0, p);
      ws.bidiagFused(w, n, s0, n, s0, len, p, v, 0, p);
    }
    if (n >= 2) {
      d[n - 2] = w[(n - 2) * n + n - 2];
      e[n - 2] = w[(n - 1) * n + n - 2];
    }
    d[n - 1] = w[(n - 1) * n + n - 1];

    // Zᵀ: rows are eigenvectors of T; rotations of QR steps act on consecutive rows.
    for (let i = 0; i < n; i++) z[i * n + i] = 1;
    tridiagonalQr(d, e, new RotationBatch(ws, z, n, n, n, capRot, capSweeps));
    // Vᵀ = Zᵀ·Qᵀ = Zᵀ·H_{n−3}·…·H_0.
    for (let k = n - 3; k >= 0; k--) {
      ws.reflectRows(z, n, 0, n, k + 1, n - k - 1, taus[k], w.subarray(k * n + k + 1, (k + 1) * n));
    }
    zt.set(z);
  } finally {
    ws.dispose();
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[y] - d[x]);
  const values = new Float64Array(n), vec = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    const src = order[j];
    values[j] = d[src] / scale;
    for (let i = 0; i < n; i++) vec[i * n + j] = zt[src * n + i];
  }
  return { values, vectors: { rows: n, cols: n, data: vec } };
}

/** Implicit-shift symmetric QR on tridiagonal (d, e), rotations recorded in `batch`; d ends as eigenvalues. */
function tridiagonalQr(d: Float64Array, e: Float64Array, batch: RotationBatch): void {
  const n = d.length, cs = batch.c, sn = batch.s;
  let tnorm = 0;
  for (let i = 0; i < n; i++) tnorm = Math.max(tnorm, Math.abs(d[i]) + (i < n - 1 ? 2 * Math.abs(e[i]) : 0));
  // Relative deflation keeps small eigenvalues accurate; the absolute floor ε·‖T‖ (normwise backward
  // stability) stops the iteration crawling on clusters near zero.
  const small = (i: number) =>
    Math.abs(e[i]) <= EPS * tnorm ||
    Math.abs(e[i]) <= EPS * (Math.abs(d[i]) + Math.abs(d[i + 1])) || Math.abs(e[i]) < 1e-300;
  let iter = 0;
  const maxIter = 30 * n + 30;
  let h = n - 1;
  while (h > 0) {
    if (small(h - 1)) {
      e[h - 1] = 0;
      h--;
      continue;
    }
    let l = h - 1;
    while (l > 0 && !small(l - 1)) l--;
    if (++iter > maxIter) {
      throw new NumericError(`eigh: QR iteration did not converge for a ${n}×${n} matrix`);
    }
    // Wilkinson shift from the trailing 2×2.
    const b = e[h - 1];
    const delta = 0.5 * (d[h - 1] - d[h]);
    const mu = d[h] - (b * b) / (delta + (delta >= 0 ? 1 : -1) * hypot(delta, b));
    let x = d[l] - mu, z = e[l];
    const off = batch.reserve(h - l);
    for (let k = l; k < h; k++) {
      const r = hypot(x, z);
      const c = r === 0 ? 1 : x / r, s = r === 0 ? 0 : z / r;
      if (k > l) e[k - 1] = r;
      const ak = d[k], ak1 = d[k + 1], bk = e[k];
      d[k] = c * c * ak + 2 * c * s * bk + s * s * ak1;
      d[k + 1] = s * s * ak - 2 * c * s * bk + c * c * ak1;
      e[k] = c * s * (ak1 - ak) + (c * c - s * s) * bk;
      if (k < h - 1) {
        z = s * e[k + 1];
        e[k + 1] *= c;
        x = e[k];
      }
      cs[off + k - l] = c;
      sn[off + k - l] = s;
    }
    batch.commit(l, h - l);
  }
  batch.flush();
}
