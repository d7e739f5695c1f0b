/**
 * Golub–Kahan implicit-shift QR on an upper bidiagonal, internal to `svd.ts` (small orders, rotations batched
 * into Uᵀ and Vᵀ) and `bidiag_dc.ts` (the divide-and-conquer leaves, rotations applied at once): the
 * iteration is written once here and hands its rotations to a {@link BidiagRotationSink}.
 *
 * @module
 */
import { NumericError } from "../errors.ts";
import { hypot } from "./factor_kernels.ts";

const EPS = 2.220446049250313e-16;
/** Smallest normal double. */
const MIN_NORMAL = 2.2250738585072014e-308;

/** Where the iteration's rotations go: rows of Uᵀ (left rotations of B) and of Vᵀ (right rotations). */
export interface BidiagRotationSink {
  /** Rows a and b of Uᵀ (`side` "u") or Vᵀ ("v") rotated: x_a ← c·x_a + s·x_b, x_b ← c·x_b − s·x_a. */
  rotate(side: "u" | "v", a: number, b: number, c: number, s: number): void;
  /**
   * One QR sweep: rotation t (t < count) acts on rows l+t and l+t+1, of Vᵀ by (cv[t], sv[t]) and of Uᵀ by
   * (cu[t], su[t]); within each matrix they apply in order of t. The arrays are reused by the next sweep.
   */
  sweep(
    l: number,
    count: number,
    cv: Float64Array,
    sv: Float64Array,
    cu: Float64Array,
    su: Float64Array,
  ): void;
}

/**
 * Diagonalise the upper bidiagonal (d, e[0..n−2]) in place: afterwards e is zero and d holds the singular
 * values (some possibly negative; their signs are the caller's to fold into V). Deflation is absolute
 * (|e_i| ≤ ε·‖B‖) or relative (|e_i| ≤ ε·(|d_i| + |d_{i+1}|)): what backward stability needs, without
 * crawling on tiny singular values. A zero on the diagonal is chased out with rotations on one side; shifts
 * are Wilkinson's, from the trailing 2×2 of BᵀB (computed on the block scaled to norm 1). `what` names the
 * caller in the error raised when the iteration does not converge (40·n + 40 sweeps); `absTol` is an absolute
 * deflation threshold from a larger problem this one is part of (ε·‖B‖ of the whole matrix, for the
 * divide-and-conquer leaves: a leaf made only of rounding residue then deflates at once).
 */
export function bidiagonalQrIterate(
  d: Float64Array,
  e: Float64Array,
  sink: BidiagRotationSink,
  what: string,
  absTol = 0,
): void {
  const n = d.length;
  let bnorm = 0;
  for (let i = 0; i < n; i++) bnorm = Math.max(bnorm, Math.abs(d[i]) + (i < n - 1 ? Math.abs(e[i]) : 0));
  // Subnormals are below any accuracy this iteration has (ε·‖B‖ of a block made only of subnormals rounds
  // to 0, and nothing would ever deflate): treat them as zero, as LAPACK's dbdsqr does with its underflow floor.
  const tol = Math.max(EPS * bnorm, absTol, MIN_NORMAL);
  const smallE = (i: number) =>
    Math.abs(e[i]) <= tol || Math.abs(e[i]) <= EPS * (Math.abs(d[i]) + Math.abs(d[i + 1]));
  const cv = new Float64Array(n),
    sv = new Float64Array(n),
    cu = new Float64Array(n),
    su = new Float64Array(n);
  let iter = 0, h = n - 1;
  while (h > 0) {
    if (smallE(h - 1)) {
      e[h - 1] = 0;
      h--;
      continue;
    }
    let l = h - 1;
    while (l > 0 && !smallE(l - 1)) l--;
    if (++iter > 40 * n + 40) throw new NumericError(`${what}: bidiagonal QR did not converge (n = ${n})`);
    if (Math.abs(d[h]) <= tol) {
      // Zero at the bottom of the block: chase e[h−1] up column h with right rotations.
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
        sink.rotate("v", j, h, c, s);
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
        const r = hypot(d[j], f), c = r === 0 ? 1 : d[j] / r, s = r === 0 ? 0 : f / r;
        d[j] = r;
        if (j < h) {
          f = -s * e[j];
          e[j] *= c;
        }
        sink.rotate("u", j, zi, c, s);
      }
      continue;
    }
    // Wilkinson shift from the trailing 2×2 of BᵀB, on the block scaled to norm ~1: its squares would
    // underflow to subnormals (and the shift to garbage) on a block of 1e-160s, the rounding residue a
    // rank-deficient matrix leaves. Only the direction of (y, z) matters, so the scale never comes back.
    let sc = 0;
    for (let i = l; i <= h; i++) sc = Math.max(sc, Math.abs(d[i]), i < h ? Math.abs(e[i]) : 0);
    const pre = sc < 1e-290 ? 2 ** 600 : 1; // 1/sc itself overflows for a subnormal sc
    const inv = 1 / (sc * pre);
    const scaled = (x: number) => x * pre * inv;
    const dh1 = scaled(d[h - 1]), dh = scaled(d[h]), eh1 = scaled(e[h - 1]);
    const eh2 = h - 1 > l ? scaled(e[h - 2]) : 0;
    const t11 = dh1 * dh1 + eh2 * eh2;
    const t12 = dh1 * eh1;
    const t22 = dh * dh + eh1 * eh1;
    const delta = 0.5 * (t11 - t22);
    const den = delta + (delta >= 0 ? 1 : -1) * hypot(delta, t12);
    const mu = den === 0 ? t22 : t22 - (t12 * t12) / den;
    const dl = scaled(d[l]);
    let y = dl * dl - mu, z = dl * scaled(e[l]);
    for (let k = l; k < h; k++) {
      // Right rotation on columns k, k+1.
      let r = hypot(y, z);
      let c = r === 0 ? 1 : y / r, s = r === 0 ? 0 : z / r;
      if (k > l) e[k - 1] = r;
      const dk = c * d[k] + s * e[k];
      e[k] = c * e[k] - s * d[k];
      const bulge = s * d[k + 1];
      d[k + 1] *= c;
      cv[k - l] = c;
      sv[k - l] = s;
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
      cu[k - l] = c;
      su[k - l] = s;
    }
    sink.sweep(l, h - l, cv, sv, cu, su);
  }
}
