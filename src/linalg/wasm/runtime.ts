/**
 * The WebAssembly runtime every numeric room shares: one instance of the kernel module (all `wasm/*.c`
 * compiled together by `tools/build_wasm.ts`), one memory, and a small allocator over it.
 *
 * ## Lifecycle
 * Importing this module compiles and instantiates the kernels (top-level await of `WebAssembly.compile`, a
 * few milliseconds for a ~20 KB module). After import, {@link wasmRuntime} returns the runtime synchronously,
 * or `null` where WebAssembly SIMD is unavailable: callers must then use their TypeScript path.
 * {@link initWasm} is idempotent and only needed by code that wants to await the same promise explicitly.
 *
 * The memory is `shared: true` where the runtime allows it (Deno, Bun, Node, cross-origin-isolated browsers),
 * so worker threads (`src/linalg/threads/`) can run kernels over the same bytes; otherwise ordinary memory.
 *
 * ## Memory
 * - `alloc(bytes)` → byte offset (64-byte aligned, contents undefined); `free(ptr)` returns it. Memory grows on
 *   demand (never shrinks). Growing replaces `memory.buffer`, so re-take views after any `alloc`:
 *   `f32(ptr, len)` / `f64(ptr, len)` / `i32(ptr, len)` return fresh views.
 * - `putF32(array)` / `putF64(array)` allocate and copy in; `getF32(ptr, len)` / `getF64(ptr, len)` copy out.
 * - `scoped(fn)` frees every allocation made through its scope when `fn` returns or throws.
 *
 * ## Kernel convention (for authors of `wasm/*.c`)
 * - Export with `__attribute__((export_name("name")))`; BLAS-like names, `s…` float32, `d…` float64.
 * - Arguments: `int` sizes and flags, `float`/`double` scalars, pointers as byte offsets (i32) from `alloc`.
 *   Matrices are row-major with an explicit leading dimension (elements).
 * - No static mutable state and no static buffers: scratch comes in as an argument, sized by an exported
 *   `<name>_work_size()` (in elements). This keeps several instances (threads) on one memory safe.
 * - Freestanding C: no libc. Use `__builtin_sqrt` etc. (single instructions); memcpy/memset lower to bulk
 *   memory instructions.
 * - Call through `rt.fn("name")(...)`; `rt.has("name")` tells whether the loaded build has it.
 *
 * @example
 * ```ts
 * import { wasmRuntime } from "./runtime.ts";
 * const rt = wasmRuntime();
 * if (rt) {
 *   const c = rt.scoped((s) => {
 *     const a = s.putF64(new Float64Array([1, 2, 3, 4])); // 2×2
 *     const out = s.allocF64(4);
 *     const work = s.allocF64(rt.fn("dgemm_work_size")());
 *     rt.fn("dgemm")(0, 1, 2, 2, 2, 1, a, 2, a, 2, 0, out, 2, work); // out = a·aᵀ
 *     return rt.getF64(out, 4);
 *   });
 * }
 * ```
 *
 * @module
 */
import { compileKernels, MAX_PAGES } from "./module.ts";

/** An exported kernel: numbers in (i32 offsets, sizes, scalars), a number or nothing out. */
// deno-lint-ignore no-explicit-any
export type Kernel = (...args: any[]) => number;

/** Allocations whose lifetime ends with a {@link WasmRuntime.scoped} call. */
export interface WasmScope {
  /** Allocate `bytes` (64-byte aligned); freed at scope end. */
  alloc(bytes: number): number;
  /** Allocate `len` float32 values; freed at scope end. */
  allocF32(len: number): number;
  /** Allocate `len` float64 values; freed at scope end. */
  allocF64(len: number): number;
  /** Allocate and copy `src` in as float32; freed at scope end. */
  putF32(src: ArrayLike<number>): number;
  /** Allocate and copy `src` in as float64; freed at scope end. */
  putF64(src: ArrayLike<number>): number;
}

/** The shared kernel instance, its memory and allocator. */
export interface WasmRuntime {
  /** The compiled module (the shared-memory flavour when {@link WasmRuntime.shared}). */
  readonly module: WebAssembly.Module;
  /** The main-thread instance. */
  readonly instance: WebAssembly.Instance;
  /** The memory every instance imports as `env.memory`. */
  readonly memory: WebAssembly.Memory;
  /** Whether `memory` is a shared memory (worker threads possible). */
  readonly shared: boolean;
  /** The exported function `name`; throws if this build lacks it. */
  fn(name: string): Kernel;
  /** Whether this build exports `name`. */
  has(name: string): boolean;
  /** Allocate `bytes` bytes, 64-byte aligned; returns the byte offset. */
  alloc(bytes: number): number;
  /** Free an offset returned by {@link WasmRuntime.alloc}. Freeing 0 is a no-op. */
  free(ptr: number): void;
  /** Float32 view of `len` values at `ptr` (invalidated by a later allocation). */
  f32(ptr: number, len: number): Float32Array;
  /** Float64 view of `len` values at `ptr` (invalidated by a later allocation). */
  f64(ptr: number, len: number): Float64Array;
  /** Int32 view of `len` values at `ptr` (invalidated by a later allocation). */
  i32(ptr: number, len: number): Int32Array;
  /** Allocate and copy in as float32. */
  putF32(src: ArrayLike<number>): number;
  /** Allocate and copy in as float64. */
  putF64(src: ArrayLike<number>): number;
  /** Copy `len` float32 values out of memory. */
  getF32(ptr: number, len: number): Float32Array;
  /** Copy `len` float64 values out of memory. */
  getF64(ptr: number, len: number): Float64Array;
  /** Run `fn` with a scope whose allocations are freed when it returns or throws. */
  scoped<T>(fn: (s: WasmScope) => T): T;
  /** Bytes currently allocated. */
  bytesInUse(): number;
  /**
   * The free ranges of the allocator, as [start, end) byte offsets in ascending order (a copy). Their
   * contents are undefined, so a caller may hand their pages back to the system (see
   * `pipeline/memory.ts`): memory never shrinks, but its free pages need not stay resident.
   */
  freeRanges(): [number, number][];
}

const ALIGN = 64;
const PAGE = 65536;
const INITIAL_PAGES = 256; // 16 MiB

class Runtime implements WasmRuntime {
  readonly module: WebAssembly.Module;
  readonly instance: WebAssembly.Instance;
  readonly memory: WebAssembly.Memory;
  readonly shared: boolean;
  #exports: Record<string, unknown>;
  // Free ranges as sorted [start, end) pairs; allocated sizes by offset.
  #free: [number, number][];
  #used = new Map<number, number>();
  #inUse = 0;

  constructor(module: WebAssembly.Module, instance: WebAssembly.Instance, memory: WebAssembly.Memory) {
    this.module = module;
    this.instance = instance;
    this.memory = memory;
    this.shared = typeof SharedArrayBuffer === "function" && memory.buffer instanceof SharedArrayBuffer;
    this.#exports = instance.exports as Record<string, unknown>;
    const heapBase = (this.#exports.__heap_base as WebAssembly.Global).value as number;
    const start = Math.ceil(heapBase / ALIGN) * ALIGN;
    this.#free = [[start, memory.buffer.byteLength]];
  }

  fn(name: string): Kernel {
    const f = this.#exports[name];
    if (typeof f !== "function") throw new Error(`wasm kernel: this build exports no function "${name}"`);
    return f as Kernel;
  }

  has(name: string): boolean {
    return typeof this.#exports[name] === "function";
  }

  alloc(bytes: number): number {
    if (!(bytes >= 0) || !Number.isFinite(bytes)) throw new RangeError(`wasm alloc: invalid size ${bytes}`);
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    for (let i = 0; i < this.#free.length; i++) {
      const r = this.#free[i];
      if (r[1] - r[0] >= size) return this.#take(i, size);
    }
    // Grow: at least what is missing past the last free range, and at least a quarter of the current size.
    const end = this.memory.buffer.byteLength;
    const last = this.#free[this.#free.length - 1];
    const tailFree = last && last[1] === end ? last[1] - last[0] : 0;
    const curPages = end / PAGE;
    let pages = Math.max(Math.ceil((size - tailFree) / PAGE), Math.ceil(curPages / 4));
    pages = Math.min(pages, MAX_PAGES - curPages);
    if (pages <= 0 || (pages * PAGE + tailFree) < size) {
      throw new RangeError(`wasm alloc: cannot allocate ${bytes} bytes (memory limit 4 GiB)`);
    }
    this.memory.grow(pages);
    const newEnd = this.memory.buffer.byteLength;
    if (tailFree > 0) last[1] = newEnd;
    else this.#free.push([end, newEnd]);
    return this.#take(this.#free.length - 1, size);
  }

  #take(i: number, size: number): number {
    const r = this.#free[i];
    const ptr = r[0];
    r[0] += size;
    if (r[0] === r[1]) this.#free.splice(i, 1);
    this.#used.set(ptr, size);
    this.#inUse += size;
    return ptr;
  }

  free(ptr: number): void {
    if (ptr === 0) return;
    const size = this.#used.get(ptr);
    if (size === undefined) throw new Error(`wasm free: ${ptr} is not an allocated offset`);
    this.#used.delete(ptr);
    this.#inUse -= size;
    const end = ptr + size;
    const fr = this.#free;
    let lo = 0, hi = fr.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (fr[mid][0] < ptr) lo = mid + 1;
      else hi = mid;
    }
    // lo: first range starting after ptr. Coalesce with neighbours.
    const prev = lo > 0 ? fr[lo - 1] : undefined;
    const next = lo < fr.length ? fr[lo] : undefined;
    if (prev && prev[1] === ptr) {
      prev[1] = end;
      if (next && next[0] === end) {
        prev[1] = next[1];
        fr.splice(lo, 1);
      }
    } else if (next && next[0] === end) next[0] = ptr;
    else fr.splice(lo, 0, [ptr, end]);
  }

  f32(ptr: number, len: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, len);
  }

  f64(ptr: number, len: number): Float64Array {
    return new Float64Array(this.memory.buffer, ptr, len);
  }

  i32(ptr: number, len: number): Int32Array {
    return new Int32Array(this.memory.buffer, ptr, len);
  }

  putF32(src: ArrayLike<number>): number {
    const p = this.alloc(src.length * 4);
    this.f32(p, src.length).set(src);
    return p;
  }

  putF64(src: ArrayLike<number>): number {
    const p = this.alloc(src.length * 8);
    this.f64(p, src.length).set(src);
    return p;
  }

  getF32(ptr: number, len: number): Float32Array {
    return this.f32(ptr, len).slice();
  }

  getF64(ptr: number, len: number): Float64Array {
    return this.f64(ptr, len).slice();
  }

  scoped<T>(fn: (s: WasmScope) => T): T {
    const taken: number[] = [];
    const take = (p: number) => (taken.push(p), p);
    const scope: WasmScope = {
      alloc: (bytes) => take(this.alloc(bytes)),
      allocF32: (len) => take(this.alloc(len * 4)),
      allocF64: (len) => take(this.alloc(len * 8)),
      putF32: (src) => take(this.putF32(src)),
      putF64: (src) => take(this.putF64(src)),
    };
    try {
      return fn(scope);
    } finally {
      for (let i = taken.length - 1; i >= 0; i--) this.free(taken[i]);
    }
  }

  bytesInUse(): number {
    return this.#inUse;
  }

  freeRanges(): [number, number][] {
    return this.#free.map(([a, b]) => [a, b]);
  }
}

/** Options of {@link initWasm}. */
export interface InitWasmOptions {
  /** Use a shared memory (needed for threads). Default: where the runtime allows it. */
  shared?: boolean;
  /**
   * The kernels precompiled (`wasm/svd_llm.wasm` imported as a module, as Cloudflare workerd allows), for
   * runtimes that forbid compiling WebAssembly from bytes. Used only when the runtime is not up yet (the
   * compilation at import failed): a running runtime is kept, its kernels are the same.
   */
  module?: WebAssembly.Module;
}

let current: WasmRuntime | null = null;
let pending: Promise<WasmRuntime | null> | null = null;
let lastError: unknown = null;

/** Whether this runtime can create a shared `WebAssembly.Memory` that workers may use. */
export function sharedMemoryPossible(): boolean {
  if (typeof SharedArrayBuffer !== "function") return false;
  const coi = (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated;
  return coi !== false;
}

/** Kernels every build exports; a given module lacking one is not ours. */
const REQUIRED_EXPORTS = ["sgemm", "dgemm", "sgemm_work_size", "dgemm_work_size", "__heap_base"];

async function create(shared: boolean, given?: WebAssembly.Module): Promise<WasmRuntime> {
  const module = given ?? await compileKernels(shared);
  const memory = new WebAssembly.Memory(
    shared
      ? { initial: INITIAL_PAGES, maximum: MAX_PAGES, shared: true } as WebAssembly.MemoryDescriptor
      : { initial: INITIAL_PAGES },
  );
  // A Module argument instantiates without compiling (allowed where compiling from bytes is not).
  const instance = await WebAssembly.instantiate(module, { env: { memory } });
  const rt = new Runtime(module, instance, memory);
  warmUp(rt);
  return rt;
}

/** Check that `m` is a compiled module exporting our kernels; throws naming what is wrong. */
function checkGivenModule(m: unknown): WebAssembly.Module {
  if (!(m instanceof WebAssembly.Module)) {
    throw new TypeError(
      `load wasm kernels: the given module is not a WebAssembly.Module (got ${
        m === null ? "null" : typeof m
      }): import wasm/svd_llm.wasm as a module`,
    );
  }
  const names = new Set(WebAssembly.Module.exports(m).map((e) => e.name));
  const missing = REQUIRED_EXPORTS.filter((n) => !names.has(n));
  if (missing.length) {
    throw new TypeError(
      `load wasm kernels: the given module is not @svd/llm's wasm/svd_llm.wasm (exports no ${
        missing.join(", ")
      })`,
    );
  }
  return m;
}

/**
 * Run the GEMM kernels on small products until V8/JSC move them to the optimizing tier. Wasm has no
 * on-stack replacement, so without this the first large product runs entirely in the baseline tier
 * (measured 3–4× slower). Costs a few milliseconds at import.
 */
function warmUp(rt: Runtime): void {
  rt.scoped((s) => {
    const n = 32, k = 64;
    const a = s.allocF64(n * k), c = s.allocF64(n * n);
    const w = s.allocF64(Math.max(rt.fn("sgemm_work_size")() / 2, rt.fn("dgemm_work_size")()));
    rt.f64(a, n * k).fill(0);
    for (let i = 0; i < 60; i++) {
      rt.fn("sgemm")(0, 1, n, n, k, 1, a, k, a, k, 0, c, n, w);
      rt.fn("dgemm")(1, 0, n, n, k / 2, 1, a, n, a, n, 0, c, n, w);
      rt.fn("sgemm")(0, i & 1, 1, n, k, 1, a, k, a, i & 1 ? k : n, 0, c, n, w); // the m = 1 path
      if (rt.has("sgram_acc")) rt.fn("sgram_acc")(n, k, a, n, 1, c, 0, n, w); // Gram: its own kernel copy
    }
  });
}

/**
 * Compile and instantiate the kernels once (idempotent; already started at import). Resolves to the runtime,
 * or null when WebAssembly (with SIMD) is unavailable; {@link wasmInitError} then says why. With
 * `opts.module` after a failed start (compiling forbidden), instantiates that precompiled module instead;
 * throws a TypeError if it is not our kernel module.
 */
export function initWasm(opts: InitWasmOptions = {}): Promise<WasmRuntime | null> {
  const given = opts.module === undefined ? undefined : checkGivenModule(opts.module);
  if (pending && (current || !given)) return pending;
  const wantShared = opts.shared ?? sharedMemoryPossible();
  const previous = pending;
  pending = (async () => {
    // The start at import may still be under way: if it succeeds, keep it (same kernels, live allocations).
    if (previous && await previous) return current;
    try {
      current = await create(wantShared, given);
      lastError = null;
    } catch (e) {
      if (wantShared) {
        // No shared memory here, or a given module built for an unshared one (the import's flag must match).
        try {
          current = await create(false, given);
          lastError = null;
          return current;
        } catch (e2) {
          lastError = e2;
          return null;
        }
      }
      lastError = e;
    }
    return current;
  })();
  return pending;
}

/** The runtime, synchronously; null if WebAssembly could not be set up (see {@link wasmInitError}). */
export function wasmRuntime(): WasmRuntime | null {
  return current;
}

/** Why {@link initWasm} failed, or null. */
export function wasmInitError(): unknown {
  return lastError;
}

// Every user gets the SIMD kernels without a call; failures leave the TypeScript paths in charge.
await initWasm();
