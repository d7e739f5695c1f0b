/**
 * Starting a worker from embedded source text, wherever the library was loaded from (a file, JSR or any http
 * URL, a bundle): `node:worker_threads` from a `data:` URL where it exists (Deno, Bun, Node; `unref`-able, so
 * an idle worker never keeps a process alive), else a web `Worker` from a `blob:` URL (same origin as the
 * page, so a cross-origin-isolated page's worker may share memory; a `data:` worker's origin is opaque).
 * Used by the thread pool (`pool.ts`) and the WebGPU worker (`../webgpu/gpu_worker.ts`).
 *
 * @module
 */

/** A started worker, whichever API it came from. */
export interface WorkerPort {
  /** Send a message (structured clone; shared memory is shared). */
  post(msg: unknown): void;
  /** Stop the worker from keeping the process alive (call after start-up: waiting for it needs it alive). */
  unref(): void;
  /** Stop the worker. */
  terminate(): Promise<unknown> | void;
}

const urls = new Map<string, { data: URL; blob?: string }>();

function urlsOf(source: string): { data: URL; blob?: string } {
  let u = urls.get(source);
  if (u) return u;
  const data = new URL("data:text/javascript," + encodeURIComponent(source));
  let blob: string | undefined;
  try {
    blob = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  } catch {
    blob = undefined; // no Blob URLs here: the data: URL serves
  }
  u = { data, blob };
  urls.set(source, u);
  return u;
}

/**
 * Start a worker running the ES module `source`. The worker talks through `node:worker_threads`'
 * `parentPort` where that import succeeds, else through its web worker scope (`self`).
 */
export async function spawnWorker(
  source: string,
  onMessage: (m: unknown) => void,
  onError: (e: unknown) => void,
): Promise<WorkerPort> {
  let wt: typeof import("node:worker_threads") | null = null;
  try {
    wt = await import("node:worker_threads");
  } catch {
    wt = null;
  }
  const u = urlsOf(source);
  if (wt?.Worker) {
    const w = new wt.Worker(u.data);
    w.on("message", onMessage);
    w.on("error", onError);
    return { post: (m) => w.postMessage(m), unref: () => w.unref(), terminate: () => w.terminate() };
  }
  const w = new Worker(u.blob ?? u.data, { type: "module" });
  w.onmessage = (e) => onMessage(e.data);
  w.onerror = (e) => onError(e);
  return { post: (m) => w.postMessage(m), unref: () => {}, terminate: () => w.terminate() };
}
