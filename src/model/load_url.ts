/**
 * Open a model over HTTP(S) without downloading it. The loader is one ({@link loadModel} reads local folders
 * and URL folders alike); this module keeps the URL-only entry point.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import type { OpenUrlOptions } from "../io/url_source.ts";
import { type LoadedModel, loadModel } from "./load.ts";

/**
 * Open a model by URL: `https://…/model.gguf`, or a folder URL whose files sit beside it
 * (`https://huggingface.co/<repo>/resolve/main/` works). `opts` carries fetch, headers (a token), retries,
 * a timeout and an abort signal. Same as {@link loadModel} on a URL.
 *
 * @example
 * ```ts ignore
 * import { loadModelUrl } from "./load_url.ts";
 * const m = await loadModelUrl("https://huggingface.co/org/model/resolve/main/", { timeoutMs: 10_000 });
 * ```
 */
export async function loadModelUrl(url: string | URL, opts: OpenUrlOptions = {}): Promise<LoadedModel> {
  let u: URL;
  try {
    u = url instanceof URL ? url : new URL(url);
  } catch {
    throw new FormatError(String(url), "load model: not a valid URL");
  }
  return await loadModel(u, opts);
}
