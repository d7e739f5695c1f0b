/**
 * SVD of an upper bidiagonal matrix by divide and conquer (Gu & Eisenstat 1995; LAPACK dbdsdc/dlasd*):
 * B (n×n) = U·diag(σ)·Wᵀ. Internal to `svd.ts`.
 *
 * A node covers rows [r0, r0+nr) and columns [r0, r0+nr+sqre) of B (sqre ∈ {0, 1}: a node whose last row
 * also reaches into the next column). Splitting at its middle row k leaves two children (k×(k+1) and the
 * rest); with their SVDs the node becomes an nr×nr "arrowhead" M = [zᵀ; 0 D] (D = diag(0, σ₁, σ₂)), whose
 * singular values are the roots of the secular equation 1 + Σ zᵢ²/(dᵢ² − ω²) = 0. Roots are kept as
 * (nearest pole, offset in ω²), so every difference dᵢ² − ω² is computed to full relative accuracy, and z
 * is recomputed from the roots (Löwner) so the singular vectors come out orthogonal to working precision.
 * Deflation (tiny zᵢ, nearly equal dᵢ) perturbs M by ≤ 8ε·‖M‖: the result is backward stable.
 * The new singular vectors are products (old vectors)·(M's vectors): DGEMM, split by the block structure.
 * Leaves (≤ LEAF rows) use implicit-shift QR with the rotations applied at once.
 *
 * @module
 */
import { hypot, type Workspace } from "./factor_kernels.ts";
import { bidiagonalQrIterate } from "./bidiag_qr.ts";

const EPS = 2.220446049250313e-16;
/** Rows of a leaf problem (LAPACK's smlsiz is 25). */
const LEAF = 32;

/** Doubles of scratch {@link bidiagonalDc} needs for an n×n problem. */
export function bidiagonalDcScratch(n: number): number {
  return 3 * (n + 1) * (n + 1) + 64;
}

/**
 * B = U·diag(σ)·Wᵀ for the upper bidiagonal (d[0..n), e[0..n−1)); σ (≥ 0, unsorted) is written over d.
 * `u` and `w` (n×n, leading dimension n, workspace arrays) receive U and W; `scratch` holds
 * {@link bidiagonalDcScratch}(n) doubles of the same workspace. With `wantU` false, U is not computed (`u`
 * is left as garbage): the merges need only W (z comes from W's rows), so this saves half their products.
 */
export function bidiagonalDc(
  ws: Workspace,
  d: Float64Array,
  e: Float64Array,
  u: Float64Array,
  w: Float64Array,
  scratch: Float64Array,
  wantU = true,
): void {
  const n = d.length;
  if (n === 0) return;
  const sig = new Float64Array(n);
  let bnorm = 0;
  for (let i = 0; i < n; i++) bnorm = Math.max(bnorm, Math.abs(d[i]) + (i < n - 1 ? Math.abs(e[i]) : 0));
  const ctx: Ctx = { ws, d, e, u, w, n, sig, scratch, wantU, tol: EPS * bnorm };
  node(ctx, 0, n, 0);
  d.set(sig);
}

interface Ctx {
  ws: Workspace;
  d: Float64Array;
  e: Float64Array;
  u: Float64Array;
  w: Float64Array;
  n: number;
  sig: Float64Array;
  scratch: Float64Array;
  wantU: boolean;
  /** ε·‖B‖ of the whole bidiagonal: the leaves deflate against it, not against their own (maybe tiny) norm. */
  tol: number;
}

function node(ctx: Ctx, r0: number, nr: number, sqre: number): void {
  if (nr <= LEAF) return leaf(ctx, r0, nr, sqre);
  const k = nr >> 1;
  node(ctx, r0, k, 1);
  node(ctx, r0 + k + 1, nr - k - 1, sqre);
  merge(ctx, r0, nr, sqre, k);
}

/**
 * A small node: the (nr+sqre)-square bidiagonal (a zero row appended when sqre = 1) by QR iteration. The
 * zero row is deflated first, by right rotations only, so its left vector stays e_last and the remaining
 * columns of U have no component there: U's leading nr×nr block and all of W are the node's factors.
 */
function leaf(ctx: Ctx, r0: number, nr: number, sqre: number): void {
  const N = nr + sqre, { n, u, w, sig } = ctx;
  const d = new Float64Array(N), e = new Float64Array(N);
  for (let i = 0; i < nr; i++) d[i] = ctx.d[r0 + i];
  for (let i = 0; i < N - 1; i++) e[i] = ctx.e[r0 + i];
  const ut = new Float64Array(N * N), vt = new Float64Array(N * N);
  for (let i = 0; i < N; i++) ut[i * N + i] = vt[i * N + i] = 1;
  smallBidiagonalQr(d, e, ut, vt, N, ctx.tol);
  for (let j = 0; j < N; j++) {
    const neg = d[j] < 0 && j < nr;
    if (j < nr) sig[r0 + j] = Math.abs(d[j]);
    for (let i = 0; i < N; i++) w[(r0 + i) * n + r0 + j] = neg ? -vt[j * N + i] : vt[j * N + i];
    if (j < nr && ctx.wantU) { for (let i = 0; i < nr; i++) u[(r0 + i) * n + r0 + j] = ut[j * N + i]; }
  }
}

/** Golub–Kahan QR ({@link bidiagonalQrIterate}) on a small bidiagonal, rotations applied at once to ut, vt. */
function smallBidiagonalQr(
  d: Float64Array,
  e: Float64Array,
  ut: Float64Array,
  vt: Float64Array,
  n: number,
  tol: number,
) {
  const rot = (x: Float64Array, a: number, b: number, c: number, s: number) => {
    const pa = a * n, pb = b * n;
    for (let j = 0; j < n; j++) {
      const p = x[pa + j], q = x[pb + j];
      x[pa + j] = c * p + s * q;
      x[pb + j] = c * q - s * p;
    }
  };
  bidiagonalQrIterate(
    d,
    e,
    {
      rotate: (side, a, b, c, s) => rot(side === "u" ? ut : vt, a, b, c, s),
      sweep(l, count, cv, sv, cu, su) {
        for (let t = 0; t < count; t++) {
          rot(vt, l + t, l + t + 1, cv[t], sv[t]);
          rot(ut, l + t, l + t + 1, cu[t], su[t]);
        }
      },
    },
    "svd (divide-and-conquer leaf)",
    tol,
  );
}

/** Where a column of the old vectors is non-zero: top rows only, bottom rows only, or both. */
const TOP = 0, BOTTOM = 1, DENSE = 2;

/**
 * Merge the children of node (r0, nr, sqre) split at row k. Old vectors, in the arrowhead's order
 * [mid, σ₁…, σ₂…]: Ũ (nr×nr: e_k, U₁, U₂) and W̃ (nc×nr: the combined null column, W₁, W₂).
 */
function merge(ctx: Ctx, r0: number, nr: number, sqre: number, k: number): void {
  const { n, u, w, sig, scratch, ws, wantU } = ctx;
  const nc = nr + sqre, n2 = nr - k - 1;
  const alpha = ctx.d[r0 + k], beta = ctx.e[r0 + k];
  const s1 = (nr + 1) * (nr + 1);
  const oldU = scratch.subarray(0, s1); // nr×nr then nc×nr (ld nr): the old vectors
  const pack = scratch.subarray(s1, 2 * s1); // the non-deflated old vectors, grouped by type
  const coef = scratch.subarray(2 * s1, 3 * s1); // M's singular vectors (K×K)

  // Arrowhead: D and z.
  const dd = new Float64Array(nr), z = new Float64Array(nr);
  const w1 = (i: number, j: number) => w[(r0 + i) * n + r0 + j];
  const w2 = (i: number, j: number) => w[(r0 + k + 1 + i) * n + r0 + k + 1 + j];
  for (let j = 0; j < k; j++) {
    dd[1 + j] = sig[r0 + j];
    z[1 + j] = alpha * w1(k, j);
  }
  for (let j = 0; j < n2; j++) {
    dd[1 + k + j] = sig[r0 + k + 1 + j];
    z[1 + k + j] = beta * w2(0, j);
  }
  const zA = alpha * w1(k, k), zB = sqre ? beta * w2(0, n2) : 0;
  const r = hypot(zA, zB), c = r === 0 ? 1 : zA / r, s = r === 0 ? 0 : zB / r;
  z[0] = r;

  // Ũ (types: rows [0, k] are "top", rows (k, nr) "bottom").
  const uType = new Uint8Array(nr), wType = new Uint8Array(nr);
  if (wantU) {
    oldU.fill(0, 0, nr * nr);
    oldU[k * nr] = 1;
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) oldU[i * nr + 1 + j] = u[(r0 + i) * n + r0 + j];
    }
    for (let i = 0; i < n2; i++) {
      const src = (r0 + k + 1 + i) * n + r0 + k + 1;
      for (let j = 0; j < n2; j++) oldU[(k + 1 + i) * nr + 1 + k + j] = u[src + j];
    }
  }
  for (let j = 0; j < nr; j++) uType[j] = j <= k ? TOP : BOTTOM;
  // W̃ goes after Ũ in `coef` for now (it is only needed once Ũ's product is done).
  const oldW = coef;
  oldW.fill(0, 0, nc * nr);
  const nullW = new Float64Array(nc);
  for (let i = 0; i <= k; i++) {
    oldW[i * nr] = c * w1(i, k);
    nullW[i] = -s * w1(i, k);
    for (let j = 0; j < k; j++) oldW[i * nr + 1 + j] = w1(i, j);
  }
  for (let i = 0; i < n2 + sqre; i++) {
    const row = (k + 1 + i) * nr;
    if (sqre) {
      oldW[row] = s * w2(i, n2);
      nullW[k + 1 + i] = c * w2(i, n2);
    }
    for (let j = 0; j < n2; j++) oldW[row + 1 + k + j] = w2(i, j);
  }
  for (let j = 0; j < nr; j++) wType[j] = j === 0 ? (s !== 0 ? DENSE : TOP) : j <= k ? TOP : BOTTOM;

  const sol = solveArrowhead(dd, z, (a, b, cc, ss, both) => {
    if (both && wantU) rotateCols(oldU, nr, nr, a, b, cc, ss);
    rotateCols(oldW, nr, nc, a, b, cc, ss);
    if (both && uType[a] !== uType[b]) uType[a] = uType[b] = DENSE;
    if (wType[a] !== wType[b]) wType[a] = wType[b] = DENSE;
  });
  const { idx, K } = sol;

  const bt = 1 + k; // top rows of Ũ and W̃: [0, k]
  // W̃'s columns are parked first: M's vectors go where W̃ was built.
  const wSave = Float64Array.from(oldW.subarray(0, nc * nr));
  // U = Ũ·X over the non-deflated columns; deflated ones copied as they are.
  if (wantU) {
    const ord = groupOrder(idx.subarray(0, K), uType);
    buildVectors(sol, ord, coef, true);
    gatherCols(oldU, nr, nr, ord.cols, pack);
    product(ws, pack, coef, ord, nr, bt, K, u, r0 * n + r0, n);
    for (let j = K; j < nr; j++) {
      const src = idx[j];
      for (let i = 0; i < nr; i++) u[(r0 + i) * n + r0 + j] = oldU[i * nr + src];
    }
  }
  // W = W̃·Y likewise, then the null column.
  const ordW = groupOrder(idx.subarray(0, K), wType);
  gatherCols(wSave, nr, nc, ordW.cols, pack);
  buildVectors(sol, ordW, coef, false);
  product(ws, pack, coef, ordW, nc, bt, K, w, r0 * n + r0, n);
  for (let j = K; j < nr; j++) {
    const src = idx[j];
    for (let i = 0; i < nc; i++) w[(r0 + i) * n + r0 + j] = wSave[i * nr + src];
  }
  if (sqre) { for (let i = 0; i < nc; i++) w[(r0 + i) * n + r0 + nr] = nullW[i]; }
  for (let j = 0; j < nr; j++) sig[r0 + j] = sol.sigma[j];
}

/** Columns a, b of x (rows × ld): a ← c·a − s·b, b ← s·a + c·b. */
function rotateCols(x: Float64Array, ld: number, rows: number, a: number, b: number, c: number, s: number) {
  for (let i = 0; i < rows; i++) {
    const p = x[i * ld + a], q = x[i * ld + b];
    x[i * ld + a] = c * p - s * q;
    x[i * ld + b] = s * p + c * q;
  }
}

interface Order {
  /** Old-vector column of each packed column. */
  cols: Int32Array;
  /** Secular index (row of M's vector matrix) of each packed column. */
  rows: Int32Array;
  nTop: number;
  nBottom: number;
}

/** Non-deflated columns grouped TOP, BOTTOM, DENSE (any order within a group). */
function groupOrder(ids: Int32Array, type: Uint8Array): Order {
  const K = ids.length, cols = new Int32Array(K), rows = new Int32Array(K);
  let p = 0;
  for (const t of [TOP, BOTTOM, DENSE]) {
    for (let q = 0; q < K; q++) {
      if (type[ids[q]] === t) {
        cols[p] = ids[q];
        rows[p++] = q;
      }
    }
  }
  let nTop = 0, nBottom = 0;
  for (let q = 0; q < K; q++) {
    if (type[ids[q]] === TOP) nTop++;
    else if (type[ids[q]] === BOTTOM) nBottom++;
  }
  return { cols, rows, nTop, nBottom };
}

/** pack (rows × K, ld K) = the listed columns of x (rows × ld). */
function gatherCols(x: Float64Array, ld: number, rows: number, cols: Int32Array, pack: Float64Array) {
  const K = cols.length;
  for (let i = 0; i < rows; i++) {
    const o = i * ld, p = i * K;
    for (let q = 0; q < K; q++) pack[p + q] = x[o + cols[q]];
  }
}

/**
 * out[0..rows) × [0..K) = pack·V, with V's rows in packed order; top rows [0, bt) only see TOP and DENSE
 * columns, the others BOTTOM and DENSE.
 */
function product(
  ws: Workspace,
  pack: Float64Array,
  v: Float64Array,
  o: Order,
  rows: number,
  bt: number,
  K: number,
  out: Float64Array,
  oo: number,
  ldo: number,
) {
  const nT = o.nTop, nB = o.nBottom, nD = K - nT - nB;
  const bb = rows - bt;
  // Top rows.
  if (nT > 0) ws.gemm(false, false, bt, K, nT, 1, pack, 0, K, v, 0, K, 0, out, oo, ldo);
  else zeroRows(out, oo, ldo, bt, K);
  if (nD > 0) ws.gemm(false, false, bt, K, nD, 1, pack, nT + nB, K, v, (nT + nB) * K, K, 1, out, oo, ldo);
  // Bottom rows.
  const ob = oo + bt * ldo;
  if (nB > 0) ws.gemm(false, false, bb, K, nB, 1, pack, bt * K + nT, K, v, nT * K, K, 0, out, ob, ldo);
  else zeroRows(out, ob, ldo, bb, K);
  if (nD > 0) {
    ws.gemm(false, false, bb, K, nD, 1, pack, bt * K + nT + nB, K, v, (nT + nB) * K, K, 1, out, ob, ldo);
  }
}

function zeroRows(x: Float64Array, o: number, ld: number, rows: number, cols: number) {
  for (let i = 0; i < rows; i++) x.fill(0, o + i * ld, o + i * ld + cols);
}

interface Arrowhead {
  /** σ of every column: roots first (K), then the deflated ones. */
  sigma: Float64Array;
  /** Old-vector column of each output column: the K secular ones (ascending d), then the deflated ones. */
  idx: Int32Array;
  K: number;
  /** Sorted non-deflated d (dk[0] = 0) and the recomputed z. */
  dk: Float64Array;
  zhat: Float64Array;
  /** Root j: nearest pole p[j] and ω_j² − dk[p]². */
  pole: Int32Array;
  tau: Float64Array;
}

/**
 * Singular values of the arrowhead [zᵀ; 0 D] (D = diag(dd), dd[0] = 0): deflation (rotations reported
 * through `rot(a, b, c, s)` on the old vectors), then the secular roots and Löwner's z.
 */
function solveArrowhead(
  dd: Float64Array,
  z: Float64Array,
  rot: (a: number, b: number, c: number, s: number, both: boolean) => void,
): Arrowhead {
  const nr = dd.length;
  let dmax = 0, zmax = 0;
  for (let i = 0; i < nr; i++) {
    dmax = Math.max(dmax, Math.abs(dd[i]));
    zmax = Math.max(zmax, Math.abs(z[i]));
  }
  const tol = 8 * EPS * Math.max(dmax, zmax);
  // Perturbations of at most tol each (LAPACK dlasd2): tiny z deflated, d within tol
  // of the pole at 0 set to 0 and their column folded into column 0 (a right rotation: their row of M is
  // then zero, so σ = 0 exactly), nearly equal d merged by a two-sided rotation.
  const deflated: number[] = [];
  const live: number[] = [];
  for (let i = 1; i < nr; i++) (Math.abs(z[i]) <= tol ? deflated : live).push(i);
  live.sort((a, b) => dd[a] - dd[b]);
  const kept: number[] = [0];
  for (const cur of live) {
    const prev = kept.length > 1 ? kept[kept.length - 1] : -1;
    if (dd[cur] <= tol) {
      const r = hypot(z[0], z[cur]), c = z[0] / r, s = z[cur] / r;
      rot(cur, 0, c, s, false);
      z[0] = r;
      z[cur] = 0;
      dd[cur] = 0;
      deflated.push(cur);
    } else if (prev >= 0 && dd[cur] - dd[prev] <= tol) {
      // Nearly equal d: rotate z[prev] into z[cur]; prev becomes an exact singular value.
      const r = hypot(z[prev], z[cur]), c = z[cur] / r, s = z[prev] / r;
      rot(prev, cur, c, s, true);
      z[cur] = r;
      z[prev] = 0;
      kept[kept.length - 1] = cur;
      deflated.push(prev);
    } else kept.push(cur);
  }
  // With other roots to find, the pole at 0 needs weight (alone, z[0] = 0 is just σ = 0).
  if (kept.length > 1 && Math.abs(z[0]) <= tol) z[0] = z[0] < 0 ? -tol : tol;
  const K = kept.length;
  const idx = new Int32Array(nr), sigma = new Float64Array(nr);
  const dk = new Float64Array(K), zk = new Float64Array(K);
  for (let q = 0; q < K; q++) {
    idx[q] = kept[q];
    dk[q] = q === 0 ? 0 : dd[kept[q]];
    zk[q] = z[kept[q]];
  }
  for (let q = 0; q < deflated.length; q++) {
    idx[K + q] = deflated[q];
    sigma[K + q] = dd[deflated[q]];
  }
  const pole = new Int32Array(K), tau = new Float64Array(K);
  const z2 = zk.map((v) => v * v);
  let zz = 0;
  for (let q = 0; q < K; q++) zz += z2[q];
  const del = new Float64Array(K);
  for (let j = 0; j < K; j++) {
    const [p, t] = K === 1 ? [0, zz] : secularRoot(j, dk, z2, zz, del);
    pole[j] = p;
    tau[j] = t;
    sigma[j] = Math.sqrt(dk[p] * dk[p] + t);
  }
  // Löwner: the z for which the computed roots are exact.
  const zhat = new Float64Array(K);
  const diff = (i: number, j: number) => (dk[i] - dk[pole[j]]) * (dk[i] + dk[pole[j]]) - tau[j]; // d_i² − ω_j²
  for (let i = 0; i < K; i++) {
    let prod = -diff(i, K - 1);
    for (let q = 0; q < i; q++) prod *= diff(i, q) / ((dk[i] - dk[q]) * (dk[i] + dk[q]));
    for (let q = i; q < K - 1; q++) prod *= diff(i, q) / ((dk[i] - dk[q + 1]) * (dk[i] + dk[q + 1]));
    zhat[i] = (zk[i] >= 0 ? 1 : -1) * Math.sqrt(Math.abs(prod));
  }
  if (K === 1) zhat[0] = zk[0];
  return { sigma, idx, K, dk, zhat, pole, tau };
}

/**
 * Root j of 1 + Σ z²ᵢ/(dᵢ² − ω²) in (dk[j], dk[j+1]) (or above dk[K−1]): returns the nearer pole p and
 * τ = ω² − dk[p]². Two-pole rational model steps (the "middle way"), safeguarded by bisection.
 */
function secularRoot(
  j: number,
  dk: Float64Array,
  z2: Float64Array,
  zz: number,
  del: Float64Array,
): [number, number] {
  const K = dk.length, last = j === K - 1;
  const evalAt = (p: number, t: number) => {
    let psi = 0, dpsi = 0, phi = 0, dphi = 0;
    for (let i = 0; i <= j; i++) {
      const inv = 1 / (del[i] - t), term = z2[i] * inv;
      psi += term;
      dpsi += term * inv;
    }
    for (let i = j + 1; i < K; i++) {
      const inv = 1 / (del[i] - t), term = z2[i] * inv;
      phi += term;
      dphi += term * inv;
    }
    void p;
    return [psi, dpsi, phi, dphi];
  };
  let p: number, lo: number, hi: number;
  if (last) {
    p = j;
    for (let i = 0; i < K; i++) del[i] = (dk[i] - dk[p]) * (dk[i] + dk[p]);
    lo = 0;
    hi = zz;
  } else {
    const gap = (dk[j + 1] - dk[j]) * (dk[j + 1] + dk[j]);
    p = j;
    for (let i = 0; i < K; i++) del[i] = (dk[i] - dk[p]) * (dk[i] + dk[p]);
    const [a, , b] = evalAt(p, gap / 2);
    if (1 + a + b >= 0) {
      lo = 0;
      hi = gap / 2;
    } else {
      p = j + 1;
      for (let i = 0; i < K; i++) del[i] = (dk[i] - dk[p]) * (dk[i] + dk[p]);
      lo = -gap / 2;
      hi = 0;
    }
  }
  // Start in the middle of the bracket; the rational steps home in on a root hugging a pole quickly.
  let t = p === j ? (last ? zz / 2 : hi / 2) : lo / 2;
  for (let it = 0; it < 100; it++) {
    const [psi, dpsi, phi, dphi] = evalAt(p, t);
    const f = 1 + psi + phi;
    if (!Number.isFinite(f)) {
      t = 0.5 * (lo + hi);
      continue;
    }
    if (Math.abs(f) <= 8 * EPS * (1 + phi - psi) + EPS * Math.abs(t) * (dpsi + dphi)) break;
    if (f < 0) lo = t;
    else hi = t;
    const a = del[j] - t;
    let eta: number;
    if (last) {
      const s = dpsi * a * a, c = f - dpsi * a;
      eta = c > 0 ? a + s / c : NaN;
    } else {
      const b = del[j + 1] - t;
      const s = dpsi * a * a, S = dphi * b * b, c = f - dpsi * a - dphi * b;
      const A = c, B = -(c * (a + b) + s + S), C = c * a * b + s * b + S * a;
      if (A === 0) eta = -C / B;
      else {
        const disc = Math.sqrt(Math.max(0, B * B - 4 * A * C));
        const q = -0.5 * (B + (B >= 0 ? disc : -disc));
        const r1 = q / A, r2 = q === 0 ? NaN : C / q;
        eta = r1 > a && r1 < b ? r1 : r2;
      }
    }
    let next = t + eta;
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
    if (Math.abs(next - t) <= 2 * EPS * Math.max(Math.abs(next), Math.abs(t)) || hi - lo <= 0) {
      t = next;
      break;
    }
    t = next;
  }
  return [p, t];
}

/**
 * M's singular vectors, columns = roots in ascending order, rows in the packed order `o.rows` (secular
 * indices): right (left = false) yᵢ ∝ ẑᵢ/(dᵢ² − ω²); left xᵢ ∝ dᵢ·ẑᵢ/(dᵢ² − ω²), x₀ ∝ −1.
 */
function buildVectors(a: Arrowhead, o: Order, out: Float64Array, left: boolean) {
  const { K, dk, zhat, pole, tau } = a;
  if (K === 1) {
    // M = [z₀] (possibly 0): x = 1, y = sign(z₀).
    out[0] = left || zhat[0] >= 0 ? 1 : -1;
    return;
  }
  const col = new Float64Array(K);
  for (let j = 0; j < K; j++) {
    const dp = dk[pole[j]], t = tau[j];
    let nrm = 0;
    for (let i = 0; i < K; i++) {
      const dif = (dk[i] - dp) * (dk[i] + dp) - t;
      const v = left ? (i === 0 ? -1 : dk[i] * zhat[i] / dif) : zhat[i] / dif;
      col[i] = v;
      nrm += v * v;
    }
    const inv = 1 / Math.sqrt(nrm);
    for (let q = 0; q < K; q++) out[q * K + j] = col[o.rows[q]] * inv;
  }
}
