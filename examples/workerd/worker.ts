/**
 * A Cloudflare Worker that compresses a model fetched by URL: `GET /compress?model=URL&text=URL[&method=svdllm]
 * [&ratio=0.2][&samples=16][&seqlen=256]`. The model (a `.gguf` file or a Hugging Face folder URL) is read by
 * HTTP Range, block by block; the calibration text is fetched whole. The answer is the compressed folder as a
 * `multipart/mixed` body streamed as it is written (default; see `multipart.ts`: the Worker never holds the
 * output), or `&format=tar` for a tar archive of the folder (the library's `tarBlob`: the files under
 * `<out>/`, built once the output is complete, so held in memory), or, when the Worker has an R2 bucket bound
 * as `BUCKET`, the files are put under `<out>/` in it (`&out=NAME`, default the model's name) and the answer
 * is a JSON list of them; `<out>/COMPLETE` is written last, so a folder without it is a partial one. Bad
 * input (a file that is not a model, a missing parameter) gets a 400 with a one-line message, never a hang.
 *
 * workerd forbids compiling WebAssembly from bytes at run time, so the kernels come in precompiled:
 * the entry module (see `build.ts`) imports `svd_llm.wasm` as a module (workerd's CompiledWasm rule) and hands it to
 * {@link makeWorker}. Without it the Worker says, in the `x-svd-llm-kernels` header and in its log, that it
 * runs the TypeScript kernels (10–50× slower).
 *
 * Build and run: `deno run -A examples/workerd/build.ts`, then `workerd serve examples/workerd/dist/config.capnp`.
 *
 * @example
 * ```ts ignore
 * import wasm from "./svd_llm.wasm";
 * import { makeWorker } from "./worker.ts";
 * export default makeWorker(wasm);
 * ```
 *
 * @module
 */
import {
  compress,
  type CompressReport,
  initLinalg,
  type LinalgInfo,
  memorySink,
  tarBlob,
} from "../../mod.ts";
import { multipartSink } from "./multipart.ts";

/** The part of an R2 bucket binding this Worker uses. */
export interface R2BucketLike {
  /** Store `value` under `key`. */
  put(key: string, value: Blob | Uint8Array | string): Promise<unknown>;
}

/** The Worker's bindings. */
export interface WorkerEnv {
  /** Optional R2 bucket: when bound, the output goes there instead of into the response. */
  BUCKET?: R2BucketLike;
}

/** A module Worker: one `fetch` handler. */
export interface ModuleWorker {
  /** Answer one request. */
  fetch(request: Request, env?: WorkerEnv): Promise<Response>;
}

/** What the request asks for, validated. */
interface Job {
  model: URL;
  text: URL;
  method: "svd" | "asvd" | "svdllm";
  removed: number;
  samples: number;
  seqlen: number;
  out: string;
  format: "multipart" | "tar";
}

/** Parse `/compress?…`; throws a RangeError naming the bad parameter. */
function parseJob(url: URL): Job {
  const q = url.searchParams;
  const need = (k: string) => {
    const v = q.get(k);
    if (!v) throw new RangeError(`missing parameter ${k}= (a URL)`);
    try {
      return new URL(v, url);
    } catch {
      throw new RangeError(`parameter ${k}=${JSON.stringify(v)} is not a URL`);
    }
  };
  const num = (k: string, dflt: number, ok: (v: number) => boolean, what: string) => {
    const raw = q.get(k);
    const v = raw === null ? dflt : Number(raw);
    if (!ok(v)) throw new RangeError(`parameter ${k}=${raw} must be ${what}`);
    return v;
  };
  const method = q.get("method") ?? "svdllm";
  if (method !== "svd" && method !== "asvd" && method !== "svdllm") {
    throw new RangeError(`parameter method=${method} must be svd, asvd or svdllm`);
  }
  const model = need("model");
  const out = q.get("out") ??
    (model.pathname.split("/").filter(Boolean).pop() ?? "model").replace(/\.gguf$/i, "");
  if (!/^[\w.-]{1,64}$/.test(out) || out === "." || out === "..") {
    throw new RangeError(`parameter out=${JSON.stringify(out)} must be 1–64 letters, digits, _ . -`);
  }
  const format = q.get("format") ?? "multipart";
  if (format !== "multipart" && format !== "tar") {
    throw new RangeError(`parameter format=${format} must be multipart or tar`);
  }
  return {
    format,
    model,
    text: need("text"),
    method,
    removed: num("ratio", 0.2, (v) => v > 0 && v < 1, "in (0, 1), the fraction removed"),
    samples: num("samples", 16, (v) => Number.isInteger(v) && v >= 1 && v <= 4096, "an integer in 1..4096"),
    seqlen: num("seqlen", 256, (v) => Number.isInteger(v) && v >= 2 && v <= 8192, "an integer in 2..8192"),
    out,
  };
}

/** Fetch the calibration text; a failed fetch names the URL and status. */
async function fetchText(url: URL): Promise<string> {
  const r = await fetch(url);
  if (!r.ok) throw new RangeError(`calibration text ${url.href}: HTTP ${r.status}`);
  return await r.text();
}

const plain = (status: number, message: string, headers: Record<string, string> = {}) =>
  new Response(message + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  });

/** A short summary of a run, for the `x-svd-llm-report` header (ASCII JSON). */
function summary(r: CompressReport, kernels: string) {
  return JSON.stringify({
    method: r.method,
    ratio: r.ratioLabel,
    removed: r.params.linears.removed,
    layers: r.layers.length,
    calibration: r.calibration,
    kernels,
  });
}

/**
 * The Worker, given the precompiled kernels (`wasmModule`, imported from `svd_llm.wasm`) or nothing (then the
 * TypeScript kernels, said in every answer's `x-svd-llm-kernels` header and once in the log).
 */
export function makeWorker(wasmModule?: WebAssembly.Module): ModuleWorker {
  let ready: Promise<LinalgInfo> | null = null;
  let note = "";
  const init = () =>
    ready ??= initLinalg(wasmModule ? { wasmModule } : {}).then((info) => {
      note = info.backend === "wasm"
        ? "wasm (precompiled module)"
        : "ts: no precompiled WebAssembly.Module was given and workerd forbids compiling one at run time; " +
          "products run in TypeScript (10-50x slower). Import svd_llm.wasm as a module and pass it to makeWorker.";
      if (info.backend !== "wasm") console.warn(`@svd/llm worker: kernels ${note}`);
      return info;
    });
  return {
    async fetch(request: Request, env: WorkerEnv = {}): Promise<Response> {
      const url = new URL(request.url);
      await init();
      if (url.pathname === "/health") return plain(200, `ok; kernels ${note}`, { "x-svd-llm-kernels": note });
      if (url.pathname !== "/compress") {
        return plain(404, `no route ${url.pathname}: use /compress?model=URL&text=URL`);
      }
      let job: Job;
      try {
        job = parseJob(url);
      } catch (e) {
        return plain(400, `compress: ${(e as Error).message}`, { "x-svd-llm-kernels": note });
      }
      let text: string;
      try {
        text = await fetchText(job.text);
      } catch (e) {
        return plain(400, `compress: ${(e as Error).message}`, { "x-svd-llm-kernels": note });
      }
      const options = {
        method: job.method,
        ratio: { removed: job.removed },
        calibration: { text, samples: job.samples, seqlen: job.seqlen },
        signal: request.signal,
      };
      const failed = (e: unknown) =>
        plain(
          400,
          `compress ${job.model.href}: ${(e instanceof Error ? e.message : String(e)).split("\n")[0]}`,
          {
            "x-svd-llm-kernels": note,
          },
        );
      if (job.format === "multipart" && !env.BUCKET) {
        // Streamed: headers go out when the first file starts; an error before that is a 400, one after it
        // cuts the body (no closing delimiter).
        const mp = multipartSink(job.out);
        const run = compress(job.model, mp.sink, options).then(() => null, (e: unknown) => e ?? "failed");
        const early = await Promise.race([mp.started.then(() => null), run]);
        if (early !== null) return failed(early);
        run.then((e) => e !== null && console.error(`compress ${job.model.href}: cut short: ${e}`));
        return new Response(mp.readable, {
          headers: {
            "x-svd-llm-kernels": note,
            "content-type": mp.contentType,
            "content-disposition": `attachment; filename="${job.out}.multipart"`,
          },
        });
      }
      const sink = memorySink(job.out);
      let report: CompressReport;
      try {
        report = await compress(job.model, sink, options);
      } catch (e) {
        return failed(e);
      }
      const files = await sink.files;
      const headers = { "x-svd-llm-kernels": note, "x-svd-llm-report": summary(report, note) };
      if (!env.BUCKET) {
        // The library's archive: the files under `<out>/`, which `loadModel` and `tar -xf` read as a folder.
        // workerd's Blob copies its parts: drop ours at once, so the output is held twice only briefly.
        const tar = tarBlob(files, job.out);
        files.clear();
        return new Response(tar, {
          headers: {
            ...headers,
            "content-type": "application/x-tar",
            "content-disposition": `attachment; filename="${job.out}.tar"`,
          },
        });
      }
      const listed: { key: string; bytes: number }[] = [];
      for (const [name, parts] of files) {
        const blob = new Blob(parts as BlobPart[]);
        await env.BUCKET.put(`${job.out}/${name}`, blob);
        listed.push({ key: `${job.out}/${name}`, bytes: blob.size });
        files.delete(name);
      }
      await env.BUCKET.put(`${job.out}/COMPLETE`, JSON.stringify(listed));
      return new Response(JSON.stringify({ bucket: "BUCKET", files: listed }), {
        headers: { ...headers, "content-type": "application/json" },
      });
    },
  };
}
