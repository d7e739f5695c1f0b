/**
 * Worker of `compressedPpl` and `sensitivity` (stories.ts): compresses, reloads and evaluates models, and runs
 * ASVD's sensitivity sweep, in its own isolate.
 *
 * The pipeline forces full garbage collections (found through `globalThis.gc` first, src/pipeline/memory.ts;
 * paced by `COLLECT_BYTES`) so that the resident memory of a large model stays near what is alive. On
 * stories260K (1 MB of weights) there is nothing to reclaim, and a collection of the kernel's 80 MB heap is
 * slow. This worker defines a no-op `gc`, which the pipeline then uses; it changes no result, only the
 * peak-memory report, and costs about 0.7× the kernel's CPU time per compression (see `compressedPpl`). The
 * kernel itself is untouched.
 *
 * Posts `{ ready: true }` once it listens (a message sent earlier, while the library's top-level await is
 * pending, would be lost), then answers each job with its result or `{ error }`.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { runJob, type WorkerJob } from "./stories.ts";

(globalThis as { gc?: () => void }).gc = () => {};

self.onmessage = async (e: MessageEvent<WorkerJob>) => {
  try {
    self.postMessage(await runJob(e.data));
  } catch (err) {
    self.postMessage({ error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
  }
};
self.postMessage({ ready: true });
