/**
 * Cholesky factorisation of a Gram matrix where it was accumulated, in WebAssembly memory
 * ({@link ResidentGram}), and products X·L with the factor left there.
 *
 * Why: SVD-LLM needs L only for W·L. Copied out to the host, the factor of down_proj's input statistics
 * (f×f float64, 63 MB for f = 2816) was alive on the host beside its own wasm copy, W and the whitened
 * weight; here the one wasm region holds G, then L, then is freed after W·L for the QR that follows. The
 * arithmetic (factorisation, damping schedule, products) is the host path's, so the factor and the products
 * have the same bits as `cholesky` followed by `gemmInto`.
 *
 * Damping retries need A intact after a failed attempt. The attempt reads only A's lower triangle and leaves
 * its strict upper triangle unchanged except within {@link CHOLESKY_UPPER_BAND} of the diagonal; that band
 * is saved before the first attempt (n × 256 values) and A is rebuilt from it and the upper triangle.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { activePool } from "./backend.ts";
import { CHOLESKY_UPPER_BAND, type CholeskyOptions, dampedCholesky, factorAt } from "./cholesky.ts";
import { eigh } from "./eigh.ts";
import { checkFinite } from "./factor_kernels.ts";
import type { ResidentGram } from "./gram_resident.ts";
import type { Matrix64 } from "./matrix.ts";
import { gemmWasmAt } from "./wasm/gemm_wasm.ts";
import type { WasmRuntime } from "./wasm/runtime.ts";

/** Frees the wasm region of a factor collected without {@link ResidentCholesky.dispose} (an error path). */
const orphans = typeof FinalizationRegistry === "function"
  ? new FinalizationRegistry<{ rt: WasmRuntime; ptr: number }>(({ rt, ptr }) => rt.free(ptr))
  : undefined;

/**
 * The inner-dimension block of `dgemm` (DKC in wasm/gemm.c): {@link ResidentCholesky.mulInto} keeps its
 * boundaries so its sums round as a full product's do (a test compares the bits for n > 2·DGEMM_KC).
 */
const DGEMM_KC = 256;
/** Column block of {@link ResidentCholesky.mulInto}: a multiple of the micro-tile width (4). */
const MUL_COLUMNS = 64;

/** A lower-triangular Cholesky factor L (n×n float64) in wasm memory, from {@link choleskyResident}. */
export class ResidentCholesky {
  /** Order of L. */
  readonly n: number;
  /** Shift added to the diagonal (0 when A itself factored). */
  readonly shift: number;
  /** Factorisations attempted. */
  readonly tries: number;
  #rt: WasmRuntime;
  #ptr: number;
  #token = {};

  /** @internal Adopts the wasm region `ptr` (freed by {@link ResidentCholesky.dispose}). */
  constructor(rt: WasmRuntime, ptr: number, n: number, shift: number, tries: number) {
    this.#rt = rt;
    this.#ptr = ptr;
    this.n = n;
    this.shift = shift;
    this.tries = tries;
    orphans?.register(this, { rt, ptr }, this.#token);
  }

  /**
   * `out` ← X·L for `x: rows×n` (float64, host), bit for bit as `gemmInto(x, L, out)` computes it, in about
   * 56 % of its flops: L is lower triangular, so column block [j0, j0 + w) of the product only meets rows ≥ j0
   * of L. Each entry of a full product is one sum over the inner index in order, restarted at every
   * {@link DGEMM_KC} boundary; the terms skipped here are the leading exact zeros of the first block that has
   * any non-zero term (adding them to the +0 a sum starts from changes nothing), and the later blocks start
   * at the same boundaries, so every entry gets the same rounding.
   */
  mulInto(x: Matrix64, out: Matrix64): void {
    const n = this.n, rows = x.rows, rt = this.#rt;
    if (this.#ptr === 0) throw new Error(`ResidentCholesky.mulInto: the factor was disposed`);
    if (x.cols !== n || out.rows !== rows || out.cols !== n) {
      throw new ShapeError(
        `ResidentCholesky.mulInto: X is ${x.rows}×${x.cols}, out ${out.rows}×${out.cols}, L is ${n}×${n}`,
      );
    }
    if (rows === 0) return;
    const pool = activePool(), l = this.#ptr;
    rt.scoped((s) => {
      const pa = s.putF64(x.data);
      const pc = s.allocF64(rows * n);
      const works = Array.from({ length: pool?.size ?? 1 }, () => s.allocF64(rt.fn("dgemm_work_size")()));
      for (let j0 = 0; j0 < n; j0 += MUL_COLUMNS) {
        const w = Math.min(MUL_COLUMNS, n - j0);
        // Inner index [j0, next boundary), then the rest from that boundary on (the full product's blocks).
        const kb = Math.min(n, (Math.floor(j0 / DGEMM_KC) + 1) * DGEMM_KC);
        for (const [k0, k1, beta] of [[j0, kb, 0], [kb, n, 1]]) {
          if (k1 <= k0) continue;
          gemmWasmAt(rt, works, true, {
            transA: false,
            transB: false,
            m: rows,
            n: w,
            k: k1 - k0,
            alpha: 1,
            a: pa + 8 * k0,
            lda: n,
            b: l + 8 * (k0 * n + j0),
            ldb: n,
            beta,
            c: pc + 8 * j0,
            ldc: n,
          }, pool);
        }
      }
      out.data.set(rt.f64(pc, rows * n));
    });
  }

  /** L copied to the host (tests, diagnostics). */
  toHost(): Matrix64 {
    if (this.#ptr === 0) throw new Error(`ResidentCholesky.toHost: the factor was disposed`);
    return { rows: this.n, cols: this.n, data: this.#rt.getF64(this.#ptr, this.n * this.n) };
  }

  /** Free the wasm region (idempotent). */
  dispose(): void {
    if (this.#ptr === 0) return;
    orphans?.unregister(this.#token);
    this.#rt.free(this.#ptr);
    this.#ptr = 0;
  }
}

/**
 * Cholesky factor of the accumulated G + shift·I, computed in place in `g`'s wasm region, which the result
 * takes over (`g` is left taken). Damping as {@link cholesky} (`opts.inPlace` is implied). Throws what
 * `cholesky` throws (then the region is freed).
 */
export function choleskyResident(g: ResidentGram, opts: CholeskyOptions = {}): ResidentCholesky {
  const { rt, ptr, n } = g.transfer();
  try {
    rt.fn("dsym_upper")(n, ptr); // the accumulator keeps only the upper triangle current
    const view = () => rt.f64(ptr, n * n); // re-taken after any allocation
    checkFinite({ rows: n, cols: n, data: view() }, "cholesky");
    const B = CHOLESKY_UPPER_BAND;
    let band: Float64Array | null = null, dirty = false;
    const restore = () => {
      if (!dirty) return;
      const a = view();
      for (let i = 0; i < n; i++) {
        const w = Math.min(B, n - i);
        a.set(band!.subarray(i * B, i * B + w), i * n + i);
      }
      rt.fn("dsym_upper")(n, ptr);
      dirty = false;
    };
    const retries = (opts.damping ?? "auto") === "auto" && (opts.maxTries ?? 7) > 1;
    const diag = view();
    const { shift, tries } = dampedCholesky(
      n,
      (i) => diag[i * n + i],
      opts,
      (shift, tol) => {
        restore();
        if (retries && !band) {
          band = new Float64Array(n * B);
          const a = view();
          for (let i = 0; i < n; i++) {
            const w = Math.min(B, n - i);
            band.set(a.subarray(i * n + i, i * n + i + w), i * B);
          }
        }
        const r = rt.scoped((s) => factorAt(rt, s, ptr, n, shift, tol));
        if (!r.factor) dirty = true;
        return r;
      },
      () => {
        restore();
        return eigh({ rows: n, cols: n, data: rt.getF64(ptr, n * n) }).values[n - 1];
      },
    );
    return new ResidentCholesky(rt, ptr, n, shift, tries);
  } catch (e) {
    rt.free(ptr);
    throw e;
  }
}
