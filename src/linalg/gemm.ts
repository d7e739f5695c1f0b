/**
 * General matrix products C = alpha·op(A)·op(B) + beta·C, float32 ({@link matmul}) and float64
 * ({@link matmul64}), and in place into a preallocated C ({@link gemmInto}).
 *
 * Dispatch: float32 products of at least `gpuMinWork` multiply-adds on the GPU when `initLinalg({ gpu: true })`
 * started one (same float32 accumulation as the wasm kernel, another summation order); else the WebAssembly
 * SIMD kernels (loaded at import, see `backend.ts`) for every product but the tiniest, split over worker threads when `initLinalg({ threads })` started some and the product is large;
 * the plain-TypeScript loops here otherwise (no WebAssembly, `backend: "ts"`, or fewer than
 * {@link SMALL_WORK} multiply-adds, where copying into wasm memory costs more than it saves).
 *
 * Accuracy: the float32 wasm kernel accumulates in float32 (error ~ k·ε₃₂·max|a|·max|b| per entry); the
 * TypeScript path accumulates in float64. Non-finite inputs are not checked here (hot path): NaN and ±Inf
 * propagate as IEEE arithmetic does, except that with beta = 0 the prior C is never read.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import type { FloatArray, Matrix, Matrix64 } from "./matrix.ts";
import { activeBackend, activeGpu, activePool, gpuWants } from "./backend.ts";
import { gemmWasm } from "./wasm/gemm_wasm.ts";
import { wasmRuntime } from "./wasm/runtime.ts";
import { gpuInfo, matmulGpu } from "./webgpu/gemm_gpu.ts";

/** Options of {@link matmul} and {@link matmul64}. */
export interface MatmulOptions {
  /** Use Aᵀ instead of A. */
  transA?: boolean;
  /** Use Bᵀ instead of B (the usual case for y = x·Wᵀ with W stored out×in). */
  transB?: boolean;
  /** Force a backend for this call (default: the active one, see `initLinalg`). */
  backend?: "wasm" | "ts";
}

/** Options of {@link gemmInto}. */
export interface GemmOptions extends MatmulOptions {
  /** Scale of the product (default 1). */
  alpha?: number;
  /** Scale of C's prior values (default 0: C is overwritten and never read). */
  beta?: number;
}

/** Options of {@link matmulAsync}. */
export interface MatmulAsyncOptions {
  /** Use Aᵀ instead of A. */
  transA?: boolean;
  /** Use Bᵀ instead of B. */
  transB?: boolean;
  /** `"webgpu"` forces the GPU (rejects without one); default: GPU only for large products on a hardware adapter. */
  backend?: "wasm" | "ts" | "webgpu";
}

/** {@link matmulAsync} sends products with at least this many multiply-adds to a hardware GPU. */
export const GPU_MIN_WORK = 1 << 27;

/**
 * C = op(A)·op(B) in float32, on the GPU when one is present (not a software adapter) and the product is
 * large enough to repay the transfers ({@link GPU_MIN_WORK}); otherwise the same as {@link matmul}.
 */
export async function matmulAsync(a: Matrix, b: Matrix, opts: MatmulAsyncOptions = {}): Promise<Matrix> {
  const [m, n, k] = shapeOf("matmulAsync", a, b, opts);
  const { backend, ...rest } = opts;
  if (backend === "webgpu") return await matmulGpu(a, b, rest);
  if (backend === undefined && m * n * k >= GPU_MIN_WORK) {
    const info = await gpuInfo();
    if (info && !info.fallback) return await matmulGpu(a, b, rest);
  }
  return matmul(a, b, { ...rest, backend });
}

/** Products with fewer multiply-adds than this run in TypeScript (wasm call and copies cost more). */
export const SMALL_WORK = 512;

/**
 * C = op(A)·op(B) in float32. Shapes: op(A) m×k, op(B) k×n → C m×n.
 *
 * @example
 * ```ts
 * import { matmul } from "./gemm.ts";
 * import { matrix } from "./matrix.ts";
 * const x = matrix(1, 2, new Float32Array([1, 2]));      // tokens×in
 * const w = matrix(3, 2, new Float32Array([1, 0, 0, 1, 1, 1])); // out×in
 * const y = matmul(x, w, { transB: true });             // 1×3: [1, 2, 3]
 * ```
 */
export function matmul(a: Matrix, b: Matrix, opts: MatmulOptions = {}): Matrix {
  const [m, n] = shapeOf("matmul", a, b, opts);
  const c: Matrix = { rows: m, cols: n, data: new Float32Array(m * n) };
  return gemmInto(a, b, c, opts);
}

/**
 * C = op(A)·op(B) in float64. Shapes: op(A) m×k, op(B) k×n → C m×n.
 *
 * @example
 * ```ts
 * import { matmul64 } from "./gemm.ts";
 * import { matrix64 } from "./matrix.ts";
 * const x = matrix64(2, 2, new Float64Array([1, 2, 3, 4]));
 * const g = matmul64(x, x, { transA: true }); // Gram xᵀx = [10, 14, 14, 20]
 * ```
 */
export function matmul64(a: Matrix64, b: Matrix64, opts: MatmulOptions = {}): Matrix64 {
  const [m, n] = shapeOf("matmul64", a, b, opts);
  const c: Matrix64 = { rows: m, cols: n, data: new Float64Array(m * n) };
  return gemmInto(a, b, c, opts);
}

/**
 * In place: C ← alpha·op(A)·op(B) + beta·C, all three of one element type (float32 or float64); returns C.
 * With beta = 0 (default) C's prior values are ignored, so a reused buffer need not be cleared.
 *
 * @example
 * ```ts
 * import { gemmInto } from "./gemm.ts";
 * import { matrix64 } from "./matrix.ts";
 * const a = matrix64(2, 2, new Float64Array([1, 2, 3, 4]));
 * const c = matrix64(2, 2, new Float64Array([1, 1, 1, 1]));
 * gemmInto(a, a, c, { transB: true, alpha: -1, beta: 1 }); // c = 1 − a·aᵀ
 * ```
 */
export function gemmInto<T extends FloatArray>(
  a: Matrix<T>,
  b: Matrix<T>,
  c: Matrix<T>,
  opts: GemmOptions = {},
): Matrix<T> {
  const [m, n, k] = shapeOf("gemmInto", a, b, opts);
  if (c.rows !== m || c.cols !== n) {
    throw new ShapeError(`gemmInto: C is ${c.rows}×${c.cols} but op(A)·op(B) is ${m}×${n}`);
  }
  const f64 = c.data instanceof Float64Array;
  if ((a.data instanceof Float64Array) !== f64 || (b.data instanceof Float64Array) !== f64) {
    throw new ShapeError("gemmInto: A, B and C must share one element type (all float32 or all float64)");
  }
  const alpha = opts.alpha ?? 1, beta = opts.beta ?? 0;
  const transA = !!opts.transA, transB = !!opts.transB;
  if (!f64 && opts.backend === undefined && gpuWants(m * n * k)) {
    const gpu = activeGpu()!;
    if (gpu.fits(Math.max(m * k, k * n, m * n))) {
      gemmGpu(gpu, transA, transB, m, n, k, alpha, a.data as Float32Array, b.data as Float32Array, beta, c);
      return c;
    }
  }
  const rt = wasmRuntime();
  // activeBackend() first: it warns once when WebAssembly failed and products fall back to TypeScript.
  const want = opts.backend ?? (m * n * k < SMALL_WORK ? "ts" : activeBackend());
  const useWasm = rt !== null && want === "wasm";
  if (useWasm) {
    gemmWasm(rt, { transA, transB, m, n, k, alpha, a: a.data, b: b.data, beta, c: c.data }, activePool());
  } else gemmTs(transA, transB, m, n, k, alpha, a.data, b.data, beta, c.data);
  return c;
}

/** The GPU path: P = op(A)·op(B) in float32 on the device, then C ← alpha·P + beta·C here. */
function gemmGpu<T extends FloatArray>(
  gpu: NonNullable<ReturnType<typeof activeGpu>>,
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: Float32Array,
  b: Float32Array,
  beta: number,
  c: Matrix<T>,
): void {
  const cd = c.data as Float32Array;
  if (alpha === 1 && beta === 0) {
    gpu.gemm(transA, transB, m, n, k, a, b, cd);
    return;
  }
  const p = new Float32Array(m * n);
  gpu.gemm(transA, transB, m, n, k, a, b, p);
  if (beta === 0) { for (let i = 0; i < p.length; i++) cd[i] = alpha * p[i]; }
  else for (let i = 0; i < p.length; i++) cd[i] = alpha * p[i] + beta * cd[i];
}

function shapeOf(
  what: string,
  a: Matrix<FloatArray>,
  b: Matrix<FloatArray>,
  opts: { transA?: boolean; transB?: boolean },
): [number, number, number] {
  const m = opts.transA ? a.cols : a.rows;
  const k = opts.transA ? a.rows : a.cols;
  const kb = opts.transB ? b.cols : b.rows;
  const n = opts.transB ? b.rows : b.cols;
  if (k !== kb) {
    throw new ShapeError(`${what}: inner dimensions differ: op(A) is ${m}×${k}, op(B) is ${kb}×${n}`);
  }
  return [m, n, k];
}

/** The TypeScript fallback: float64 accumulation over cache-friendly layouts (A m×k, B k×n row-major). */
function gemmTs(
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: FloatArray,
  b: FloatArray,
  beta: number,
  c: FloatArray,
): void {
  const ad = transA ? transposeData(a, k, m) : a;
  const bd = transB ? transposeData(b, n, k) : b;
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    const ai = i * k;
    for (let p = 0; p < k; p++) {
      const av = ad[ai + p];
      const bp = p * n;
      for (let j = 0; j < n; j++) row[j] += av * bd[bp + j];
    }
    const ci = i * n;
    if (beta === 0) { for (let j = 0; j < n; j++) c[ci + j] = alpha * row[j]; }
    else for (let j = 0; j < n; j++) c[ci + j] = alpha * row[j] + beta * c[ci + j];
  }
}

function transposeData(d: FloatArray, rows: number, cols: number): Float64Array | FloatArray {
  const out = new (d.constructor as { new (n: number): FloatArray })(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = d[i * cols + j];
  return out;
}
