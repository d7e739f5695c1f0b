/**
 * Blocked Householder bidiagonalisation (LAPACK dgebrd/dlabrd), internal to `svd.ts`: the reflectors of a
 * panel of NBB columns and rows are built with matrix–vector products that read the trailing matrix (two
 * read-only passes per step instead of a read and a read-write pass), and the trailing matrix is updated
 * once per panel by one DGEMM of rank 2·NBB: A ← A − [U X]·[Yᵀ; V].
 *
 * @module
 */
import { householder, type Workspace } from "./factor_kernels.ts";

/** Panel width. */
export const NBB = 32;

/** Doubles of scratch {@link bidiagonalizeBlocked} needs for an m×n matrix. */
export function bidiagBlockedScratch(m: number, n: number): number {
  return NBB * (m + n) + 2 * NBB * (m + n) + 3 * (m + n) + 4 * NBB + 64;
}

/**
 * Bidiagonalise the leading panels of `w` (m×n, m ≥ n, leading dimension lw) while more than `minLeft`
 * columns remain; returns the first column not done (the caller finishes unblocked). Same storage as the
 * unblocked loop: left reflector k below the diagonal in column k (tau in lt[k]), right reflector k right of
 * the superdiagonal in row k (tau in rt[k]), d and e the bidiagonal.
 */
export function bidiagonalizeBlocked(
  ws: Workspace,
  w: Float64Array,
  lw: number,
  m: number,
  n: number,
  d: Float64Array,
  e: Float64Array,
  lt: Float64Array,
  rt: Float64Array,
  scratch: Float64Array,
  minLeft: number,
): number {
  const nb = NBB;
  let o = 0;
  const take = (len: number) => {
    const v = scratch.subarray(o, o + len);
    o += len + ((8 - (len % 8)) % 8);
    return v;
  };
  const X = take(m * nb), Y = take(n * nb), Z1 = take(2 * nb * m), Z2 = take(2 * nb * n);
  const u = take(m),
    tv = take(Math.max(m, n)),
    tx = take(Math.max(m, n)),
    s1 = take(2 * nb),
    s2 = take(2 * nb);
  let k0 = 0;
  for (; n - k0 > minLeft; k0 += nb) {
    X.fill(0);
    Y.fill(0);
    for (let i = 0; i < nb; i++) {
      const k = k0 + i, cl = m - k, rl = n - k - 1;
      // Column k brought up to date with the panel's earlier reflectors.
      if (i > 0) {
        ws.gemv(false, cl, i, 1, w, k * lw + k0, lw, Y, k * nb, 0, tv, 0);
        for (let j = 0; j < i; j++) s1[j] = w[(k0 + j) * lw + k];
        ws.gemv(false, cl, i, 1, X, k * nb, nb, s1, 0, 1, tv, 0);
        for (let r = 0; r < cl; r++) w[(k + r) * lw + k] -= tv[r];
      }
      const [tq, bq] = householder(w, k * lw + k, lw, cl);
      d[k] = bq;
      lt[k] = tq;
      w[k * lw + k] = 1;
      u[0] = 1;
      for (let r = 1; r < cl; r++) u[r] = w[(k + r) * lw + k];
      // Y[k+1.., i] = tq·(Aᵀu − Y·(Uᵀu) − Vᵀ·(Xᵀu)) over the trailing columns.
      ws.gemv(true, cl, rl, 1, w, k * lw + k + 1, lw, u, 0, 0, tv, 0);
      if (i > 0) {
        ws.gemv(true, cl, i, 1, w, k * lw + k0, lw, u, 0, 0, s1, 0);
        ws.gemv(false, rl, i, -1, Y, (k + 1) * nb, nb, s1, 0, 1, tv, 0);
        ws.gemv(true, cl, i, 1, X, k * nb, nb, u, 0, 0, s2, 0);
        ws.gemv(true, i, rl, -1, w, k0 * lw + k + 1, lw, s2, 0, 1, tv, 0);
      }
      for (let j = 0; j < rl; j++) Y[(k + 1 + j) * nb + i] = tq * tv[j];
      // Row k brought up to date: A[k, k+1..] −= Y·A[k, k0..k]ᵀ + Vᵀ·X[k, ..]ᵀ.
      ws.gemv(false, rl, i + 1, -1, Y, (k + 1) * nb, nb, w, k * lw + k0, 1, w, k * lw + k + 1);
      if (i > 0) ws.gemv(true, i, rl, -1, w, k0 * lw + k + 1, lw, X, k * nb, 1, w, k * lw + k + 1);
      const [tp, bp] = householder(w, k * lw + k + 1, 1, rl);
      e[k] = bp;
      rt[k] = tp;
      w[k * lw + k + 1] = 1;
      // X[k+1.., i] = tp·(A·v − U·(Yᵀv) − X·(V·v)) over the trailing rows (v = row k from column k+1).
      const vo = k * lw + k + 1, xl = m - k - 1;
      ws.gemv(false, xl, rl, 1, w, (k + 1) * lw + k + 1, lw, w, vo, 0, tx, 0);
      ws.gemv(true, rl, i + 1, 1, Y, (k + 1) * nb, nb, w, vo, 0, s1, 0);
      ws.gemv(false, xl, i + 1, -1, w, (k + 1) * lw + k0, lw, s1, 0, 1, tx, 0);
      if (i > 0) {
        ws.gemv(false, i, rl, 1, w, k0 * lw + k + 1, lw, w, vo, 0, s2, 0);
        ws.gemv(false, xl, i, -1, X, (k + 1) * nb, nb, s2, 0, 1, tx, 0);
      }
      for (let r = 0; r < xl; r++) X[(k + 1 + r) * nb + i] = tp * tx[r];
    }
    // Trailing update: A[k1.., k1..] −= [U X]·[Yᵀ; V] (U: the panel's left vectors, V: its right vectors).
    const k1 = k0 + nb, M = m - k1, N = n - k1, kk = 2 * nb;
    for (let r = 0; r < M; r++) {
      const src = (k1 + r) * lw + k0, dst = r * kk;
      for (let j = 0; j < nb; j++) Z1[dst + j] = w[src + j];
      for (let j = 0; j < nb; j++) Z1[dst + nb + j] = X[(k1 + r) * nb + j];
    }
    for (let j = 0; j < nb; j++) {
      for (let c = 0; c < N; c++) Z2[j * N + c] = Y[(k1 + c) * nb + j];
      const src = (k0 + j) * lw + k1;
      for (let c = 0; c < N; c++) Z2[(nb + j) * N + c] = w[src + c];
    }
    ws.gemm(false, false, M, N, kk, -1, Z1, 0, kk, Z2, 0, N, 1, w, k1 * lw + k1, lw);
    for (let k = k0; k < k1; k++) {
      w[k * lw + k] = d[k];
      w[k * lw + k + 1] = e[k];
    }
  }
  return k0;
}
