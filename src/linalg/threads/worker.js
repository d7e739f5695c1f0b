/**
 * Worker side of the thread pool: instantiate the kernel module over the shared memory with a private C
 * stack, answer `{type: "ready"}`, then serve jobs from this worker's slot of the control block until told
 * to stop (generation −1) or terminated. Protocol and layout: see `pool.ts`.
 *
 * Plain JavaScript on purpose: `deno test` type-checks a TypeScript worker again at every spawn (seconds
 * each); this file is small and its types are spelled out in JSDoc.
 *
 * @module
 */

/**
 * @typedef {object} InitMessage
 * @property {WebAssembly.Module} module the kernel module (shared-memory flavour)
 * @property {WebAssembly.Memory} memory the shared memory
 * @property {number} stackTop top of this worker's C stack (byte offset)
 * @property {number} ctrl byte offset of the control block header (done count, error count)
 * @property {number} slot byte offset of this worker's slot
 */

/**
 * Instantiate, report ready, then loop: wait for a new generation, run the job, count it done.
 * @param {InitMessage} msg
 * @param {(m: unknown) => void} reply
 */
function serve(msg, reply) {
  const { memory } = msg;
  const instance = new WebAssembly.Instance(msg.module, { env: { memory } });
  const exports = instance.exports;
  /** @type {WebAssembly.Global} */ (exports.__stack_pointer).value = msg.stackTop;
  const fns = WebAssembly.Module.exports(msg.module).filter((e) => e.kind === "function").map((
    e,
  ) => /** @type {(...a: number[]) => unknown} */ (exports[e.name]));
  // A shared memory's buffer never detaches when it grows, so views taken once stay valid.
  const header = new Int32Array(memory.buffer, msg.ctrl, 2);
  const words = new Int32Array(memory.buffer, msg.slot, 3);
  const args = new Float64Array(memory.buffer, msg.slot + 16, (256 - 16) / 8);
  reply({ type: "ready" });
  // The slot starts at generation 0 (zeroed before the worker was spawned). Not a load here: the caller may
  // already have posted job 1 between our "ready" and this line.
  let gen = 0;
  for (;;) {
    Atomics.wait(words, 0, gen);
    const g = Atomics.load(words, 0);
    if (g === gen) continue;
    if (g < 0) return;
    gen = g;
    try {
      fns[words[1]](...args.subarray(0, words[2]));
    } catch {
      Atomics.add(header, 1, 1);
    }
    Atomics.add(header, 0, 1);
    Atomics.notify(header, 0);
  }
}

/** @type {{ once(e: "message", f: (m: InitMessage) => void): void; postMessage(m: unknown): void } | null} */
let port = null;
try {
  // Absent in browsers, which fall through to the web worker scope below.
  port = (await import("node:worker_threads")).parentPort ?? null;
} catch {
  port = null;
}
if (port) {
  const p = port;
  p.once("message", (m) => serve(m, (r) => p.postMessage(r)));
} else {
  const scope =
    /** @type {{ onmessage: ((e: MessageEvent) => void) | null; postMessage(m: unknown): void }} */ (
      /** @type {unknown} */ (globalThis)
    );
  scope.onmessage = (e) => {
    scope.onmessage = null;
    serve(e.data, (r) => scope.postMessage(r));
  };
}
