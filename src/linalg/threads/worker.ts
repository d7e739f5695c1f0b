/**
 * Worker side of the thread pool: instantiate the kernel module over the shared memory with a private C
 * stack, answer `{type: "ready"}`, then serve jobs from this worker's slot of the control block until told
 * to stop (generation −1) or terminated. Protocol and layout: see `pool.ts`.
 *
 * @module
 */

interface InitMessage {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  stackTop: number;
  /** Byte offset of the control block header (done count, error count). */
  ctrl: number;
  /** Byte offset of this worker's slot. */
  slot: number;
}

function serve(msg: InitMessage, reply: (m: unknown) => void): void {
  const { memory } = msg;
  const instance = new WebAssembly.Instance(msg.module, { env: { memory } });
  const exports = instance.exports as Record<string, unknown>;
  (exports.__stack_pointer as WebAssembly.Global).value = msg.stackTop;
  const fns = WebAssembly.Module.exports(msg.module).filter((e) => e.kind === "function").map((e) =>
    exports[e.name] as (...a: number[]) => unknown
  );
  // A shared memory's buffer never detaches when it grows, so views taken once stay valid.
  const header = new Int32Array(memory.buffer, msg.ctrl, 2);
  const words = new Int32Array(memory.buffer, msg.slot, 3);
  const args = new Float64Array(memory.buffer, msg.slot + 16, (256 - 16) / 8);
  reply({ type: "ready" });
  let gen = Atomics.load(words, 0);
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

let wt: typeof import("node:worker_threads") | null = null;
try {
  wt = await import("node:worker_threads");
} catch {
  wt = null;
}
const port = wt?.parentPort;
if (port) {
  port.once("message", (m: InitMessage) => serve(m, (r) => port.postMessage(r)));
} else {
  const scope = globalThis as unknown as {
    onmessage: ((e: MessageEvent) => void) | null;
    postMessage(m: unknown): void;
  };
  scope.onmessage = (e) => {
    scope.onmessage = null;
    serve(e.data, (r) => scope.postMessage(r));
  };
}
