/**
 * Which numeric backend the linear algebra uses, and its threads.
 *
 * Nothing needs to be called: importing the library compiles the WebAssembly SIMD kernels (top-level await
 * in `wasm/runtime.ts`), and products run in wasm on one thread, or in plain TypeScript where WebAssembly is
 * unavailable. {@link initLinalg} opts in to worker threads (`threads: 2`, or `"auto"`), or forces a backend.
 * Threads are opt-in because workers cost memory and start-up time that short scripts and tests don't need;
 * call {@link closeLinalg} (or `initLinalg({ threads: 1 })`) to stop them. Idle workers never keep a Deno,
 * Bun or Node process alive.
 *
 * WebGPU: `initLinalg({ gpu: true })` starts a worker owning a GPU device (`webgpu/gpu_worker.ts`) and routes
 * float32 products of at least {@link LinalgOptions.gpuMinWork} multiply-adds (the forward passes, through
 * `gemm.ts`) and the calibration Gram accumulation (`gram.ts`) to it, synchronously; without an adapter it
 * stays off and {@link LinalgInfo.gpuNote} says why. The asynchronous `matmulGpu` is separate.
 *
 * @example
 * ```ts
 * import { closeLinalg, initLinalg } from "./backend.ts";
 * const info = await initLinalg({ threads: 2 }); // { backend: "wasm", threads: 2, simd: true, ... }
 * // ... heavy work ...
 * await closeLinalg();
 * ```
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import { canBlock, ThreadPool } from "./threads/pool.ts";
import { GpuWorker, type LinalgGpuInfo } from "./webgpu/gpu_worker.ts";
import { initWasm, sharedMemoryPossible, wasmInitError, wasmRuntime } from "./wasm/runtime.ts";

export type { LinalgGpuInfo } from "./webgpu/gpu_worker.ts";

/** A backend choice: `"auto"` takes wasm when it loaded, else TypeScript. */
export type BackendChoice = "auto" | "wasm" | "ts";

/** Options of {@link initLinalg}. */
export interface LinalgOptions {
  /** Backend for CPU products. Default `"auto"`. `"wasm"` throws if WebAssembly could not be loaded. */
  backend?: BackendChoice;
  /**
   * Threads for large wasm products, the calling thread included. Default 1. `"auto"`: the hardware
   * concurrency, capped at 8. Needs shared memory and a thread that may block (not a browser main thread);
   * otherwise stays at 1 and {@link LinalgInfo.threadsNote} says why.
   */
  threads?: number | "auto";
  /**
   * The kernels precompiled, for runtimes that forbid compiling WebAssembly from bytes (Cloudflare workerd;
   * pages whose CSP lacks `wasm-unsafe-eval`): `wasm/svd_llm.wasm` imported as a module. Used when the
   * compilation at import failed; a TypeError if it is not that module. Without it there, products run in
   * TypeScript and one warning line says why.
   */
  wasmModule?: WebAssembly.Module;
  /**
   * Route large float32 products and the calibration Gram accumulation to a WebGPU device (float32 storage;
   * Gram partials of 256 tokens reduced in float64 on the CPU). Default false: like `threads`, each call
   * states the whole configuration, so a call without it stops the GPU worker.
   * Needs an adapter and a thread that may block; otherwise stays off, {@link LinalgInfo.gpuNote} says why.
   */
  gpu?: boolean;
  /** With `gpu`: the fewest multiply-adds (m·n·k) a product needs to go to the GPU. Default {@link GPU_SYNC_MIN_WORK}. */
  gpuMinWork?: number;
}

/** Default {@link LinalgOptions.gpuMinWork}: smaller products cost more in copies and round trips than they gain. */
export const GPU_SYNC_MIN_WORK = 1 << 22;

/** What the linear algebra currently runs on. */
export interface LinalgInfo {
  /** Backend of CPU products. */
  backend: "wasm" | "ts";
  /** Threads used for large products (1 = no workers). */
  threads: number;
  /** Whether the wasm kernels (128-bit SIMD) are loaded. */
  simd: boolean;
  /** Whether wasm memory is shared (threads possible). */
  sharedMemory: boolean;
  /** Whether `navigator.gpu` exists (an adapter may still be missing). */
  webgpu: boolean;
  /** Why threads were not started, when asked for more than 1 and not given. */
  threadsNote?: string;
  /** The GPU products and Gram accumulations route to, when `initLinalg({ gpu: true })` started one. */
  gpu?: LinalgGpuInfo;
  /** Why the GPU path is off, when asked for and not given. */
  gpuNote?: string;
}

let backend: "wasm" | "ts" = wasmRuntime() ? "wasm" : "ts";
let pool: ThreadPool | null = null;
let threadsNote: string | undefined;
let warned = false;
let gpu: GpuWorker | null = null;
let gpuMinWork = GPU_SYNC_MIN_WORK;
let gpuNote: string | undefined;
let tsChosen = false;

/**
 * The backend of CPU products now (for `gemm.ts`). The first product that falls back to TypeScript because
 * WebAssembly failed (not by choice) prints one warning line, once per process: a silent fallback is 10–50×
 * slower with no hint why.
 */
export function activeBackend(): "wasm" | "ts" {
  if (backend === "ts" && !warned && !tsChosen && !wasmRuntime()) {
    warned = true;
    console.warn(fallbackWarning(wasmInitError()));
  }
  return backend;
}

/** The one-line warning for a TypeScript fallback caused by `error` (exported for tests). */
export function fallbackWarning(error: unknown): string {
  const why = (error instanceof Error ? error.message : String(error)).split("\n")[0];
  return `@svd/llm: WebAssembly unavailable (${why}); products run in TypeScript (slower). Where compiling ` +
    `at run time is forbidden (workerd), pass the precompiled kernels: initLinalg({ wasmModule }) with ` +
    `wasm/svd_llm.wasm imported as a module.`;
}

/** The worker pool, or null when single-threaded (for `gemm.ts`). */
export function activePool(): ThreadPool | null {
  return pool;
}

/** The GPU worker products route to, or null (for `gemm.ts` and `gram.ts`). */
export function activeGpu(): GpuWorker | null {
  return gpu;
}

/** Whether a float32 product of `work` multiply-adds goes to the GPU (for `gemm.ts` and `gram.ts`). */
export function gpuWants(work: number): boolean {
  return gpu !== null && work >= gpuMinWork;
}

/** Describe the current backend. */
export function linalgInfo(): LinalgInfo {
  const rt = wasmRuntime();
  const nav = (globalThis as { navigator?: { gpu?: unknown } }).navigator;
  const info: LinalgInfo = {
    backend,
    threads: pool ? pool.size : 1,
    simd: rt !== null,
    sharedMemory: rt?.shared ?? false,
    webgpu: !!nav?.gpu,
  };
  if (threadsNote) info.threadsNote = threadsNote;
  if (gpu) info.gpu = gpu.info();
  if (gpuNote) info.gpuNote = gpuNote;
  return info;
}

/**
 * Choose the backend and thread count. Safe to call again (threads are restarted when the count changes).
 * Throws {@link OptionError} for an unknown backend, a bad thread count, or `backend: "wasm"` without wasm,
 * and a TypeError for a `wasmModule` that is not the kernel module.
 */
export async function initLinalg(opts: LinalgOptions = {}): Promise<LinalgInfo> {
  const choice = opts.backend ?? "auto";
  if (choice !== "auto" && choice !== "wasm" && choice !== "ts") {
    throw new OptionError(
      `initLinalg: backend must be "auto", "wasm" or "ts", got ${JSON.stringify(choice)}`,
    );
  }
  let want = opts.threads ?? 1;
  if (want === "auto") {
    const hc = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator
      ?.hardwareConcurrency;
    want = Math.max(1, Math.min(8, hc ?? 1));
  }
  if (!Number.isInteger(want) || want < 1 || want > 64) {
    throw new OptionError(`initLinalg: threads must be an integer in 1..64 or "auto", got ${opts.threads}`);
  }
  if (opts.gpu !== undefined && typeof opts.gpu !== "boolean") {
    throw new OptionError(`initLinalg: gpu must be true or false, got ${JSON.stringify(opts.gpu)}`);
  }
  if (opts.gpuMinWork !== undefined && (!Number.isInteger(opts.gpuMinWork) || opts.gpuMinWork < 0)) {
    throw new OptionError(`initLinalg: gpuMinWork must be a whole number ≥ 0, got ${opts.gpuMinWork}`);
  }
  const rt = await initWasm({ module: opts.wasmModule });
  if (choice === "wasm" && !rt) {
    throw new OptionError(`initLinalg: backend "wasm" requested but WebAssembly failed: ${wasmInitError()}`);
  }
  backend = choice === "ts" || !rt ? "ts" : "wasm";
  tsChosen = choice === "ts";
  threadsNote = undefined;
  if (pool && (pool.size !== want || backend === "ts")) await closePool();
  if (backend === "wasm" && want > 1 && !pool) {
    if (!rt!.shared) {
      threadsNote = sharedMemoryPossible()
        ? "wasm memory could not be made shared"
        : "no shared memory here (SharedArrayBuffer missing or page not cross-origin isolated)";
    } else if (!canBlock()) threadsNote = "this thread may not block (browser main thread): use a Worker";
    else {
      try {
        pool = await ThreadPool.create(rt!, want);
      } catch (e) {
        threadsNote = e instanceof Error ? e.message : String(e);
      }
    }
  }
  gpuNote = undefined;
  if (!opts.gpu) await closeGpuWorker();
  else if (!gpu) {
    const started = await GpuWorker.start();
    if (typeof started === "string") gpuNote = started;
    else gpu = started;
  }
  gpuMinWork = opts.gpuMinWork ?? GPU_SYNC_MIN_WORK;
  return linalgInfo();
}

async function closePool(): Promise<void> {
  const p = pool;
  pool = null;
  if (p) await p.close();
}

async function closeGpuWorker(): Promise<void> {
  const g = gpu;
  gpu = null;
  if (g) await g.close();
}

/** Stop the worker threads and the GPU worker (products continue on one CPU thread). Idempotent. */
export async function closeLinalg(): Promise<void> {
  await closePool();
  await closeGpuWorker();
}
