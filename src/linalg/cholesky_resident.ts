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

  /** `out` ← X·L for `x: rows×n` (float64, host), as `gemmInto(x, L, out)` computes it. */
  mulInto(x: Matrix64, out: Matrix64): void {
    const n = this.n, rows = x.rows, rt = this.#rt;
    if (this.#ptr === 0) throw new Error(`ResidentCholesky.mulInto: the factor was disposed`);
    if (x.cols !== n || out.rows !== rows || out.cols !== n) {
      throw new ShapeError(
        `ResidentCholesky.mulInto: X is ${x.rows}×${x.cols}, out ${out.rows}×${out.cols}, L is ${n}×${n}`,
      );
    }
    if (rows === 0) return;
    rt.scoped((s) => {
      const pa = s.putF64(x.data);
      const pc = s.allocF64(rows * n);
      gemmWasmAt(rt, s, true, {
        transA: false,
        transB: false,
        m: rows,
        n,
        k: n,
        alpha: 1,
        a: pa,
        b: this.#ptr,
        beta: 0,
        c: pc,
      }, activePool());
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
