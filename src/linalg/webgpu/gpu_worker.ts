/**
 * Synchronous WebGPU products for the pipeline: a worker owns the GPU device (`gpu_worker_source.ts`), and the
 * calling thread copies the operands into a SharedArrayBuffer, posts the job and blocks in `Atomics.wait`
 * until the worker has written the result back. The forward pass and the calibration observers stay
 * synchronous; `gemm.ts` and `gram.ts` route their large float32 products here when
 * `initLinalg({ gpu: true })` started a {@link GpuWorker}.
 *
 * Needs a thread that may block (Deno, Bun and Node main threads, web Workers; not a browser page's main
 * thread) and a WebGPU adapter in a worker (Deno; browsers). {@link GpuWorker.start} resolves to a reason
 * string where either is missing.
 *
 * Closing waits for the worker's thread to end, not only for `terminate()`: under Deno, `terminate()` resolves
 * while the thread is still tearing down its runtime (30–60 ms here), and that teardown drops the wgpu
 * instance, which unloads the Vulkan driver. A process `exit()` racing with it runs an exit handler of the
 * half-unloaded driver (lavapipe: SIGSEGV, or glibc's "corrupted double-linked list"), about one exit in
 * twenty to thirty. Where the thread id is known (Linux, read permission) {@link GpuWorker.close} waits until
 * `/proc/self/task/<tid>` is gone; elsewhere it cannot, and the race remains.
 *
 * @module
 */
import { canBlock } from "../threads/pool.ts";
import { spawnWorker, type WorkerPort } from "../threads/spawn.ts";
import { GPU_WORKER_SOURCE } from "./gpu_worker_source.ts";

/** The GPU that products route to after `initLinalg({ gpu: true })`, and what it has done. */
export interface LinalgGpuInfo {
  /** Adapter description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  adapter: string;
  /** A software adapter (lavapipe, SwiftShader): correct, and no indication of a real GPU's speed. */
  fallback: boolean;
  /** Products run on the GPU so far. */
  products: number;
  /** Gram accumulations run on the GPU so far. */
  grams: number;
}

/** Longest wait for one job before it is declared lost (a software adapter on a busy machine is slow). */
const JOB_TIMEOUT_MS = 600_000;
const CTRL_BYTES = 8 + 1024;
/** Longest wait for the worker's thread to end after `terminate()` (it unloads the GPU driver meanwhile). */
const THREAD_END_MS = 10_000;
/** Longest wait for the worker's device to be ready, and for its answer to "close". */
const START_MS = 120_000, CLOSE_MS = 10_000;

/**
 * `p`, or `late` after `ms` if `p` has not settled by then. The timer is cleared either way, so a settled wait
 * keeps no process alive.
 */
async function within<T>(p: Promise<T>, ms: number, late: T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<T>((r) => timer = setTimeout(() => r(late), ms))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolve once the OS thread `tid` of this process has ended (Linux: `/proc/self/task/<tid>` is gone), or
 * after {@link THREAD_END_MS}; at once where that cannot be observed (no `node:fs`, no read permission).
 */
async function threadEnded(tid: string | null): Promise<void> {
  if (tid === null || !/^[0-9]+$/.test(tid)) return;
  let exists: (path: string) => boolean;
  try {
    exists = (await import("node:fs")).existsSync;
  } catch {
    return;
  }
  const path = `/proc/self/task/${tid}`, deadline = Date.now() + THREAD_END_MS;
  try {
    while (exists(path) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  } catch {
    return; // e.g. Deno without --allow-read: nothing to wait on
  }
}

/** A started GPU worker; synchronous {@link GpuWorker.gemm} and {@link GpuWorker.gram}. */
export class GpuWorker {
  #port: WorkerPort;
  #ctrl: Int32Array<SharedArrayBuffer>;
  #sab: SharedArrayBuffer = new SharedArrayBuffer(1 << 20);
  #info: LinalgGpuInfo;
  #maxBinding: number;
  #waiting: ((m: { type: string }) => void) | null = null;
  #closed = false;
  #tid: string | null;

  private constructor(port: WorkerPort, ctrl: Int32Array<SharedArrayBuffer>, ready: ReadyMessage) {
    this.#port = port;
    this.#tid = ready.tid;
    this.#ctrl = ctrl;
    this.#maxBinding = ready.maxBinding;
    this.#info = { adapter: ready.description, fallback: ready.fallback, products: 0, grams: 0 };
  }

  /** Start the worker and its device; resolves to the worker, or to why it cannot run here. */
  static async start(): Promise<GpuWorker | string> {
    if (typeof SharedArrayBuffer !== "function") {
      return "no SharedArrayBuffer (page not cross-origin isolated?)";
    }
    if (!canBlock()) return "this thread may not block (browser main thread): use a Worker";
    const ctrl = new Int32Array(new SharedArrayBuffer(CTRL_BYTES));
    let reply!: (m: unknown) => void;
    const first = new Promise<unknown>((r) => reply = r);
    let self: GpuWorker | null = null;
    let port: WorkerPort;
    try {
      port = await spawnWorker(
        GPU_WORKER_SOURCE,
        (m) => self ? self.#onMessage(m as { type: string }) : reply(m),
        (e) => reply({ type: "none", reason: e instanceof Error ? e.message : String(e) }),
      );
    } catch (e) {
      return `the GPU worker failed to start: ${e instanceof Error ? e.message : e}`;
    }
    port.post({ type: "init", ctrl });
    // A browser's GPU process can leave an adapter or device request unanswered: bound the wait, so the
    // caller gets a reason instead of a hang.
    const late = { type: "none", reason: `the GPU worker got no adapter and device in ${START_MS / 1000} s` };
    const m = await within(first, START_MS, late) as
      | ReadyMessage
      | { type: "none"; reason: string; tid?: string | null };
    if (m.type !== "ready") {
      // Asking for an adapter already created the worker's GPU instance: wait for its teardown too.
      await port.terminate();
      await threadEnded(m.tid ?? null);
      return (m as { reason: string }).reason;
    }
    port.unref();
    self = new GpuWorker(port, ctrl, m);
    return self;
  }

  /** The adapter and the work done so far (a copy). */
  info(): LinalgGpuInfo {
    return { ...this.#info };
  }

  /** Whether an operand of `floats` float32 values fits one device buffer. */
  fits(floats: number): boolean {
    return 4 * floats <= this.#maxBinding;
  }

  /** C (m×n) = op(A)·op(B) on the GPU, float32; blocks until done. `c` receives the product (not scaled). */
  gemm(
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    a: Float32Array,
    b: Float32Array,
    c: Float32Array,
  ): void {
    const aOff = 0, bOff = 4 * m * k, cOff = bOff + 4 * k * n;
    const sab = this.#staging(cOff + 4 * m * n);
    new Float32Array(sab, aOff, m * k).set(a.subarray(0, m * k));
    new Float32Array(sab, bOff, k * n).set(b.subarray(0, k * n));
    const flags = (transA ? 1 : 0) | (transB ? 2 : 0);
    this.#run({ type: "gemm", sab, m, n, k, flags, a: aOff, b: bOff, c: cOff }, "gemm");
    c.set(new Float32Array(sab, cOff, m * n));
    this.#info.products++;
  }

  /**
   * S (n×n, float64) = Σ over runs of 256 tokens of the float32 XcᵀXc for `x: t×n` (float32 partials from the
   * GPU, summed in float64); blocks until done. Returns a view into the staging buffer, valid until the next
   * job.
   */
  gram(x: Float32Array, t: number, n: number): Float64Array {
    const sOff = 0, xOff = 8 * n * n;
    const sab = this.#staging(xOff + 4 * t * n);
    new Float32Array(sab, xOff, t * n).set(x.subarray(0, t * n));
    this.#run({ type: "gram", sab, t, n, x: xOff, s: sOff }, "gram");
    this.#info.grams++;
    return new Float64Array(sab, sOff, n * n);
  }

  /**
   * Destroy the device (in the worker's thread, after its queue drained), end the worker, and wait until its
   * thread has ended (see the module doc: a process exit during that teardown crashes). Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const closed = new Promise<void>((r) => this.#waiting = (m) => m.type === "closed" && r());
    this.#port.post({ type: "close" });
    await within(closed, CLOSE_MS, undefined);
    await this.#port.terminate();
    await threadEnded(this.#tid);
  }

  #onMessage(m: { type: string }): void {
    this.#waiting?.(m);
  }

  #staging(bytes: number): SharedArrayBuffer {
    if (this.#sab.byteLength < bytes) {
      this.#sab = new SharedArrayBuffer(2 ** Math.ceil(Math.log2(Math.max(bytes, 1 << 20))));
    }
    return this.#sab;
  }

  #run(job: Record<string, unknown>, what: string): void {
    if (this.#closed) throw new Error(`GPU ${what}: the GPU worker is closed`);
    const ctrl = this.#ctrl;
    Atomics.store(ctrl, 0, 0);
    Atomics.store(ctrl, 1, 0);
    this.#port.post(job);
    const deadline = Date.now() + JOB_TIMEOUT_MS;
    while (Atomics.load(ctrl, 0) === 0) {
      if (Date.now() > deadline) {
        throw new Error(`GPU ${what}: no answer from the GPU worker in ${JOB_TIMEOUT_MS} ms`);
      }
      Atomics.wait(ctrl, 0, 0, 1000);
    }
    if (Atomics.load(ctrl, 0) !== 1) {
      const len = Atomics.load(ctrl, 1);
      const text = new TextDecoder().decode(new Uint8Array(ctrl.buffer, 8, len).slice());
      throw new Error(`GPU ${what} (${JSON.stringify(job, (k, v) => k === "sab" ? undefined : v)}): ${text}`);
    }
  }
}

interface ReadyMessage {
  type: "ready";
  description: string;
  fallback: boolean;
  maxBinding: number;
  /** The worker's OS thread id, where it could read it. */
  tid: string | null;
}
