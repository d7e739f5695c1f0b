// End to end in headless Chromium (driven by playwright-core): examples/web/ served from 127.0.0.1 with
// COOP/COEP (cross-origin isolated), the library as the browser bundle of mod.ts. The page compresses the
// bundled stories260K with svdllm at 20 % in a Worker with worker threads; the test captures the download
// (a tar of the compressed folder), reloads it here with the library and checks its perplexity equals the
// same compression done here (and the page's own figure for it); it saves a screenshot. A folder picked
// through the folder input (Files) compresses as the folder on disk does; a non-model file gets a message
// naming it; a run cancelled mid-compression (its next weights held back by the server until the Cancel
// click) ends "aborted" with no download. Waits are on page state (`#status[data-state]`) and server events,
// never on time. Skipped with a message where no Chromium is installed (Debian: chromium-headless-shell or
// chromium; or set CHROMIUM). SVD_LLM_SCREENSHOT=PATH also writes the screenshot there (the README's is
// examples/web/screenshot.png).
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { Buffer } from "node:buffer";
import type { Browser, Page } from "playwright-core";
import { root, serveFiles } from "./_deno.ts";
import { browserBundle, chromiumSkip as skip, ISOLATED, openChromium } from "./_chromium.ts";
import { loadModel } from "../../src/model/load.ts";
import { compress } from "../../src/pipeline/compress.ts";
import { memorySink } from "../../src/pipeline/sink.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { tarBlob } from "../../src/io/file_set.ts";
import { openGguf } from "../../src/io/gguf.ts";
import type { ByteSource } from "../../src/io/byte_source.ts";
import { openFile } from "../../src/io/byte_source.ts";

const STORIES = "models/stories260K/stories260K.gguf";
const TEXT = "data/tinystories-valid.part1.txt";
const TINY = "test/fixtures/models/llama-gqa-tiny";
const PAGE_FILES = [
  "examples/web/index.html",
  "examples/web/main.js",
  "examples/web/worker.js",
  "node_modules/d3/dist/d3.min.js",
  "node_modules/@observablehq/plot/dist/plot.umd.min.js",
  STORIES,
  TEXT,
];
const OPTS = { method: "svdllm", ratio: { removed: 0.2 }, samples: 16, seqlen: 256 } as const;
const WAIT = { timeout: 600_000 }; // a bound on hangs only: every wait is on an event

/**
 * Serve the page, open it in a fresh headless Chromium and run `fn`; the browser (all its processes: it is
 * launched as the binary itself, and closed before the server) and the server are gone afterwards.
 * `hold` delays range requests (see `serveFiles`).
 */
async function withPage(
  fn: (page: Page, tmp: string) => Promise<void>,
  hold?: (path: string, start: number) => Promise<void> | undefined,
): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), "svd-llm-browser-"));
  const server = await serveFiles(
    root,
    PAGE_FILES,
    { "/examples/web/svd_llm.js": { type: "text/javascript", body: await browserBundle() } },
    ISOLATED,
    undefined,
    hold,
  );
  let browser: Browser | undefined;
  try {
    const opened = await openChromium(`${server.origin}/examples/web/index.html?gpu=0`, WAIT.timeout, {
      context: { acceptDownloads: true },
    });
    browser = opened.browser;
    await fn(opened.page, tmp);
    assert.deepEqual(opened.errors, [], "uncaught errors on the page");
  } finally {
    await browser?.close();
    await server.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Click Compress and wait until the page's run ends; its final state. */
async function compressOnPage(page: Page): Promise<string> {
  await page.click("#go");
  const end = await page.waitForSelector(
    "#status:is([data-state=done],[data-state=error],[data-state=aborted])",
    WAIT,
  );
  return (await end.getAttribute("data-state"))!;
}

/** True when the page's origin-private file system holds the Worker's output folder. */
function outputFolder(page: Page): Promise<boolean> {
  return page.evaluate(async () => {
    const root = await navigator.storage.getDirectory();
    return await root.getDirectoryHandle("svd-llm-output").then(() => true, () => false);
  });
}

/** Perplexity of a model (a path or a File) on the bundled text, window 256 or its context, as the page does. */
async function pplOf(input: string | File): Promise<number> {
  const m = await loadModel(input);
  try {
    const ids = m.tokenizer.encode(readFileSync(join(root, TEXT), "utf8"), { bos: true });
    return (await perplexity(m, ids, { window: Math.min(256, m.spec.maxPositions) })).ppl;
  } finally {
    await m.close();
  }
}

test(
  "Chromium page: compress stories260K (svdllm 20 %) with threads, download, reload: same perplexity as here",
  {
    skip,
    timeout: 900_000,
  },
  async () => {
    const text = readFileSync(join(root, TEXT), "utf8");
    // The same compression here, into memory, packed as the page packs it.
    const sink = memorySink();
    await compress(join(root, STORIES), sink, {
      method: OPTS.method,
      ratio: OPTS.ratio,
      calibration: { text, samples: OPTS.samples, seqlen: OPTS.seqlen },
    });
    const here = await pplOf(new File([tarBlob(await sink.files, "here")], "here.tar"));
    await withPage(async (page, tmp) => {
      let downloads = 0;
      page.on("download", () => downloads++);
      assert.equal(await compressOnPage(page), "done", await page.textContent("#error") ?? "");
      const result = await page.evaluate(() =>
        (globalThis as unknown as {
          __svdLlmResult: { ppl: number; output: string; info: { threads: number; threadsNote?: string } };
        })
          .__svdLlmResult
      );
      assert.ok(
        result.info.threads > 1,
        `no worker threads in the page's Worker: ${result.info.threadsNote}`,
      );
      assert.equal(result.output, "the origin-private file system", "the output was not streamed to OPFS");
      assert.equal(downloads, 0, "a download started before the user asked");
      const shot = join(tmpdir(), `svd-llm-page-${process.pid}.png`);
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`screenshot: ${shot}`);
      if (process.env.SVD_LLM_SCREENSHOT) copyFileSync(shot, process.env.SVD_LLM_SCREENSHOT);
      const [download] = await Promise.all([page.waitForEvent("download", WAIT), page.click("#download")]);
      assert.equal(download.suggestedFilename(), "stories260K-svdllm-20.tar");
      const saved = join(tmp, download.suggestedFilename());
      await download.saveAs(saved);
      const fromPage = await pplOf(new File([readFileSync(saved)], download.suggestedFilename()));
      console.log(
        `Chromium (${result.info.threads} threads): reloaded download ppl ${fromPage.toFixed(6)}, page's ` +
          `${result.ppl.toFixed(6)}, same compression here ${here.toFixed(6)}`,
      );
      assert.ok(Math.abs(fromPage / here - 1) < 1e-5, `download ${fromPage} against here ${here}`);
      assert.ok(Math.abs(result.ppl / here - 1) < 1e-5, `page ${result.ppl} against here ${here}`);
    });
  },
);

test("Chromium page: a folder picked as Files compresses as the folder does; a non-model file is named", {
  skip,
  timeout: 900_000,
}, async () => {
  const sink = memorySink();
  await compress(join(root, TINY), sink, { method: "svd", ratio: { removed: 0.3 } });
  const here = await pplOf(new File([tarBlob(await sink.files, "here")], "here.tar"));
  await withPage(async (page, tmp) => {
    let downloads = 0;
    page.on("download", () => downloads++);
    await page.setInputFiles("#folder", join(root, TINY)); // the webkitdirectory input: Files with relative paths
    await page.selectOption("#method", "svd");
    await page.fill("#removed", "30");
    assert.equal(await compressOnPage(page), "done", await page.textContent("#error") ?? "");
    const [download] = await Promise.all([page.waitForEvent("download", WAIT), page.click("#download")]);
    assert.equal(download.suggestedFilename(), "llama-gqa-tiny-svd-30.tar");
    const saved = join(tmp, "folder.tar");
    await download.saveAs(saved);
    assert.equal(await pplOf(new File([readFileSync(saved)], "folder.tar")), here);

    await page.setInputFiles("#file", {
      name: "story.txt",
      mimeType: "text/plain",
      buffer: Buffer.from("Once upon a time there was a text file, not a model.\n".repeat(40)),
    });
    assert.equal(await compressOnPage(page), "error");
    assert.match((await page.textContent("#error"))!, /story\.txt: load model: not a model file/);
    assert.equal(await page.isHidden("#download"), true, "a download is offered after an error");
    assert.equal(downloads, 1);
  });
});

test(
  "Chromium page: Cancel mid-compression ends the run with no download",
  { skip, timeout: 900_000 },
  async () => {
    // The first byte of block 1's weights: a spy on the reads of the GGUF reader itself.
    const file = await openFile(join(root, STORIES));
    let lastRead = 0;
    const spy: ByteSource = { ...file, read: (o, n) => (lastRead = o, file.read(o, n)) };
    const g = await openGguf(spy);
    let block1 = Infinity;
    for (const t of g.tensors()) {
      if (!t.name.startsWith("blk.1.")) continue;
      await g.read(t.name);
      block1 = Math.min(block1, lastRead);
    }
    await g.close();
    await file.close();
    assert.ok(Number.isFinite(block1));

    let release!: () => void;
    const released = new Promise<void>((r) => release = r);
    let arrived!: () => void;
    const heldBack = new Promise<void>((r) => arrived = r);
    const hold = (path: string, start: number) => {
      if (path !== STORIES || start < block1) return undefined;
      arrived();
      return released;
    };
    try {
      await withPage(async (page) => {
        let downloads = 0;
        page.on("download", () => downloads++);
        await page.click("#go");
        await heldBack; // the Worker waits for block 1's weights: block 0 is done, the run is mid-way
        assert.equal(await page.getAttribute("#status", "data-state"), "running");
        assert.equal(await outputFolder(page), true, "no output being streamed to OPFS mid-run");
        await page.click("#cancel");
        await page.waitForSelector("#status:is([data-state=cancelling],[data-state=aborted])", WAIT);
        release();
        await page.waitForSelector("#status[data-state=aborted]", WAIT);
        assert.equal(await page.isHidden("#download"), true);
        assert.equal(await page.getAttribute("#download", "href"), null);
        assert.equal(downloads, 0);
        assert.match(await page.textContent("#status") ?? "", /Cancelled: nothing was kept/);
        // Nor on disk: the run's OPFS folder, where the output was being streamed, is gone.
        assert.equal(await outputFolder(page), false, "the cancelled run left its output folder in OPFS");
      }, hold);
    } finally {
      release();
    }
  },
);
