/**
 * The Chromium rows of `bench/runtimes.ts`: headless Chromium (playwright-core, the Debian binary) opens a
 * cross-origin-isolated page on 127.0.0.1 that loads the browser bundle of mod.ts, either on the page's own
 * thread ("Chromium page") or in a dedicated Worker ("Chromium Worker"). It probes what works (load and eval
 * by URL, compress from a Blob / a folder's Files and from a URL, threads, WebGPU) and times a svdllm
 * compression (20 % removed, one thread, into memory, as the other rows). A fresh browser per cell.
 * Memory is the peak resident set (VmHWM, /proc) of the page's renderer process, which holds the page, its
 * Workers and their wasm heaps (the browser and GPU processes are not counted); CPU time is that process's
 * user+system time over the run.
 *
 * @module
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { serveFiles } from "../test/edge/_deno.ts";

/** A model of the table: its name, and its file (GGUF) or folder (Hugging Face layout). */
export interface BrowserModel {
  /** Column name. */
  name: string;
  /** A `.gguf` file or a model folder. */
  path: string;
}

/** One cell: wall and CPU seconds, peak MiB, and what the probes found. */
export interface BrowserCell {
  /** Wall time of the compression, seconds (measured in the page). */
  seconds: number;
  /** Renderer CPU time (user+system) over the run, seconds. */
  cpuSeconds: number;
  /** Renderer VmHWM, MiB. */
  peakMiB: number;
  /** Renderer VmRSS when the run starts (page and library loaded), MiB: the browser's own share. */
  baseMiB: number;
  /** Probe results. */
  works: Record<string, string>;
}

const ISOLATED = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
  "cross-origin-resource-policy": "same-origin",
};

// The measuring code, the same on the page's thread and in a Worker: `lib` is the bundle of mod.ts.
const CORE = `
export async function measure(lib, job) {
  const works = {};
  const probe = async (k, f) => {
    try { works[k] = await f(); } catch (e) { works[k] = "no: " + String(e?.message ?? e).split("\\n")[0].slice(0, 80); }
  };
  const text = await (await fetch(job.text)).text();
  const calibration = { text, samples: job.samples, seqlen: job.seqlen };
  await lib.initLinalg({ threads: 1 });
  const t0 = performance.now();
  await job.mark("start");
  const sink = lib.memorySink();
  await lib.compress(new URL(job.model), sink, { method: "svdllm", ratio: { removed: 0.2 }, calibration });
  await sink.files;
  const seconds = (performance.now() - t0) / 1000;
  await job.mark("end");
  await probe("load+eval (URL)", async () => {
    const m = await lib.loadModel(new URL(job.model));
    try {
      const r = await lib.perplexity(m, m.tokenizer.encode(text, { bos: true }).slice(0, 257), { window: 256 });
      return "yes (ppl " + r.ppl.toFixed(3) + ")";
    } finally { await m.close(); }
  });
  await probe("compress Blob", async () => {
    // a GGUF file as a Blob; a folder as its Files (what a folder picker gives)
    const input = job.files.length === 1
      ? new Blob([await (await fetch(job.files[0])).arrayBuffer()])
      : await Promise.all(job.files.map(async (u) => new File([await (await fetch(u)).arrayBuffer()], u.split("/").pop())));
    await lib.compress(input, lib.memorySink(), { method: "svd", ratio: { removed: 0.2 } });
    return job.files.length === 1 ? "yes" : "yes (a folder's Files)";
  });
  works["compress URL"] = "yes";
  await probe("threads", async () => {
    const info = await lib.initLinalg({ threads: 2 });
    const r = info.threads > 1 ? "yes (" + info.threads + ")" : "no: " + info.threadsNote;
    await lib.initLinalg({ threads: 1 });
    return r;
  });
  await probe("WebGPU", async () => {
    const info = await lib.initLinalg({ gpu: true });
    const r = info.gpu ? "yes (" + (info.gpu.adapter || "unnamed adapter") + (info.gpu.fallback ? ", software" : "") + ")" : "no: " + info.gpuNote;
    await lib.initLinalg({});
    return r;
  });
  return { seconds, works };
}`;

// The Worker: runs `measure` and asks the page to mark the run's start and end (the page POSTs the marks,
// the bench reads the renderer's CPU time at each).
const WORKER = `
import { measure } from "./core.js";
let n = 0;
const waits = new Map();
self.onmessage = async ({ data }) => {
  if (data.marked !== undefined) return waits.get(data.marked)?.();
  const lib = await import("./svd_llm.js");
  const mark = (what) => new Promise((r) => { const id = n++; waits.set(id, r); self.postMessage({ mark: what, id }); });
  try { self.postMessage({ result: await measure(lib, { ...data, mark }) }); }
  catch (e) { self.postMessage({ result: { error: String(e?.message ?? e) } }); }
};`;

const PAGE = `
import { measure } from "./core.js";
const q = new URLSearchParams(location.search);
const job = JSON.parse(q.get("job"));
const mark = (what) => fetch("/mark/" + what, { method: "POST", body: "" });
const report = (r) => fetch("/result", { method: "POST", body: JSON.stringify(r) });
if (q.get("mode") === "worker") {
  const w = new Worker("./worker.js", { type: "module" });
  w.onmessage = async ({ data }) => {
    if (data.mark) { await mark(data.mark); w.postMessage({ marked: data.id }); }
    else report(data.result);
  };
  w.postMessage(job);
} else {
  try { report(await measure(await import("./svd_llm.js"), { ...job, mark })); }
  catch (e) { report({ error: String(e?.message ?? e) }); }
}`;

/** Processes under `pid` (itself included), from /proc. */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
    } catch { /* gone */ }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i]) ?? []));
  return out;
}

/** The renderer processes of the browser whose command line holds `marker`. */
function renderers(marker: string): number[] {
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    let cmd = "";
    try {
      cmd = readFileSync(`/proc/${d}/cmdline`, "utf8");
    } catch { /* gone */ }
    if (!cmd.includes(marker) || cmd.includes("--type=")) continue;
    return descendants(Number(d)).filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, "utf8").includes("--type=renderer");
      } catch {
        return false;
      }
    });
  }
  return [];
}

const cpuOf = (pids: number[]) =>
  pids.reduce((s, p) => {
    try {
      const f = readFileSync(`/proc/${p}/stat`, "utf8");
      const v = f.slice(f.lastIndexOf(")") + 2).split(" ");
      return s + (Number(v[11]) + Number(v[12])) / 100; // utime + stime, clock ticks (USER_HZ 100)
    } catch {
      return s;
    }
  }, 0);
/** The largest `field` (VmHWM, VmRSS) of `pids` from /proc, MiB. */
const memOf = (pids: number[], field: string) =>
  Math.max(
    0,
    ...pids.map((p) => {
      try {
        const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${p}/status`, "utf8"));
        return Number(m?.[1] ?? 0) / 1024;
      } catch {
        return 0;
      }
    }),
  );

/**
 * Measure `model` in `mode` ("page": the page's own thread; "worker": a dedicated Worker) in a fresh
 * headless Chromium at `executablePath`, the browser bundle of mod.ts being `bundle`.
 */
export async function measureInChromium(
  executablePath: string,
  bundle: Uint8Array,
  model: BrowserModel,
  mode: "page" | "worker",
  text: string,
  samples: number,
  seqlen: number,
): Promise<BrowserCell> {
  const { chromium } = await import("playwright-core");
  const gguf = /\.gguf$/i.test(model.path);
  const dir = gguf ? join(model.path, "..") : model.path;
  const names = gguf ? [model.path.split("/").pop()!] : readdirSync(dir).filter((n) => !/\.md$/.test(n));
  let answer!: (r: Record<string, unknown>) => void;
  const result = new Promise<Record<string, unknown>>((r) => answer = r);
  const marks: Record<string, number> = {};
  let pids: number[] = [];
  let peakMiB = 0, baseMiB = 0;
  const js = (body: string) => ({ type: "text/javascript", body });
  const server = await serveFiles(
    dir,
    names,
    {
      "/b/svd_llm.js": { type: "text/javascript", body: bundle },
      "/b/core.js": js(CORE),
      "/b/worker.js": js(WORKER),
      "/b/page.js": js(PAGE),
      "/b/index.html": {
        type: "text/html",
        body: `<!doctype html><script type="module" src="./page.js"></script>`,
      },
      "/b/text.txt": { type: "text/plain", body: text },
    },
    ISOLATED,
    (path, body) => {
      if (path === "/result") answer(JSON.parse(body));
      const m = /^\/mark\/(\w+)$/.exec(path);
      if (m) {
        if (m[1] === "start") {
          pids = renderers(marker);
          baseMiB = memOf(pids, "VmRSS");
        }
        marks[m[1]] = cpuOf(pids);
        if (m[1] === "end") peakMiB = memOf(pids, "VmHWM"); // before the probes, which would add their own peaks
      }
    },
  );
  const marker = `--svd-llm-bench=${crypto.randomUUID()}`;
  const browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--enable-unsafe-webgpu", marker],
    timeout: 600_000,
  });
  try {
    const page = await browser.newPage();
    const base = server.origin;
    const job = {
      model: gguf ? `${base}/${names[0]}` : `${base}/`,
      files: gguf ? [`${base}/${names[0]}`] : names.map((n) => `${base}/${n}`),
      text: `${base}/b/text.txt`,
      samples,
      seqlen,
    };
    await page.goto(`${base}/b/index.html?mode=${mode}&job=${encodeURIComponent(JSON.stringify(job))}`);
    const r = await result;
    if (r.error) throw new Error(`${model.name} in the Chromium ${mode}: ${r.error}`);
    return {
      seconds: r.seconds as number,
      cpuSeconds: marks.end - marks.start,
      peakMiB,
      baseMiB,
      works: r.works as Record<string, string>,
    };
  } finally {
    await browser.close();
    await server.close();
  }
}
