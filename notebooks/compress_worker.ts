/**
 * Worker of `compressedPpl` (stories.ts): compresses, reloads and evaluates one model in a fresh isolate,
 * whose small heap keeps the pipeline's per-layer garbage collections cheap. Posts `{ ready: true }` once it
 * listens (a message sent earlier, while the library's top-level await is pending, would be lost), then
 * answers each job with `{ ppl, report }` or `{ error }`.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { type CompressJob, compressedPplHere } from "./stories.ts";

self.onmessage = async (e: MessageEvent<CompressJob>) => {
  try {
    self.postMessage(await compressedPplHere(e.data));
  } catch (err) {
    self.postMessage({ error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
  }
};
self.postMessage({ ready: true });
