/**
 * Gram accumulation for calibration statistics: G += scale·XᵀX in float64, for X given one batch of
 * token activations at a time (`x: tokens×n`).
 *
 * @module
 */
import { NumericError, ShapeError } from "../errors.ts";
import { checkFinite } from "./factor_kernels.ts";
import type { FloatArray, Matrix, Matrix64 } from "./matrix.ts";
import { activeBackend } from "./backend.ts";
import { wasmRuntime } from "./wasm/runtime.ts";
import { gemmInto } from "./gemm.ts";

/** Tokens per WASM chunk: bounds the float64 copy of x (n = 4096 → 64 MiB). */
const CHUNK = 2048;

/** Tokens per float32 partial product in the "float32-blocks" precision: short sums, then float64. */
const F32_BLOCK = 256;

/** Options of {@link gramAccumulate}. */
export interface GramOptions {
  /**
   * "float64" (default): every product and sum in float64. "float32-blocks": for float32 input, XᵀX of each
   * run of 256 tokens in float32 SGEMM (the precision of SVD-LLM's reference, which sums whole 2048-token
   * samples in float32), added into the float64 accumulator — several times faster, relative error about
   * 256·2⁻²⁴ per block at worst.
   */
  precision?: "float64" | "float32-blocks";
}

/**
 * G += scale·XᵀX, accumulated in float64. Shapes: `g: n×n` (symmetric; both triangles are updated),
 * `x: tokens×n` (float32 or float64). Uses the WASM DGEMM when loaded.
 * Throws ShapeError on mismatched shapes and NumericError on non-finite `x` or `scale`.
 *
 * @example
 * ```ts
 * import { gramAccumulate } from "./gram.ts";
 * import { matrix, matrix64 } from "./matrix.ts";
 * const g = matrix64(2, 2);
 * gramAccumulate(g, matrix(1, 2, new Float32Array([1, 2]))); // g = [[1, 2], [2, 4]]
 * ```
 */
export function gramAccumulate(
  g: Matrix64,
  x: Matrix<FloatArray>,
  scale = 1,
  opts: GramOptions = {},
): void {
  const n = x.cols, t = x.rows;
  if (g.rows !== n || g.cols !== n) {
    throw new ShapeError(`gramAccumulate: g is ${g.rows}×${g.cols}, x is ${t}×${n}: g must be ${n}×${n}`);
  }
  if (!Number.isFinite(scale)) throw new NumericError(`gramAccumulate: scale ${scale} is not finite`);
  checkFinite(x, "gramAccumulate");
  if (t === 0 || n === 0 || scale === 0) return;
  if (opts.precision === "float32-blocks" && x.data instanceof Float32Array) {
    gramFloat32Blocks(g.data, x.data, t, n, scale);
    return;
  }
  const rt = wasmRuntime();
  if (rt && activeBackend() === "wasm" && rt.has("dgemm") && n >= 32) {
    rt.scoped((s) => {
      const pg = s.putF64(g.data);
      const rows = Math.min(t, CHUNK);
      const px = s.allocF64(rows * n);
      const work = s.allocF64(rt.fn("dgemm_work_size")());
      const dgemm = rt.fn("dgemm");
      for (let t0 = 0; t0 < t; t0 += CHUNK) {
        const tc = Math.min(CHUNK, t - t0);
        rt.f64(px, tc * n).set(x.data.subarray(t0 * n, (t0 + tc) * n));
        dgemm(1, 0, n, n, tc, scale, px, n, px, n, 1, pg, n, work);
      }
      g.data.set(rt.f64(pg, n * n));
    });
    return;
  }
  gramTs(g.data, x.data, t, n, scale);
}

function gramFloat32Blocks(g: Float64Array, x: Float32Array, t: number, n: number, scale: number): void {
  const c: Matrix = { rows: n, cols: n, data: new Float32Array(n * n) };
  for (let t0 = 0; t0 < t; t0 += F32_BLOCK) {
    const rows = Math.min(F32_BLOCK, t - t0);
    const xc: Matrix = { rows, cols: n, data: x.subarray(t0 * n, (t0 + rows) * n) };
    gemmInto(xc, xc, c, { transA: true });
    const d = c.data;
    // Symmetrise while adding, so G stays exactly symmetric whatever order the kernel summed in.
    for (let i = 0; i < n; i++) {
      const ri = i * n;
      g[ri + i] += scale * d[ri + i];
      for (let j = i + 1; j < n; j++) {
        const v = scale * 0.5 * (d[ri + j] + d[j * n + i]);
        g[ri + j] += v;
        g[j * n + i] += v;
      }
    }
  }
}

function gramTs(g: Float64Array, x: FloatArray, t: number, n: number, scale: number): void {
  // Upper triangle, token-blocked so a block of x rows stays in cache, then mirrored.
  const B = 32;
  for (let t0 = 0; t0 < t; t0 += B) {
    const t1 = Math.min(t, t0 + B);
    for (let i = 0; i < n; i++) {
      const gi = i * n;
      for (let r = t0; r < t1; r++) {
        const xr = r * n;
        const v = scale * x[xr + i];
        if (v === 0) continue;
        for (let j = i; j < n; j++) g[gi + j] += v * x[xr + j];
      }
    }
  }
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) g[j * n + i] = g[i * n + j];
}
