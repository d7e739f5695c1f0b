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
  const w = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) w[i * n + j] = 0.5 * (a.data[i * n + j] + a.data[j * n + i]);
  }
  // Tridiagonalise: reflector k zeroes row/column k beyond k+1; v_k is kept in row k of w.
  const d = new Float64Array(n), e = new Float64Array(Math.max(0, n - 1)), taus = new Float64Array(n);
  const p = new Float64Array(n);
  for (let k = 0; k < n - 2; k++) {
    const o = k * n + k + 1, len = n - k - 1;
    const [tau, beta] = householder(w, o, 1, len);
    taus[k] = tau;
    d[k] = w[k * n + k];
    e[k] = beta;
    w[o] = 1;
    if (tau === 0) continue;
    // p = tau·A22·v; w2 = p − (tau/2)(pᵀv)·v; A22 −= v·w2ᵀ + w2·vᵀ.
    const s0 = k + 1;
    let pv = 0;
    for (let i = 0; i < len; i++) {
      const ri = (s0 + i) * n + s0;
      let acc = 0;
      for (let j = 0; j < len; j++) acc += w[ri + j] * w[o + j];
      p[i] = tau * acc;
      pv += p[i] * w[o + i];
    }
    const kk = 0.5 * tau * pv;
    for (let i = 0; i < len; i++) p[i] -= kk * w[o + i];
    for (let i = 0; i < len; i++) {
      const ri = (s0 + i) * n + s0, vi = w[o + i], pi = p[i];
      for (let j = 0; j < len; j++) w[ri + j] -= vi * p[j] + pi * w[o + j];
    }
  }
  if (n >= 2) {
    d[n - 2] = w[(n - 2) * n + n - 2];
    e[n - 2] = w[(n - 1) * n + n - 2];
  }
  d[n - 1] = w[(n - 1) * n + n - 1];

  // Zᵀ: rows are eigenvectors of T; rotations of QR steps act on consecutive rows.
  const capSweeps = 32, capRot = capSweeps * n;
  const bs = rotationBatchSize(capRot, capSweeps);
  const ws = new Workspace(2 * n * n + bs.f64, bs.i32);
  const zt = new Float64Array(n * n);
  try {
    const z = ws.f64(n * n), vs = ws.f64(n * n);
    for (let i = 0; i < n; i++) z[i * n + i] = 1;
    vs.set(w);
    tridiagonalQr(d, e, new RotationBatch(ws, z, n, n, n, capRot, capSweeps));
    // Vᵀ = Zᵀ·Qᵀ = Zᵀ·H_{n−3}·…·H_0.
    for (let k = n - 3; k >= 0; k--) {
      ws.reflectRows(z, n, 0, n, k + 1, n - k - 1, taus[k], vs.subarray(k * n + k + 1, (k + 1) * n));
    }
    zt.set(z);
  } finally {
    ws.dispose();
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[y] - d[x]);
  const values = new Float64Array(n), vec = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    const src = order[j];
    values[j] = d[src];
    for (let i = 0; i < n; i++) vec[i * n + j] = zt[src * n + i];
  }
  return { values, vectors: { rows: n, cols: n, data: vec } };
}

/** Implicit-shift symmetric QR on tridiagonal (d, e), rotations recorded in `batch`; d ends as eigenvalues. */
function tridiagonalQr(d: Float64Array, e: Float64Array, batch: RotationBatch): void {
  const n = d.length, cs = batch.c, sn = batch.s;
  const small = (i: number) =>
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
    const mu = d[h] - (b * b) / (delta + (delta >= 0 ? 1 : -1) * Math.hypot(delta, b));
    let x = d[l] - mu, z = e[l];
    const off = batch.reserve(h - l);
    for (let k = l; k < h; k++) {
      const r = Math.hypot(x, z);
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
