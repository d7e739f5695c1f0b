/**
 * GEMM through the WebAssembly kernels (`sgemm`/`dgemm` in `wasm/gemm.c`): copy operands into wasm memory,
 * run on one thread or split across a {@link ThreadPool}, copy the result out.
 *
 * @module
 */
import type { Job, ThreadPool } from "../threads/pool.ts";
import type { WasmRuntime, WasmScope } from "./runtime.ts";

/** The shape and scales of a GEMM: C (m×n) = alpha·op(A)·op(B) + beta·C, every matrix dense row-major. */
export interface GemmShape {
  /** op(A) = Aᵀ (A stored k×m). */
  transA: boolean;
  /** op(B) = Bᵀ (B stored n×k). */
  transB: boolean;
  /** Rows of C. */
  m: number;
  /** Columns of C. */
  n: number;
  /** Inner dimension. */
  k: number;
  /** Scale of the product. */
  alpha: number;
  /** Scale of C's prior values; 0 overwrites C without reading it. */
  beta: number;
}

/** A GEMM problem on arrays in the JavaScript heap. */
export interface GemmProblem<T extends Float32Array | Float64Array> extends GemmShape {
  /** A's values (m×k, or k×m when transposed). */
  a: T;
  /** B's values (k×n, or n×k when transposed). */
  b: T;
  /** C's values (m×n); read when beta ≠ 0, written always. */
  c: T;
}

/** Below this many multiply-adds one thread is faster than waking workers. */
export const THREAD_MIN_WORK = 1 << 22;

/**
 * Run one GEMM in wasm, writing `p.c`. With a pool and enough work, C is split into row or column stripes
 * (whichever dimension is longer), one per thread, each thread packing its own operands into its own scratch.
 */
export function gemmWasm<T extends Float32Array | Float64Array>(
  rt: WasmRuntime,
  p: GemmProblem<T>,
  pool: ThreadPool | null = null,
): void {
  const f64 = p.a instanceof Float64Array;
  const es = f64 ? 8 : 4;
  const { m, n } = p;
  if (m === 0 || n === 0) return;
  rt.scoped((s) => {
    const pa = f64 ? s.putF64(p.a) : s.putF32(p.a);
    const pb = f64 ? s.putF64(p.b) : s.putF32(p.b);
    const pc = s.alloc(m * n * es);
    if (p.beta !== 0) (f64 ? rt.f64(pc, m * n) : rt.f32(pc, m * n)).set(p.c);
    gemmWasmAt(rt, s, f64, { ...p, a: pa, b: pb, c: pc }, pool);
    p.c.set(f64 ? rt.f64(pc, m * n) : rt.f32(pc, m * n));
  });
}

/** A GEMM problem on operands already in wasm memory: byte offsets instead of arrays, row-major. */
export interface GemmAt extends GemmShape {
  /** Byte offset of A. */
  a: number;
  /** Byte offset of B. */
  b: number;
  /** Byte offset of C (m×n). */
  c: number;
  /** Leading dimensions in elements (default: dense, i.e. A's, B's and C's stored row lengths). */
  lda?: number;
  /** See `lda`. */
  ldb?: number;
  /** See `lda`. */
  ldc?: number;
}

/**
 * Run `sgemm` (or `dgemm` when `f64`) on operands that already live in wasm memory, e.g. a matrix kept
 * resident across many products. Scratch comes from the scope `scratch`, or is given: byte offsets of
 * `<fn>_work_size` elements each, one per part (for callers running many products, which allocate them
 * once; no more parts than offsets). With a pool and enough work, C is split into row or column stripes
 * (whichever dimension is longer), one per thread; every entry is summed in the same order as on one thread.
 */
export function gemmWasmAt(
  rt: WasmRuntime,
  scratch: WasmScope | readonly number[],
  f64: boolean,
  p: GemmAt,
  pool: ThreadPool | null = null,
): void {
  const works = Array.isArray(scratch) ? scratch as readonly number[] : undefined;
  const es = f64 ? 8 : 4;
  const fn = f64 ? "dgemm" : "sgemm";
  const { m, n, k, transA: ta, transB: tb } = p;
  if (m === 0 || n === 0) return;
  const lda = p.lda ?? (ta ? m : k), ldb = p.ldb ?? (tb ? k : n), ldc = p.ldc ?? n;
  const workLen: number = rt.fn(`${fn}_work_size`)();
  const threads = pool && m * n * k >= THREAD_MIN_WORK ? Math.min(pool.size, works?.length ?? pool.size) : 1;
  const jobs: Job[] = [];
  // Split the longer side of C in stripes that are whole micro-tiles (4 rows, 8 columns).
  const byRows = m >= n;
  const len = byRows ? m : n, unit = byRows ? 4 : 8;
  const parts = Math.max(1, Math.min(threads, Math.ceil(len / unit)));
  const step = Math.ceil(len / parts / unit) * unit;
  for (let s0 = 0, q = 0; s0 < len; s0 += step, q++) {
    const cnt = Math.min(step, len - s0);
    const work = works ? works[q] : (scratch as WasmScope).alloc(workLen * es);
    let aOff = p.a, bOff = p.b, cOff = p.c, mm = m, nn = n;
    if (byRows) {
      mm = cnt;
      aOff += (ta ? s0 : s0 * lda) * es;
      cOff += s0 * ldc * es;
    } else {
      nn = cnt;
      bOff += (tb ? s0 * ldb : s0) * es;
      cOff += s0 * es;
    }
    jobs.push({
      fn,
      args: [ta ? 1 : 0, tb ? 1 : 0, mm, nn, k, p.alpha, aOff, lda, bOff, ldb, p.beta, cOff, ldc, work],
    });
  }
  if (jobs.length === 1 || !pool) {
    for (const j of jobs) rt.fn(j.fn)(...j.args);
  } else pool.run(jobs);
}
