/**
 * A Gram accumulator kept in WebAssembly memory between batches: G ← keep·G + scale·XᵀX in the
 * "float32-blocks" precision, with G (n×n float64) resident in wasm memory until {@link ResidentGram.take}
 * copies it out once.
 *
 * Why: `gramAccumulate` copies G into wasm memory and back for every batch, so while a calibration pass runs
 * G exists twice, once on the host and once in wasm memory, which never shrinks. For a LLaMA block's
 * down_proj input (n = f = 2816) that is 63 MB of each; a host copy of every Gram matrix of the block (87 MB
 * at d = 1024) was alive through the whole pass, beside its temporaries. Resident, the host holds none until
 * the statistics are used, and the wasm region is reused by what comes next (the Cholesky factorisation, the
 * QR of W·L). The arithmetic is {@link sgramAccumulateAt}'s, the same bits as `gramAccumulate`.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { activeBackend, activePool } from "./backend.ts";
import { sgramAccumulateAt } from "./gram.ts";
import type { Matrix, Matrix64 } from "./matrix.ts";
import { type WasmRuntime, wasmRuntime } from "./wasm/runtime.ts";

/** Frees the wasm region of an accumulator collected without {@link ResidentGram.take} (an error path). */
const orphans = typeof FinalizationRegistry === "function"
  ? new FinalizationRegistry<{ rt: WasmRuntime; ptr: number }>(({ rt, ptr }) => rt.free(ptr))
  : undefined;

/**
 * G (n×n float64, starting at zero) in wasm memory, accumulated batch by batch. Create with
 * {@link ResidentGram.create}, which returns null where the wasm kernels are not the active backend.
 *
 * @example
 * ```ts
 * import { ResidentGram } from "./gram_resident.ts";
 * import { matrix } from "./matrix.ts";
 * const r = ResidentGram.create(2);
 * if (r) {
 *   r.accumulate(matrix(1, 2, new Float32Array([1, 2])), 1, 1);
 *   r.take().data; // [1, 2, 2, 4]
 * }
 * ```
 */
export class ResidentGram {
  /** Order of G. */
  readonly n: number;
  #rt: WasmRuntime;
  #ptr: number;
  #token = {};

  private constructor(rt: WasmRuntime, n: number) {
    this.n = n;
    this.#rt = rt;
    this.#ptr = rt.alloc(8 * n * n);
    rt.f64(this.#ptr, n * n).fill(0); // alloc's contents are undefined; 0·NaN would stay NaN
    orphans?.register(this, { rt, ptr: this.#ptr }, this.#token);
  }

  /** A zero n×n accumulator in wasm memory, or null without the wasm backend and its `sgram_acc` kernel. */
  static create(n: number): ResidentGram | null {
    if (!Number.isInteger(n) || n < 1) throw new ShapeError(`ResidentGram: invalid order ${n}`);
    const rt = wasmRuntime();
    if (!rt || activeBackend() !== "wasm" || !rt.has("sgram_acc")) return null;
    return new ResidentGram(rt, n);
  }

  /** Whether {@link ResidentGram.take} has been called (then the accumulator is empty and unusable). */
  get taken(): boolean {
    return this.#ptr === 0;
  }

  /**
   * G ← keep·G + scale·XᵀX for `x: tokens×n` float32 (values checked finite by the caller, scale and keep
   * finite). Threads of the active pool split the columns, as in `gramAccumulate`.
   */
  accumulate(x: Matrix<Float32Array>, scale: number, keep: number): void {
    if (this.#ptr === 0) throw new Error(`ResidentGram.accumulate: the accumulator was already taken`);
    if (x.cols !== this.n) {
      throw new ShapeError(`ResidentGram.accumulate: x is ${x.rows}×${x.cols}, G is ${this.n}×${this.n}`);
    }
    if (x.rows === 0 || scale === 0) {
      if (keep !== 1) this.#rt.fn("dscale_upper")(this.n, this.#ptr, keep);
      return;
    }
    sgramAccumulateAt(this.#rt, this.#ptr, x.data, x.rows, this.n, scale, keep, activePool());
  }

  /**
   * Hand the wasm region over (to `choleskyResident`, which factors G where it is): the caller owns `ptr`
   * and must free it; only the upper triangle of G is current (mirror it with `dsym_upper`). This
   * accumulator is left taken.
   */
  transfer(): { rt: WasmRuntime; ptr: number; n: number } {
    if (this.#ptr === 0) throw new Error(`ResidentGram.transfer: the accumulator was already taken`);
    const ptr = this.#ptr;
    this.#ptr = 0;
    orphans?.unregister(this.#token);
    return { rt: this.#rt, ptr, n: this.n };
  }

  /** G, mirrored to exact symmetry, copied to the host; the wasm region is freed. */
  take(): Matrix64 {
    if (this.#ptr === 0) throw new Error(`ResidentGram.take: the accumulator was already taken`);
    const n = this.n, rt = this.#rt, ptr = this.#ptr;
    rt.fn("dsym_upper")(n, ptr);
    const data = new Float64Array(n * n);
    data.set(rt.f64(ptr, n * n));
    this.#ptr = 0;
    orphans?.unregister(this.#token);
    rt.free(ptr);
    return { rows: n, cols: n, data };
  }
}
