/**
 * A pool of worker threads running kernels of the shared-memory WebAssembly runtime.
 *
 * Each worker instantiates the same module over the same `shared: true` memory, with its own C stack (the
 * kernels keep no static state; scratch is passed per call), then sleeps in `Atomics.wait` on its own slot of
 * a control block in wasm memory. The calling thread writes a job (kernel index and numeric arguments) into
 * each worker's slot and bumps its generation word, runs the first job itself, then blocks in `Atomics.wait`
 * on the completion counter: the API stays synchronous, and a round trip costs ~10 µs (posting messages
 * measured ~80 µs). Blocking needs a thread that may block: Deno, Bun and Node main threads may, a browser
 * main thread may not ({@link canBlock} is false there and callers stay single-threaded).
 *
 * Workers come from `node:worker_threads` where it exists (Deno, Bun, Node: they are `unref`'d, so an idle
 * pool never keeps a process alive) and from the web `Worker` otherwise, started from the embedded source
 * (`worker_source.ts`) by `spawn.ts`, so they start wherever the library was loaded from (a file, JSR or any
 * http URL, a bundle). {@link ThreadPool.close} terminates them; tests must call it (leak
 * checks).
 *
 * @module
 */
import type { WasmRuntime } from "../wasm/runtime.ts";
import { spawnWorker, type WorkerPort } from "./spawn.ts";
import { WORKER_SOURCE } from "./worker_source.ts";

/** One kernel call: an export name and its numeric arguments. */
export interface Job {
  /** Exported function of the kernel module. */
  fn: string;
  /** Its arguments (byte offsets, sizes, scalars). */
  args: number[];
}

const STACK_BYTES = 65536;
// Control block: header (done count, error count), then one slot per worker:
// i32 generation (the worker waits on it), i32 kernel index, i32 argument count, f64 arguments from byte 16.
const DONE = 0, ERRORS = 1;
const HEADER_BYTES = 64, SLOT_BYTES = 256, MAX_ARGS = (SLOT_BYTES - 16) / 8;

/** Names of the exported functions, in export order: workers and caller agree on kernel indices. */
export function kernelNames(module: WebAssembly.Module): string[] {
  return WebAssembly.Module.exports(module).filter((e) => e.kind === "function").map((e) => e.name);
}

/** Whether this thread may block in `Atomics.wait` (false on a browser main thread). */
export function canBlock(): boolean {
  if (typeof SharedArrayBuffer !== "function") return false;
  try {
    const probe = new Int32Array(new SharedArrayBuffer(4));
    Atomics.wait(probe, 0, 1, 0); // value differs: returns at once, or throws where blocking is forbidden
    return true;
  } catch {
    return false;
  }
}

/** Worker threads sharing the runtime's memory; `size` counts the calling thread too. */
export class ThreadPool {
  /** Threads that run jobs, the calling thread included. */
  readonly size: number;
  #rt: WasmRuntime;
  #ports: WorkerPort[];
  #ctrl: number;
  #stacks: number[];
  #names: Map<string, number>;
  #closed = false;

  private constructor(rt: WasmRuntime, ports: WorkerPort[], ctrl: number, stacks: number[]) {
    this.#rt = rt;
    this.#ports = ports;
    this.#ctrl = ctrl;
    this.#stacks = stacks;
    this.#names = new Map(kernelNames(rt.module).map((n, i) => [n, i]));
    this.size = ports.length + 1;
  }

  /**
   * Start `threads - 1` workers over `rt`'s shared memory. Rejects if the memory is not shared, this thread
   * cannot block, or a worker fails to start.
   */
  static async create(rt: WasmRuntime, threads: number): Promise<ThreadPool> {
    if (!Number.isInteger(threads) || threads < 2) {
      throw new RangeError(`start threads: need an integer ≥ 2 threads, got ${threads}`);
    }
    if (!rt.shared) throw new Error("start threads: the wasm memory is not shared in this runtime");
    if (!canBlock()) throw new Error("start threads: this thread may not block (browser main thread?)");
    const ctrlBytes = HEADER_BYTES + SLOT_BYTES * (threads - 1);
    const ctrl = rt.alloc(ctrlBytes);
    rt.i32(ctrl, ctrlBytes / 4).fill(0);
    const stacks: number[] = [];
    const ports: WorkerPort[] = [];
    try {
      for (let i = 1; i < threads; i++) {
        const stack = rt.alloc(STACK_BYTES);
        stacks.push(stack);
        let ready!: () => void, fail!: (e: unknown) => void;
        const started = new Promise<void>((res, rej) => (ready = res, fail = rej));
        const port = await spawnWorker(
          WORKER_SOURCE,
          (m) => (m as { type?: string }).type === "ready" ? ready() : fail(new Error(String(m))),
          (e) => fail(e),
        );
        ports.push(port);
        const slot = ctrl + HEADER_BYTES + SLOT_BYTES * (i - 1);
        port.post({ module: rt.module, memory: rt.memory, stackTop: stack + STACK_BYTES, ctrl, slot });
        await started;
        port.unref();
      }
    } catch (e) {
      await Promise.all(ports.map((p) => p.terminate()));
      for (const s of stacks) rt.free(s);
      rt.free(ctrl);
      throw new Error(`start threads: a worker failed to start: ${e instanceof Error ? e.message : e}`);
    }
    return new ThreadPool(rt, ports, ctrl, stacks);
  }

  /**
   * Run `jobs` (at most {@link ThreadPool.size}) in parallel: job 0 on this thread, the others on workers.
   * Returns when all are done; throws if any failed.
   */
  run(jobs: Job[]): void {
    if (this.#closed) throw new Error("run threads: the pool is closed");
    if (jobs.length > this.size) {
      throw new RangeError(`run threads: ${jobs.length} jobs for ${this.size} threads`);
    }
    const rt = this.#rt;
    const ctrl = rt.i32(this.#ctrl, 2);
    Atomics.store(ctrl, DONE, 0);
    Atomics.store(ctrl, ERRORS, 0);
    const others = jobs.length - 1;
    for (let i = 1; i < jobs.length; i++) {
      const { fn, args } = jobs[i];
      const index = this.#names.get(fn);
      if (index === undefined) throw new Error(`run threads: this build exports no function "${fn}"`);
      if (args.length > MAX_ARGS) {
        throw new RangeError(`run threads: ${fn} has more than ${MAX_ARGS} arguments`);
      }
      const slot = this.#ctrl + HEADER_BYTES + SLOT_BYTES * (i - 1);
      const words = rt.i32(slot, 3);
      words[1] = index;
      words[2] = args.length;
      rt.f64(slot + 16, args.length).set(args);
      Atomics.add(words, 0, 1); // publishes the job: the worker reads it after seeing the new generation
      Atomics.notify(words, 0);
    }
    let error: unknown = null;
    try {
      if (jobs.length > 0) this.#rt.fn(jobs[0].fn)(...jobs[0].args);
    } catch (e) {
      error = e;
    }
    // Wait for the workers even if our part failed: they write into memory the caller will reuse.
    for (;;) {
      const done = Atomics.load(ctrl, DONE);
      if (done >= others) break;
      Atomics.wait(ctrl, DONE, done, 1000);
    }
    if (error) throw error;
    if (Atomics.load(ctrl, ERRORS) > 0) throw new Error(`run threads: a worker failed running ${jobs[1].fn}`);
  }

  /** Terminate the workers and free their memory. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const ctrl = this.#rt.i32(this.#ctrl, 2);
    Atomics.store(ctrl, DONE, 0);
    for (let i = 0; i < this.#ports.length; i++) {
      const words = this.#rt.i32(this.#ctrl + HEADER_BYTES + SLOT_BYTES * i, 1);
      Atomics.store(words, 0, -1); // stop: leaves its wait loop
      Atomics.notify(words, 0);
    }
    // Wait until every worker has seen the stop (each counts itself done) before the control block and stacks
    // are freed: `terminate()` may resolve before the thread has stopped (Deno), and a worker still waiting
    // on a freed slot that a new pool zeroes would take generation 0 for a job and run garbage in it.
    const deadline = Date.now() + 5000;
    for (;;) {
      const done = Atomics.load(ctrl, DONE);
      if (done >= this.#ports.length || Date.now() > deadline) break;
      Atomics.wait(ctrl, DONE, done, 100);
    }
    await Promise.all(this.#ports.map((p) => p.terminate()));
    for (const s of this.#stacks) this.#rt.free(s);
    this.#rt.free(this.#ctrl);
  }
}
