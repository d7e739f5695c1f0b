// WebGPU in Chromium: the pipeline's GPU path (`initLinalg({ gpu: true })`: large float32 products and the
// calibration Gram on a device owned by a nested Worker) gives the wasm path's perplexity to 1e-4 relative,
// on stories260K and on its svdllm-compressed (20 %) model. A minimal page (fixtures/webgpu/) served from
// 127.0.0.1 with COOP/COEP runs the browser bundle of mod.ts in a module Worker, with 2 worker threads;
// headless Chromium (playwright-core, `--enable-unsafe-webgpu`) offers its software adapter, SwiftShader. The
// page loads the model by URL (Range), compresses into memory, PUTs the output back to this test's server and
// reloads it from there by URL. The wasm path in Chromium is also checked against the same run here, in this
// process. Speed is printed as measured on a **software adapter** (wall time in the page, and the CPU time of
// all of Chromium's processes): it says nothing about a real GPU. Waits are on the page's answers; the
// timeouts only bound hangs. Skipped with a message where no Chromium is installed or it offers no adapter.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { Buffer } from "node:buffer";
import type { Browser } from "playwright-core";
import { root, sendBytes } from "./_deno.ts";
import { browserBundle, chromiumSkip, ISOLATED, openChromium } from "./_chromium.ts";
import { loadModel } from "../../src/model/load.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { compress } from "../../src/pipeline/compress.ts";

const MODEL = "models/stories260K/stories260K.gguf";
const TEXT = "data/tinystories-valid.part1.txt";
const FIXTURES = join(root, "test/edge/fixtures/webgpu");
const WAIT_MS = 900_000; // bounds a hang per answer; a software adapter on a loaded machine is slow
/** The probe starts and stops the GPU path only; the library gives up on an adapter after 120 s. */
const PROBE_WAIT_MS = 300_000;
/** Products of 2¹⁶ multiply-adds and more go to the GPU: the linears, attention, head and every Gram. */
const GPU_MIN_WORK = 1 << 16;
/** Both runs as the page runs: worker threads beside the GPU (bit-identical to one thread, as here). */
const THREADS = 2;

interface Evaluated {
  ppl: number;
  tokens: number;
  seconds: number;
}
interface RunAnswer {
  type: "done" | "error";
  message?: string;
  dense: Evaluated;
  compressed: Evaluated;
  compressSeconds: number;
  gpu: { adapter: string; fallback: boolean; products: number; grams: number } | null;
  threads: number;
  threadsNote: string | null;
}
interface ProbeAnswer {
  type: "done" | "error";
  message?: string;
  gpu: { adapter: string; fallback: boolean } | null;
  gpuNote: string | null;
  crossOriginIsolated: boolean;
}

/**
 * Serve the page, the bundle, the model and the text from 127.0.0.1 (COOP/COEP, single byte ranges), and
 * keep what the page PUTs under /out/ in memory, served back the same way.
 */
async function servePage(bundle: Uint8Array) {
  const files = new Map<string, Uint8Array>([
    ["/index.html", readFileSync(join(FIXTURES, "index.html"))],
    ["/worker.js", readFileSync(join(FIXTURES, "worker.js"))],
    ["/svd_llm.js", bundle],
    [`/${MODEL}`, readFileSync(join(root, MODEL))],
    [`/${TEXT}`, readFileSync(join(root, TEXT))],
  ]);
  const type = (p: string) =>
    p.endsWith(".html") ? "text/html" : p.endsWith(".js") ? "text/javascript" : "application/octet-stream";
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    if (req.method === "PUT" && /^\/out\/\w+\/[\w.-]+$/.test(path)) {
      const parts: Uint8Array[] = [];
      req.on("data", (d: Uint8Array) => parts.push(d));
      req.on("end", () => {
        files.set(path, new Uint8Array(Buffer.concat(parts)));
        res.writeHead(201, ISOLATED);
        res.end();
      });
      return;
    }
    const body = files.get(path);
    if (req.method !== "GET" || !body) {
      res.writeHead(404, ISOLATED);
      res.end(`not served: ${req.method} ${path}`);
      return;
    }
    sendBytes(res, body, type(path), req.headers.range, ISOLATED);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/**
 * CPU seconds (user + sys) so far of this process's live descendants (Chromium's processes, playwright's
 * only children while the page runs), from /proc (Linux); NaN elsewhere.
 */
function childrenCpuSeconds(): number {
  const pid = process.pid;
  try {
    const parent = new Map<number, number>(), cpu = new Map<number, number>();
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      try {
        // Fields after the parenthesised name: state ppid … utime(14) stime(15) cutime(16) cstime(17).
        const f = readFileSync(`/proc/${d}/stat`, "utf8").replace(/^.*\) /, "").split(" ");
        parent.set(Number(d), Number(f[1]));
        cpu.set(Number(d), Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]));
      } catch { /* the process ended meanwhile */ }
    }
    let ticks = 0;
    for (const [p] of cpu) {
      if (p === pid) continue;
      for (let q: number | undefined = p; q !== undefined && q > 1; q = parent.get(q)) {
        if (q === pid) {
          ticks += cpu.get(p)!;
          break;
        }
      }
    }
    return ticks / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

/** The same run as the page's wasm path, here: dense and compressed perplexity. */
async function runHere(): Promise<{ dense: number; compressed: number }> {
  const text = readFileSync(join(root, TEXT), "utf8");
  const ppl = async (input: string) => {
    const m = await loadModel(input);
    try {
      return (await perplexity(m, m.tokenizer.encode(text, { bos: true }), { window: 512 })).ppl;
    } finally {
      await m.close();
    }
  };
  const dir = mkdtempSync(join(tmpdir(), "svd-llm-webgpu-here-"));
  try {
    const out = join(dir, "out");
    await compress(join(root, MODEL), out, {
      method: "svdllm",
      ratio: { removed: 0.2 },
      calibration: { text, samples: 8, seqlen: 128 },
    });
    return { dense: await ppl(join(root, MODEL)), compressed: await ppl(out) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test(
  "Chromium + WebGPU (SwiftShader): stories260K and its svdllm 20 % model, perplexity equal to wasm to 1e-4",
  {
    skip: chromiumSkip,
    timeout: 3 * WAIT_MS,
  },
  async () => {
    const server = await servePage(await browserBundle());
    let browser: Browser | undefined;
    try {
      /** A fresh Chromium on the page, and `ask`: the Worker's answer to a message, bounded by `waitMs`. */
      const openPage = async () => {
        const opened = await openChromium(`${server.origin}/index.html`, WAIT_MS, { consoleErrors: true });
        browser = opened.browser;
        const { page, errors } = opened;
        await page.waitForSelector("html[data-ready]");
        assert.equal(
          await page.getAttribute("html", "data-ready"),
          "true",
          "the page is not cross-origin isolated",
        );
        /** The Worker's answer to `m`; rejects rather than hangs when none comes in time (cleanup runs). */
        const ask = async <T>(m: Record<string, unknown>, waitMs = WAIT_MS): Promise<T> => {
          let timer: ReturnType<typeof setTimeout> | undefined;
          try {
            return await Promise.race([
              page.evaluate(
                (msg) => (globalThis as unknown as { ask(m: unknown): Promise<unknown> }).ask(msg),
                m,
              ) as Promise<T>,
              new Promise<never>((_, reject) => {
                timer = setTimeout(
                  () => reject(new Error(`no answer from the page in ${waitMs} ms to ${JSON.stringify(m)}`)),
                  waitMs,
                );
              }),
            ]);
          } finally {
            clearTimeout(timer);
          }
        };
        return { errors, ask };
      };

      // Chromium's GPU process once left the adapter request of a fresh browser unanswered (1 of ≈ 10 suites,
      // at load ≈ 12; the page idle for 900 s). The library bounds that wait (the probe then answers "no
      // adapter and device in 120 s"); the probe itself is bounded too. Either way, one fresh browser more:
      // an unanswered start-up is Chromium's, not the library's, and the parity below is what is tested.
      let opened = await openPage();
      let probe = await opened.ask<ProbeAnswer>({ type: "probe" }, PROBE_WAIT_MS).catch((e: Error) => e);
      if (probe instanceof Error || (!probe.gpu && /no adapter and device in/.test(probe.gpuNote ?? ""))) {
        console.log(
          `note: Chromium's first probe: ${
            probe instanceof Error ? probe.message : probe.gpuNote
          }; a fresh browser`,
        );
        await browser?.close();
        opened = await openPage();
        probe = await opened.ask<ProbeAnswer>({ type: "probe" }, PROBE_WAIT_MS);
      }
      const { errors, ask } = opened;
      assert.equal(probe.type, "done", `the page's probe failed: ${probe.message}`);
      if (!probe.gpu) {
        console.log(`skip: Chromium offers no WebGPU adapter here (${probe.gpuNote})`);
        return;
      }
      const runOnPage = async (gpu: boolean) => {
        const cpu0 = childrenCpuSeconds(), t0 = performance.now();
        const r = await ask<RunAnswer>({
          type: "run",
          gpu,
          gpuMinWork: GPU_MIN_WORK,
          threads: THREADS,
          model: `${server.origin}/${MODEL}`,
          text: `${server.origin}/${TEXT}`,
          out: `${server.origin}/out/${gpu ? "gpu" : "wasm"}/`,
        });
        assert.equal(r.type, "done", `the page's ${gpu ? "GPU" : "wasm"} run failed: ${r.message}`);
        return { ...r, wall: (performance.now() - t0) / 1000, cpu: childrenCpuSeconds() - cpu0 };
      };
      const wasm = await runOnPage(false);
      const gpu = await runOnPage(true);
      assert.deepEqual(errors, [], "errors on the page");

      assert.equal(wasm.gpu, null);
      for (const r of [wasm, gpu]) assert.equal(r.threads, THREADS, `threads: ${r.threadsNote}`);
      assert.ok(
        gpu.gpu!.products > 100 && gpu.gpu!.grams > 0,
        `too little ran on the GPU: ${JSON.stringify(gpu.gpu)}`,
      );
      assert.equal(gpu.dense.tokens, 5148);
      const rel = (a: number, b: number) => Math.abs(a / b - 1);
      assert.ok(
        rel(gpu.dense.ppl, wasm.dense.ppl) <= 1e-4,
        `ppl GPU ${gpu.dense.ppl} vs wasm ${wasm.dense.ppl}`,
      );
      assert.ok(
        rel(gpu.compressed.ppl, wasm.compressed.ppl) <= 1e-4,
        `compressed ppl GPU ${gpu.compressed.ppl} vs wasm ${wasm.compressed.ppl}`,
      );
      assert.ok(gpu.compressed.ppl > wasm.dense.ppl * 1.5, "compression did not change the model");
      // Chromium's wasm path is this runtime's: the same kernels, the same figures.
      const here = await runHere();
      assert.ok(
        rel(wasm.dense.ppl, here.dense) <= 1e-9,
        `Chromium wasm ${wasm.dense.ppl} vs here ${here.dense}`,
      );
      assert.ok(
        rel(wasm.compressed.ppl, here.compressed) <= 1e-9,
        `Chromium wasm compressed ${wasm.compressed.ppl} vs here ${here.compressed}`,
      );

      const a = gpu.gpu!;
      const f = (x: number) => x.toFixed(2);
      console.log(
        `Chromium WebGPU adapter: "${a.adapter}"${a.fallback ? " (software fallback adapter)" : ""}; ` +
          `${a.products} products and ${a.grams} Grams on it`,
      );
      console.log(
        `ppl dense: wasm ${wasm.dense.ppl.toFixed(6)}, GPU ${gpu.dense.ppl.toFixed(6)} (rel ${
          rel(gpu.dense.ppl, wasm.dense.ppl).toExponential(1)
        }); svdllm 20 %: wasm ${wasm.compressed.ppl.toFixed(6)}, GPU ${gpu.compressed.ppl.toFixed(6)} (rel ${
          rel(gpu.compressed.ppl, wasm.compressed.ppl).toExponential(1)
        }); here ${here.dense.toFixed(6)} / ${here.compressed.toFixed(6)}`,
      );
      console.log(
        `software-adapter speed (says nothing about a real GPU), GPU / wasm: eval ${f(gpu.dense.seconds)} / ${
          f(wasm.dense.seconds)
        } s (${f(gpu.dense.seconds / wasm.dense.seconds)}×), compress ${f(gpu.compressSeconds)} / ${
          f(wasm.compressSeconds)
        } s (${f(gpu.compressSeconds / wasm.compressSeconds)}×); whole run wall ${f(gpu.wall)} / ${
          f(wasm.wall)
        } s, Chromium CPU (user+sys, all processes) ${f(gpu.cpu)} / ${f(wasm.cpu)} s (${
          f(gpu.cpu / wasm.cpu)
        }×)`,
      );
    } finally {
      await browser?.close();
      await server.close();
    }
  },
);
