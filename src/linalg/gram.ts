/**
 * Gram accumulation for calibration statistics: G += scale·XᵀX in float64, for X given one batch of
 * token activations at a time (`x: tokens×n`).
 *
 * @module
 */
import { NumericError, ShapeError } from "../errors.ts";
import { checkFinite } from "./factor_kernels.ts";
import type { FloatArray, Matrix, Matrix64 } from "./matrix.ts";
import { activeBackend, activeGpu, activePool, gpuWants } from "./backend.ts";
import { type WasmRuntime, wasmRuntime } from "./wasm/runtime.ts";
import type { Job, ThreadPool } from "./threads/pool.ts";
import { gemmInto } from "./gemm.ts";

/** Tokens per WASM chunk: bounds the float64 copy of x (n = 4096 → 64 MiB). */
const CHUNK = 2048;

/** Tokens per float32 partial product in the "float32-blocks" precision: short sums, then float64. */
const F32_BLOCK = 256;

/**
 * Tokens per WASM chunk in the "float32-blocks" precision: one kernel block (the kernel's blocks restart at
 * each chunk, so any multiple of F32_BLOCK gives the same sums). Small, because wasm memory never shrinks:
 * G (n×n float64) plus this chunk is what it must hold, and for down_proj's input (n = 2816) 2048 tokens
 * would add 22 MiB to the 60 MiB of G, for good.
 */
const F32_CHUNK = F32_BLOCK;

/** Options of {@link gramAccumulate}. */
export interface GramOptions {
  /**
   * "float64" (default): every product and sum in float64. "float32-blocks": for float32 input, XᵀX of each
   * run of 256 tokens in float32 SGEMM (the precision of SVD-LLM's reference, which sums whole 2048-token
   * samples in float32), added into the float64 accumulator — several times faster, relative error about
   * 256·2⁻²⁴ per block at worst.
   */
  precision?: "float64" | "float32-blocks";
  /**
   * Scale of G's prior values (default 1): G ← keep·G + scale·XᵀX, so a running mean rescales in the same
   * pass instead of a separate sweep over n² values.
   */
  keep?: number;
  /**
   * The caller has already checked that every value of x is finite (an observer's `checkBatch` does, with
   * the layer's name in its error): skip the second scan. Default false.
   */
  checkedFinite?: boolean;
}

/** Below this many multiply-adds (tokens·n²/2) one thread accumulates; above, the pool's threads share G. */
const GRAM_THREAD_MIN_WORK = 1 << 22;

/**
 * G ← keep·G + scale·XᵀX, accumulated in float64. Shapes: `g: n×n` (symmetric: G stays exactly symmetric),
 * `x: tokens×n` (float32 or float64). Uses the WASM kernels when loaded: for "float32-blocks" a triangular
 * kernel (the upper triangle only, half the flops, float32 sums per 256 tokens added into float64, then
 * mirrored), otherwise DGEMM. Throws ShapeError on mismatched shapes and NumericError on non-finite `x`,
 * `scale` or `keep`.
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
  const keep = opts.keep ?? 1;
  if (!Number.isFinite(keep)) throw new NumericError(`gramAccumulate: keep ${keep} is not finite`);
  if (!opts.checkedFinite) checkFinite(x, "gramAccumulate");
  if (n === 0) return;
  const rt = wasmRuntime();
  const wasm = rt && activeBackend() === "wasm";
  if (opts.precision === "float32-blocks" && x.data instanceof Float32Array && t > 0 && scale !== 0) {
    if (wasm && rt.has("sgram_acc")) {
      gramFloat32BlocksWasm(rt, g.data, x.data, t, n, scale, keep, activePool());
      return;
    }
    scaleInPlace(g.data, keep);
    gramFloat32Blocks(g.data, x.data, t, n, scale);
    return;
  }
  scaleInPlace(g.data, keep);
  if (t === 0 || scale === 0) return;
  if (wasm && rt.has("dgemm") && n >= 32) {
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

function scaleInPlace(g: Float64Array, keep: number): void {
  if (keep !== 1) { for (let i = 0; i < g.length; i++) g[i] *= keep; }
}

/**
 * Column ranges [c0, c1) of G's upper triangle with equal areas (∝ c1² − c0²), in whole micro-tiles (8
 * columns): one per thread, each writing only its own columns.
 */
export function gramColumnSplit(n: number, parts: number): [number, number][] {
  const out: [number, number][] = [];
  let c0 = 0;
  for (let p = 1; p <= parts && c0 < n; p++) {
    const c1 = p === parts ? n : Math.min(n, Math.ceil(n * Math.sqrt(p / parts) / 8) * 8);
    if (c1 > c0) out.push([c0, c1]);
    c0 = c1;
  }
  return out;
}

/** The WASM "float32-blocks" path: G copied in, {@link sgramAccumulateAt}, mirrored, copied out. */
function gramFloat32BlocksWasm(
  rt: WasmRuntime,
  g: Float64Array,
  x: Float32Array,
  t: number,
  n: number,
  scale: number,
  keep: number,
  pool: ThreadPool | null,
): void {
  rt.scoped((s) => {
    const pg = s.putF64(g);
    sgramAccumulateAt(rt, pg, x, t, n, scale, keep, pool);
    rt.fn("dsym_upper")(n, pg);
    g.set(rt.f64(pg, n * n));
  });
}

/**
 * The upper triangle of the n×n float64 G at wasm offset `pg` ← keep·G + scale·XᵀX in the "float32-blocks"
 * precision: `sgram_acc` over chunks of x copied in (threads split the columns). The lower triangle is
 * neither read nor written: mirror it (`dsym_upper`) before use. Shared by {@link gramAccumulate} (G copied
 * in and out per call) and `ResidentGram` (G kept in wasm memory), so both give the same bits.
 */
export function sgramAccumulateAt(
  rt: WasmRuntime,
  pg: number,
  x: Float32Array,
  t: number,
  n: number,
  scale: number,
  keep: number,
  pool: ThreadPool | null,
): void {
  if (gpuWants(t * n * n) && activeGpu()!.fits(Math.max(n * n, F32_BLOCK * n))) {
    // The GPU: the same float32 partials per 256 tokens, summed in float64 in the GPU worker, added here.
    if (keep !== 1) rt.fn("dscale_upper")(n, pg, keep);
    const sum = activeGpu()!.gram(x, t, n);
    const g = rt.f64(pg, n * n);
    for (let i = 0; i < n; i++) {
      for (let j = i, ij = i * n + i; j < n; j++, ij++) g[ij] += scale * sum[ij];
    }
    return;
  }
  rt.scoped((s) => {
    if (keep !== 1) rt.fn("dscale_upper")(n, pg, keep);
    const rows = Math.min(t, F32_CHUNK);
    const px = s.allocF32(rows * n);
    const threads = pool && Math.min(t, CHUNK) * n * n / 2 >= GRAM_THREAD_MIN_WORK ? pool.size : 1;
    const workLen: number = rt.fn("sgram_work_size")();
    const split = gramColumnSplit(n, threads);
    const works = split.map(() => s.allocF32(workLen));
    const acc = rt.fn("sgram_acc");
    for (let t0 = 0; t0 < t; t0 += F32_CHUNK) {
      const tc = Math.min(F32_CHUNK, t - t0);
      rt.f32(px, tc * n).set(x.subarray(t0 * n, (t0 + tc) * n));
      const jobs: Job[] = split.map(([c0, c1], i) => ({
        fn: "sgram_acc",
        args: [n, tc, px, n, scale, pg, c0, c1, works[i]],
      }));
      if (jobs.length > 1 && pool) pool.run(jobs);
      else for (const j of jobs) acc(...j.args);
    }
  });
}

/** The TypeScript "float32-blocks" path: float32 GEMM per 256 tokens, symmetrised into float64. */
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
