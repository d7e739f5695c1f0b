/**
 * Cholesky factorisation A + shift·I = L·Lᵀ in float64, with damping for the Gram matrices of calibration
 * data, which are often singular (dead channels, fewer tokens than channels) or slightly indefinite.
 *
 * @module
 */
import { NumericError, OptionError } from "../errors.ts";
import { eigh } from "./eigh.ts";
import { checkFinite, checkSquare } from "./factor_kernels.ts";
import type { Matrix64 } from "./matrix.ts";
import { activeBackend, activePool } from "./backend.ts";
import { gemmWasmAt } from "./wasm/gemm_wasm.ts";
import { type WasmRuntime, wasmRuntime, type WasmScope } from "./wasm/runtime.ts";

/** Options of {@link cholesky}. */
export interface CholeskyOptions {
  /**
   * - `"auto"` (default): try A as is; on failure retry with shift = c·mean|diag| for c = 1e-6, 1e-5, 1e-4,
   *   1e-3, 1e-2 (1 % is GPTQ's damping); as a last resort shift = −λ_min(A) + 1e-6·mean|diag| (λ_min from
   *   {@link eigh}, SVD-LLM's repair). The shift actually added is reported.
   * - a number: factor A + number·I once (number ≥ 0).
   * - `"none"`: factor A as is; a non-positive pivot throws.
   */
  damping?: "none" | "auto" | number;
  /** With `"auto"`: how many of the 7 attempts above to make at most (default 7). */
  maxTries?: number;
  /**
   * Write the factor into `a.data` itself (the result's `factor.data` is then `a.data`), for a caller that
   * has no further use for A: one n×n float64 matrix instead of two (the largest Gram matrix of a model is
   * tens of MB). A is overwritten only by a successful attempt, so the damping retries still read it intact.
   * Default false.
   */
  inPlace?: boolean;
}

/** Result of {@link cholesky}. */
export interface CholeskyResult {
  /** Lower triangular L (n×n, zeros above the diagonal) with A + shift·I = L·Lᵀ. */
  factor: Matrix64;
  /** The shift added to the diagonal (0 when A itself factored). */
  shift: number;
  /** Number of factorisations attempted. */
  tries: number;
}

/** Panel width: the trailing update of each panel is a WASM DGEMM. */
const PANEL = 64;

/** Orders up to this are factored in TypeScript (one panel, no trailing update); above, with WASM DGEMM. */
export const CHOLESKY_PANEL = PANEL;

/**
 * Cholesky factor of a symmetric positive (semi-)definite matrix, `a: n×n` (only its lower triangle is read).
 * A pivot counts as non-positive when it is ≤ n·ε·max|diag| (a numerically singular matrix is not factored
 * silently). Throws NumericError naming the size, the pivot and the last shift when the factorisation fails,
 * ShapeError on a non-square input, NumericError on non-finite input.
 *
 * @example
 * ```ts
 * import { cholesky } from "./cholesky.ts";
 * import { matrix64 } from "./matrix.ts";
 * const { factor, shift } = cholesky(matrix64(2, 2, new Float64Array([4, 2, 2, 2]))); // L = [[2, 0], [1, 1]]
 * ```
 */
export function cholesky(a: Matrix64, opts: CholeskyOptions = {}): CholeskyResult {
  checkSquare(a, "cholesky");
  checkFinite(a, "cholesky");
  const n = a.rows;
  const inPlace = opts.inPlace ?? false;
  let factor: Matrix64 | undefined;
  const { shift, tries } = dampedCholesky(
    n,
    (i) => a.data[i * n + i],
    opts,
    (shift, tol) => {
      const r = factorShifted(a, shift, tol, inPlace);
      factor = r.factor;
      return r;
    },
    () => eigh(a).values[n - 1],
  );
  return { factor: factor!, shift, tries };
}

/**
 * The damping schedule of {@link cholesky} over any storage of A (the host here, wasm memory in
 * `cholesky_resident.ts`): `attempt(shift, tol)` factors A + shift·I, treating pivots ≤ tol as non-positive,
 * and must leave A restorable for the next attempt when it fails; `minEigen()` is λ_min(A) for the last
 * resort (called on an intact A). Returns the shift that succeeded and the number of attempts; throws
 * NumericError / OptionError as {@link cholesky} documents.
 */
export function dampedCholesky(
  n: number,
  diagAt: (i: number) => number,
  opts: CholeskyOptions,
  attempt: (shift: number, tol: number) => Attempt,
  minEigen: () => number,
): { shift: number; tries: number } {
  const damping = opts.damping ?? "auto";
  let meanDiag = 0, maxDiag = 0;
  for (let i = 0; i < n; i++) {
    const v = Math.abs(diagAt(i));
    meanDiag += v / n;
    maxDiag = Math.max(maxDiag, v);
  }
  const scale = meanDiag > 0 ? meanDiag : 1;
  const tried = (shift: number) => attempt(shift, n * 2.220446049250313e-16 * (maxDiag + shift));
  if (typeof damping === "number") {
    if (!(damping >= 0) || !Number.isFinite(damping)) {
      throw new OptionError(
        `cholesky: damping must be a finite number ≥ 0, "auto" or "none", got ${damping}`,
      );
    }
    const r = tried(damping);
    if (r.factor) return { shift: damping, tries: 1 };
    throw new NumericError(
      `cholesky: ${n}×${n} matrix is not positive definite even with shift ${damping}: pivot ${r.pivot} is ${r.value}`,
    );
  }
  if (damping === "none") {
    const r = tried(0);
    if (r.factor) return { shift: 0, tries: 1 };
    throw new NumericError(
      `cholesky: ${n}×${n} matrix is not positive definite: pivot ${r.pivot} is ${r.value} (try damping "auto")`,
    );
  }
  if (damping !== "auto") throw new OptionError(`cholesky: unknown damping ${String(damping)}`);
  const maxTries = opts.maxTries ?? 7;
  if (!Number.isInteger(maxTries) || maxTries < 1) {
    throw new OptionError(`cholesky: maxTries must be an integer ≥ 1, got ${maxTries}`);
  }
  const plan: (number | "eigh")[] = [
    0,
    1e-6 * scale,
    1e-5 * scale,
    1e-4 * scale,
    1e-3 * scale,
    1e-2 * scale,
    "eigh",
  ];
  let last = { shift: 0, pivot: -1, value: NaN };
  for (let t = 0; t < Math.min(maxTries, plan.length); t++) {
    const p = plan[t];
    const shift = p === "eigh" ? Math.max(0, -minEigen()) + 1e-6 * scale : p;
    const r = tried(shift);
    if (r.factor) return { shift, tries: t + 1 };
    last = { shift, pivot: r.pivot, value: r.value };
  }
  throw new NumericError(
    `cholesky: ${n}×${n} matrix could not be factored after ${
      Math.min(maxTries, plan.length)
    } tries; last shift ${last.shift} failed at pivot ${last.pivot} (value ${last.value})`,
  );
}

/** One factorisation attempt: `factor` on success, else the failing pivot and its value. */
export interface Attempt {
  /** The factor (success). */
  factor?: Matrix64;
  /** Index of the first non-positive pivot (failure). */
  pivot: number;
  /** Its value. */
  value: number;
}

function factorShifted(a: Matrix64, shift: number, tol: number, inPlace: boolean): Attempt {
  const n = a.rows;
  const rt = wasmRuntime();
  if (rt && activeBackend() === "wasm" && rt.has("dgemm") && n > PANEL) {
    return rt.scoped((s) => {
      const p = s.putF64(a.data);
      const r = factorAt(rt, s, p, n, shift, tol);
      if (r.factor) {
        const data = inPlace ? a.data : new Float64Array(n * n);
        data.set(rt.f64(p, n * n));
        r.factor = { rows: n, cols: n, data };
      }
      return r;
    });
  }
  const d = Float64Array.from(a.data);
  const r = factorInPlace(d, n, shift, tol, (r0, r1, c0, c1, s0, s1) => {
    for (let i = r0; i < r1; i++) {
      const li = i * n;
      for (let j = c0; j < Math.min(c1, i + 1); j++) {
        const lj = j * n;
        let acc = 0;
        for (let k = s0; k < s1; k++) acc += d[li + k] * d[lj + k];
        d[li + j] -= acc;
      }
    }
  });
  if (r.factor) {
    if (inPlace) a.data.set(d);
    r.factor = { rows: n, cols: n, data: inPlace ? a.data : d };
  }
  return r;
}

/**
 * The blocked factorisation of the n×n float64 matrix at wasm offset `p`, in place, trailing updates in
 * DGEMM (scratch from the scope `s`); the result's `factor` is a view of wasm memory, valid until the next
 * allocation. Reads only the lower triangle. A failed attempt leaves the strictly upper triangle intact
 * except within 256 entries of the diagonal (the trailing updates' diagonal blocks, see
 * {@link CHOLESKY_UPPER_BAND}).
 */
export function factorAt(
  rt: WasmRuntime,
  s: WasmScope,
  p: number,
  n: number,
  shift: number,
  tol: number,
): Attempt {
  // One DGEMM scratch per thread, taken once: the trailing updates are many products in one scope.
  const pool = activeBackend() === "wasm" && rt.shared ? activePool() : null;
  const works = Array.from({ length: pool?.size ?? 1 }, () => s.allocF64(rt.fn("dgemm_work_size")()));
  const view = rt.f64(p, n * n);
  return factorInPlace(view, n, shift, tol, (r0, r1, c0, c1, s0, s1) => {
    // A[r0:r1, c0:c1] -= L[r0:r1, s0:s1]·L[c0:c1, s0:s1]ᵀ (split over the threads when large enough)
    gemmWasmAt(
      rt,
      works,
      true,
      {
        transA: false,
        transB: true,
        m: r1 - r0,
        n: c1 - c0,
        k: s1 - s0,
        alpha: -1,
        beta: 1,
        a: p + 8 * (r0 * n + s0),
        b: p + 8 * (c0 * n + s0),
        c: p + 8 * (r0 * n + c0),
        lda: n,
        ldb: n,
        ldc: n,
      },
      pool,
    );
  });
}

/** Rows per trailing-update strip of {@link factorInPlace}. */
const STRIP = 256;

/**
 * Width of the band above the diagonal (diagonal included) that a failed {@link factorAt} may have changed:
 * each trailing update writes a strip's square diagonal block, whose upper part lies within STRIP − 1 of
 * the diagonal. Everything above the band is still A's.
 */
export const CHOLESKY_UPPER_BAND = STRIP;

type Update = (r0: number, r1: number, c0: number, c1: number, s0: number, s1: number) => void;

/** Right-looking blocked Cholesky on the lower triangle of `d` (row-major n×n); zeroes the upper triangle. */
function factorInPlace(d: Float64Array, n: number, shift: number, tol: number, update: Update): Attempt {
  for (let s = 0; s < n; s += PANEL) {
    const e = Math.min(n, s + PANEL);
    // Panel: columns s..e of L for every row ≥ s (left-looking inside the panel).
    for (let j = s; j < e; j++) {
      const lj = j * n;
      let piv = d[lj + j] + shift;
      for (let k = s; k < j; k++) piv -= d[lj + k] * d[lj + k];
      if (!(piv > tol)) return { pivot: j, value: piv };
      const ljj = Math.sqrt(piv);
      d[lj + j] = ljj;
      const inv = 1 / ljj;
      for (let i = j + 1; i < n; i++) {
        const li = i * n;
        let v = d[li + j];
        for (let k = s; k < j; k++) v -= d[li + k] * d[lj + k];
        d[li + j] = v * inv;
      }
    }
    // Trailing lower triangle: A22 -= L21·L21ᵀ, in row strips so only the lower part is computed.
    for (let r0 = e; r0 < n; r0 += STRIP) {
      const r1 = Math.min(n, r0 + STRIP);
      update(r0, r1, e, r1, s, e);
    }
  }
  for (let i = 0; i < n; i++) d.fill(0, i * n + i + 1, (i + 1) * n);
  return { factor: { rows: n, cols: n, data: d }, pivot: -1, value: 0 };
}
