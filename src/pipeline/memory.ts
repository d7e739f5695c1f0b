/**
 * Peak resident memory of a run, sampled at every progress step and on a light timer. Reads
 * `process.memoryUsage.rss()` where the runtime has it (Deno, Bun, Node); reports 0 elsewhere (browsers).
 * And a way to collect garbage between the pipeline's stages ({@link findGarbageCollector}).
 *
 * @module
 */
import { wasmRuntime } from "../linalg/wasm/runtime.ts";

/** `process.memoryUsage` where a runtime has it; `.rss()` is the cheap form (Node ≥ 15, Deno, Bun). */
type MemoryUsage = (() => { rss: number }) & { rss?: () => number };

/** A running peak-memory sampler. */
export interface PeakMemory {
  /** Take a sample now. */
  sample(): void;
  /** Highest resident set size seen, bytes. */
  peak(): number;
  /** Stop the timer. */
  stop(): void;
}

/** Start sampling every `intervalMs` (default 50 ms; the timer does not keep the process alive). */
export function createPeakMemory(intervalMs = 50): PeakMemory {
  let max = 0;
  // The global `process`, feature-detected (not `node:process`): the module must load in browsers and workerd.
  const proc = (globalThis as { process?: { memoryUsage?: MemoryUsage } }).process;
  const read = (): number => {
    try {
      const m = proc?.memoryUsage;
      if (!m) return 0;
      return typeof m.rss === "function" ? m.rss() : m().rss;
    } catch {
      return 0;
    }
  };
  const sample = () => {
    const r = read();
    if (r > max) max = r;
  };
  sample();
  const timer = setInterval(sample, intervalMs) as unknown as { unref?: () => void };
  timer.unref?.();
  return {
    sample,
    peak: () => max,
    stop: () => clearInterval(timer as unknown as number),
  };
}

/**
 * A function that runs a full garbage collection now, or null where the runtime offers none.
 *
 * Why: V8 frees a typed array's memory only when a collection finds it unreachable, and it paces collections
 * by the JavaScript heap, which stays small here (the data is all in array buffers): measured, 10 dropped
 * 64 MB arrays were still resident (346 MiB RSS, 100 MiB after a collection). Collecting once per factored
 * linear keeps the resident set near what is actually alive, at a few milliseconds per call.
 *
 * Found in this order: `globalThis.gc` (a runtime started with --expose-gc), `Bun.gc(true)`, and for Deno and
 * Node the `gc` of a fresh `node:vm` context after `v8.setFlagsFromString("--expose-gc")` (the flag only
 * makes `gc` visible to contexts created afterwards; the main context's globals are unchanged).
 */
export async function findGarbageCollector(): Promise<(() => void) | null> {
  const g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  if (typeof g.gc === "function") return () => g.gc!();
  if (g.Bun && typeof g.Bun.gc === "function") return () => g.Bun!.gc(true);
  try {
    const v8 = await import("node:v8");
    const vm = await import("node:vm");
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc");
    return typeof gc === "function" ? () => gc() : null;
  } catch {
    return null;
  }
}

/** The Deno namespace's parts {@link findMemoryTrimmer} uses (typed here: the library also runs on Bun). */
interface DenoFfi {
  build: { os: string };
  permissions: { querySync?(d: { name: "ffi" }): { state: string } };
  dlopen(
    path: string,
    symbols: {
      malloc_trim: { parameters: ["usize"]; result: "i32" };
      madvise: { parameters: ["pointer", "usize", "i32"]; result: "i32" };
    },
  ): {
    symbols: {
      malloc_trim(pad: number | bigint): number;
      madvise(addr: unknown, length: number | bigint, advice: number): number;
    };
  };
  UnsafePointer: { of(v: ArrayBufferView): unknown; value(p: unknown): bigint; create(v: bigint): unknown };
}

/** Linux's MADV_DONTNEED: drop the pages; the next touch maps fresh zero pages. */
const MADV_DONTNEED = 4;

/** Pages of wasm memory are handed back only in free runs of at least this many bytes (fewer syscalls). */
const DISCARD_MIN_BYTES = 1 << 20;

let trimmer: (() => void) | null | undefined;

/**
 * A function handing freed memory back to the system, under Deno on Linux with FFI permission already granted
 * (never asked for); null elsewhere (other systems, musl, Bun, Node, browsers, no permission) — then nothing
 * changes. It does two things:
 *
 * - `malloc_trim(0)` of the C library. Deno's array buffers come from glibc's malloc, which raises its mmap
 *   threshold to the size of the largest freed buffer (up to 32 MiB), after which every buffer below that
 *   size is carved from the heap, and free() returns only the heap's top to the system: the freed holes
 *   between live buffers stay resident. Measured on `bench/compress_memory.ts` (one block of a d = 1024
 *   LLaMA): 30–110 MiB freed by each trim at the pipeline's stage boundaries, peak resident set 457 → 389 MiB.
 * - `madvise(MADV_DONTNEED)` over the free ranges of the wasm kernels' memory (whole pages, runs of at least
 *   1 MiB). WebAssembly memory never shrinks, so every page it ever used stayed resident: after a block's
 *   statistics (its Gram matrices live there, 90 MB at d = 1024) the whole pool was resident through the
 *   phases that use a fraction of it. The allocator's free ranges have undefined contents, so dropping their
 *   pages changes no result; reused, they come back as zero pages.
 *
 * Not free: the pages handed back are faulted in again (zeroed) when reused, so trim where a phase with
 * another allocation pattern begins (after a calibration pass, after each large factored linear), not after
 * every batch.
 */
export function findMemoryTrimmer(): (() => void) | null {
  if (trimmer !== undefined) return trimmer;
  trimmer = null;
  const deno = (globalThis as unknown as { Deno?: DenoFfi }).Deno;
  try {
    if (deno?.build.os === "linux" && deno.permissions.querySync?.({ name: "ffi" }).state === "granted") {
      const lib = deno.dlopen("libc.so.6", {
        malloc_trim: { parameters: ["usize"], result: "i32" },
        madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
      });
      const ptr = deno.UnsafePointer;
      trimmer = () => {
        lib.symbols.malloc_trim(0);
        const rt = wasmRuntime();
        if (!rt) return;
        // The base address is taken each time: a non-shared memory may move when it grows.
        const base = ptr.value(ptr.of(new Uint8Array(rt.memory.buffer, 0, 1)));
        for (const [start, end] of rt.freeRanges()) {
          const a = Math.ceil(start / PAGE) * PAGE, b = Math.floor(end / PAGE) * PAGE;
          if (b - a >= DISCARD_MIN_BYTES) {
            lib.symbols.madvise(ptr.create(base + BigInt(a)), b - a, MADV_DONTNEED);
          }
        }
      };
    }
  } catch {
    trimmer = null; // no glibc (musl, static builds) or FFI refused: trimming is only an optimisation
  }
  return trimmer;
}

/** System page size assumed for madvise (Linux on x86-64 and most arm64 kernels; larger pages only skip). */
const PAGE = 4096;
