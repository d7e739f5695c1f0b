// End to end in headless Chromium: examples/web/ served from 127.0.0.1 with COOP/COEP (cross-origin isolated),
// the library as the browser bundle of mod.ts, stories260K loaded by URL (Range requests) and evaluated in a
// Worker with worker threads: perplexity 5.3885 on the bundled text, as in Deno (WebGPU off: the WebGPU path's
// equality with wasm is tested in webgpu_pipeline.test.ts). The page POSTs its final
// message back to the test's server. A non-model file gives a clear error, not a hang. Skipped with a message
// where no Chromium is installed (Debian: chromium-headless-shell or chromium; or set CHROMIUM).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { deno, root, run, serveFiles } from "./_deno.ts";

function findChromium(): string | null {
  const candidates = [process.env.CHROMIUM, "/usr/bin/chromium-headless-shell", "/usr/bin/chromium"];
  return candidates.find((c) => c && existsSync(c)) ?? null;
}

const PAGE_FILES = [
  "examples/web/index.html",
  "examples/web/main.js",
  "examples/web/worker.js",
  "models/stories260K/stories260K.gguf",
  "data/tinystories-valid.part1.txt",
];
const ISOLATED = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
  "cross-origin-resource-policy": "same-origin",
};

interface PageResult {
  type: "done" | "error";
  message?: string;
  ppl?: number;
  tokens?: number;
  seconds?: number;
  info?: { threads: number; threadsNote?: string; gpu?: { adapter: string }; gpuNote?: string };
}

/** Open `query` on the page in headless Chromium; resolves to what the page POSTs, or rejects on timeout. */
async function openPage(chromium: string, query: string, timeoutMs = 300_000): Promise<PageResult> {
  const dir = mkdtempSync(join(tmpdir(), "svd-llm-browser-"));
  let answer!: (r: PageResult) => void;
  const got = new Promise<PageResult>((r) => answer = r);
  const bundle = join(dir, "svd_llm.js");
  const b = await run(deno, ["bundle", "--platform", "browser", "-o", bundle, join(root, "mod.ts")]);
  assert.equal(b.code, 0, `deno bundle mod.ts failed:\n${b.err}`);
  const server = await serveFiles(
    root,
    PAGE_FILES,
    { "/examples/web/svd_llm.js": { type: "text/javascript", body: readFileSync(bundle) } },
    ISOLATED,
    (path, body) => path === "/result" && answer(JSON.parse(body)),
  );
  const url = `${server.origin}/examples/web/index.html?auto&report=/result&${query}`;
  const browser = spawn(chromium, [
    "--headless",
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    `--user-data-dir=${join(dir, "profile")}`,
    "--remote-debugging-port=0", // keeps the headless shell running until it is killed
    url,
  ], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  browser.stderr.on("data", (d) => stderr += d);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      got,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer from the page in ${timeoutMs} ms`)), timeoutMs);
      }),
      new Promise<never>((_, reject) => {
        browser.on("exit", (code) => reject(new Error(`Chromium exited (${code}):\n${stderr.slice(-2000)}`)));
      }),
    ]);
  } finally {
    clearTimeout(timer);
    browser.kill("SIGKILL");
    await new Promise((r) => browser.exitCode !== null ? r(null) : browser.once("exit", r));
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

// Under Bun the page's requests to this process's server stalled (2 runs of 2; not investigated): the
// browser is driven from the Deno pass only, which is what the page needs (the runtime under test is Chromium).
const chromium = "Bun" in globalThis ? null : findChromium();

test("Chromium page: stories260K perplexity 5.3885 in a cross-origin-isolated Worker with threads", {
  timeout: 600_000,
}, async () => {
  if (!chromium) {
    console.log(
      "skip: no Chromium installed (apt-get install chromium-headless-shell, or set CHROMIUM), or Bun",
    );
    return;
  }
  // WebGPU unticked: on a software adapter (SwiftShader here) every large product would be slower.
  const r = await openPage(chromium, "gpu=0");
  assert.equal(r.type, "done", `the page reported an error: ${r.message}`);
  assert.equal(r.tokens, 5148);
  assert.ok(Math.abs(r.ppl! / 5.3885 - 1) < 1e-3, `ppl ${r.ppl}`);
  assert.ok(r.info!.threads > 1, `no worker threads in the page's Worker: ${r.info!.threadsNote}`);
  console.log(`Chromium: ppl ${r.ppl!.toFixed(4)} in ${r.seconds!.toFixed(2)} s, ${r.info!.threads} threads`);
});

test("Chromium page: a non-model file gives a clear error naming it, not a hang", {
  timeout: 600_000,
}, async () => {
  if (!chromium) {
    console.log(
      "skip: no Chromium installed (apt-get install chromium-headless-shell, or set CHROMIUM), or Bun",
    );
    return;
  }
  const r = await openPage(chromium, "gpu=0&model=../../data/tinystories-valid.part1.txt", 120_000);
  assert.equal(r.type, "error", "a text file loaded as a model");
  assert.match(r.message!, /tinystories-valid\.part1\.txt/);
});
