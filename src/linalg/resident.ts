/**
 * A matrix kept in WebAssembly memory across many products, for algorithms that multiply one large matrix
 * by many thin ones (the range finder of `svd_truncated.ts`: 2q + 2 products with A). {@link matmul} copies
 * both operands into wasm memory on every call; for A: 4096×4096 float64 that copy (128 MB) costs as much
 * as a tenth of the product itself, and the conversion to float32 more. Here A is converted and copied once.
 *
 * Without the wasm backend (or with `backend: "ts"`) the matrix stays on the host and {@link matmul} /
 * {@link matmul64} run each product, so callers write one code path.
 *
 * @module
 */
import { OptionError, ShapeError } from "../errors.ts";
import { activeBackend, activePool } from "./backend.ts";
import { matmul, matmul64 } from "./gemm.ts";
import type { FloatArray, Matrix, Matrix64 } from "./matrix.ts";
import { gemmWasmAt } from "./wasm/gemm_wasm.ts";
import { type WasmRuntime, wasmRuntime } from "./wasm/runtime.ts";

/** Element type of a {@link ResidentMatrix}: `"f32"` (SGEMM products) or `"f64"` (DGEMM products). */
export type ResidentPrecision = "f32" | "f64";

/** The host array type of a precision. */
export type HostArray<P extends ResidentPrecision> = P extends "f32" ? Float32Array : Float64Array;

/**
 * `a` converted once to `precision` and held (in wasm memory when the wasm backend is active) for repeated
 * products op(A)·X. Release the memory with {@link ResidentMatrix.dispose} (or `using`); a disposed matrix
 * throws on use.
 *
 * @example
 * ```ts
 * import { ResidentMatrix } from "./resident.ts";
 * import { matrix } from "./matrix.ts";
 * const a = new ResidentMatrix(matrix(2, 2, new Float32Array([1, 2, 3, 4])), "f32");
 * try {
 *   const y = a.mul(matrix(2, 1, new Float32Array([1, 1]))); // [3, 7]
 *   const z = a.mul(matrix(2, 1, new Float32Array([1, 1])), true); // Aᵀ·x = [4, 6]
 * } finally {
 *   a.dispose();
 * }
 * ```
 */
export class ResidentMatrix<P extends ResidentPrecision = ResidentPrecision> {
  /** Rows of A. */
  readonly rows: number;
  /** Columns of A. */
  readonly cols: number;
  /** Element type of A and of every product. */
  readonly precision: P;
  #rt: WasmRuntime | null;
  #ptr = 0;
  #host: Matrix<HostArray<P>> | null = null;
  #disposed = false;

  /** Convert `a` (float32 or float64) to `precision` and place it; `a` itself is not kept or modified. */
  constructor(a: Matrix<FloatArray>, precision: P) {
    if (precision !== "f32" && precision !== "f64") {
      throw new OptionError(`ResidentMatrix: precision must be "f32" or "f64", got ${String(precision)}`);
    }
    if (a.data.length !== a.rows * a.cols) {
      throw new ShapeError(`ResidentMatrix: ${a.rows}×${a.cols} matrix has ${a.data.length} values`);
    }
    this.rows = a.rows;
    this.cols = a.cols;
    this.precision = precision;
    const rt = wasmRuntime();
    this.#rt = rt !== null && activeBackend() === "wasm" ? rt : null;
    const len = a.rows * a.cols, f64 = precision === "f64";
    if (this.#rt) {
      this.#ptr = this.#rt.alloc(len * (f64 ? 8 : 4));
      // TypedArray.set converts element-wise in native code (f64 → f32 rounds to nearest).
      (f64 ? this.#rt.f64(this.#ptr, len) : this.#rt.f32(this.#ptr, len)).set(a.data);
    } else {
      const same = f64 ? a.data instanceof Float64Array : a.data instanceof Float32Array;
      const data = same ? a.data : f64 ? new Float64Array(a.data) : new Float32Array(a.data);
      this.#host = { rows: a.rows, cols: a.cols, data: data as HostArray<P> };
    }
  }

  /** Whether A lives in wasm memory (else products run through {@link matmul} on the host copy). */
  get resident(): boolean {
    return this.#rt !== null;
  }

  /**
   * op(A)·X with op(A) = A (`transA` false: X is cols×l, result rows×l) or Aᵀ (X is rows×l, result
   * cols×l), in this matrix's precision. X must have that precision's element type.
   */
  mul(x: Matrix<HostArray<P>>, transA = false): Matrix<HostArray<P>> {
    if (this.#disposed) throw new Error("ResidentMatrix.mul: the matrix was disposed");
    const f64 = this.precision === "f64";
    if (f64 ? !(x.data instanceof Float64Array) : !(x.data instanceof Float32Array)) {
      throw new ShapeError(`ResidentMatrix.mul: X must be ${f64 ? "float64" : "float32"} like A`);
    }
    const inner = transA ? this.rows : this.cols, outRows = transA ? this.cols : this.rows;
    if (x.rows !== inner) {
      throw new ShapeError(
        `ResidentMatrix.mul: op(A) is ${outRows}×${inner} but X is ${x.rows}×${x.cols}`,
      );
    }
    const l = x.cols;
    if (this.#host) {
      const h = this.#host;
      return (f64
        ? matmul64(h as Matrix64, x as Matrix64, { transA })
        : matmul(h as Matrix, x as Matrix, { transA })) as Matrix<
          HostArray<P>
        >;
    }
    const rt = this.#rt!;
    const out = f64 ? new Float64Array(outRows * l) : new Float32Array(outRows * l);
    if (outRows === 0 || l === 0) return { rows: outRows, cols: l, data: out as HostArray<P> };
    rt.scoped((s) => {
      const px = f64 ? s.putF64(x.data) : s.putF32(x.data);
      const pc = s.alloc(outRows * l * (f64 ? 8 : 4));
      gemmWasmAt(rt, s, f64, {
        transA,
        transB: false,
        m: outRows,
        n: l,
        k: inner,
        alpha: 1,
        a: this.#ptr,
        b: px,
        beta: 0,
        c: pc,
      }, rt.shared ? activePool() : null);
      out.set(f64 ? rt.f64(pc, outRows * l) : rt.f32(pc, outRows * l));
    });
    return { rows: outRows, cols: l, data: out as HostArray<P> };
  }

  /** Free the wasm memory (idempotent). */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#rt && this.#ptr) this.#rt.free(this.#ptr);
    this.#ptr = 0;
    this.#host = null;
  }

  /** `using a = new ResidentMatrix(…)` disposes at scope end. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
