/**
 * Worker side of the thread pool: instantiate the kernel module over the shared memory with a private C
 * stack, then run jobs as they arrive and count them done in the control words.
 *
 * Messages: `{type: "init", module, memory, stackTop}` → replies `{type: "ready"}`;
 * `{type: "run", fn, args, ctrl}` → runs `fn(...args)`, increments the error word on failure and then the done
 * word at `ctrl`, and wakes the waiting thread.
 *
 * @module
 */

interface InitMessage {
  type: "init";
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  stackTop: number;
}

interface RunMessage {
  type: "run";
  fn: string;
  args: number[];
  ctrl: number;
}

let exports: Record<string, unknown> | null = null;
let memory: WebAssembly.Memory | null = null;

function handle(msg: InitMessage | RunMessage, reply: (m: unknown) => void): void {
  if (msg.type === "init") {
    memory = msg.memory;
    // Synchronous instantiation keeps messages in order: a run never overtakes the init.
    const instance = new WebAssembly.Instance(msg.module, { env: { memory } });
    exports = instance.exports as Record<string, unknown>;
    (exports.__stack_pointer as WebAssembly.Global).value = msg.stackTop;
    reply({ type: "ready" });
    return;
  }
  const ctrl = new Int32Array(memory!.buffer, msg.ctrl, 4);
  try {
    (exports![msg.fn] as (...a: number[]) => unknown)(...msg.args);
  } catch {
    Atomics.add(ctrl, 1, 1);
  }
  Atomics.add(ctrl, 0, 1);
  Atomics.notify(ctrl, 0);
}

let wt: typeof import("node:worker_threads") | null = null;
try {
  wt = await import("node:worker_threads");
} catch {
  wt = null;
}
const port = wt?.parentPort;
if (port) {
  port.on("message", (m: InitMessage | RunMessage) => handle(m, (r) => port.postMessage(r)));
} else {
  const scope = globalThis as unknown as {
    onmessage: ((e: MessageEvent) => void) | null;
    postMessage(m: unknown): void;
  };
  scope.onmessage = (e) => handle(e.data, (r) => scope.postMessage(r));
}
