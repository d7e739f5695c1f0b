/**
 * The worker side of the thread pool, as source text: the pool starts each worker from a `data:` (Node's
 * `worker_threads`: Deno, Bun, Node) or `blob:` URL (web `Worker`) made of {@link WORKER_SOURCE}, so no file
 * has to sit beside the library. A file URL next to `import.meta.url` failed wherever the library is not on
 * a file system: imported from JSR or any http(s) URL ("The URL must be one of scheme file or data"), or
 * bundled (the file is not in the bundle).
 *
 * What the worker does: instantiate the kernel module it is sent (the caller's compiled module: no bytes, no
 * compilation here) over the shared memory with a private C stack, answer `{type: "ready"}`, then serve jobs
 * from its slot of the control block until told to stop (generation −1) or terminated. Protocol and layout:
 * see `pool.ts`. Plain JavaScript (it is never type-checked or transpiled), kept small.
 *
 * @module
 */

/** The worker's module source (ES module, top-level await). */
export const WORKER_SOURCE: string = `
// msg: { module: WebAssembly.Module, memory: WebAssembly.Memory (shared), stackTop, ctrl, slot } (byte offsets)
function serve(msg, reply) {
  const { memory } = msg;
  const instance = new WebAssembly.Instance(msg.module, { env: { memory } });
  const exports = instance.exports;
  exports.__stack_pointer.value = msg.stackTop;
  const fns = WebAssembly.Module.exports(msg.module).filter((e) => e.kind === "function")
    .map((e) => exports[e.name]);
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
    if (g < 0) {
      // Acknowledge the stop: the caller frees (and may reuse) the control block and stacks only after this.
      Atomics.add(header, 0, 1);
      Atomics.notify(header, 0);
      return;
    }
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

// A browser worker must listen before its first await: a message arriving while no handler is set is lost
// (the pool would wait for "ready" forever). Node's worker_threads (Deno, Bun, Node, where \`process\` exists)
// queue messages on parentPort until a listener is attached.
if (typeof process === "undefined") {
  self.onmessage = (e) => {
    self.onmessage = null;
    serve(e.data, (r) => self.postMessage(r));
  };
} else {
  const port = (await import("node:worker_threads")).parentPort;
  port.once("message", (m) => serve(m, (r) => port.postMessage(r)));
}
`;
