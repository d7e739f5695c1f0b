// The set-up the Chromium tests share: finding the browser (skipped with a message where none is installed),
// the COOP/COEP headers of a cross-origin-isolated page, the browser bundle of mod.ts (built once per run),
// and a fresh headless Chromium (driven by playwright-core) with a page that collects its errors.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import type { Browser, BrowserContextOptions, Page } from "playwright-core";
import { deno, root, run } from "./_deno.ts";

/** The browser binary itself where known (Debian's /usr/bin/chromium* are shell scripts around it). */
function findChromium(): string | null {
  const candidates = [
    process.env.CHROMIUM,
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/bin/chromium-headless-shell",
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium",
  ];
  return candidates.find((c) => c && existsSync(c)) ?? null;
}

/** The Chromium binary, or null where none is installed. */
export const chromium: string | null = findChromium();

/** The `skip` option of a Chromium test: false, or why it is skipped. */
export const chromiumSkip: false | string = chromium
  ? false
  : "no Chromium installed (apt-get install chromium-headless-shell, or set CHROMIUM)";

/** The headers that make a page cross-origin isolated (SharedArrayBuffer, so worker threads). */
export const ISOLATED: Readonly<Record<string, string>> = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
  "cross-origin-resource-policy": "same-origin",
};

let bundled: Promise<Uint8Array> | undefined;
/** The browser bundle of mod.ts (`deno bundle --platform browser`), built once per run. */
export function browserBundle(): Promise<Uint8Array> {
  bundled ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), "svd-llm-bundle-"));
    try {
      const out = join(dir, "svd_llm.js");
      const b = await run(deno, ["bundle", "--platform", "browser", "-o", out, join(root, "mod.ts")]);
      assert.equal(b.code, 0, `deno bundle mod.ts failed:\n${b.err}`);
      return readFileSync(out);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  })();
  return bundled;
}

/**
 * Launch a fresh headless Chromium (the binary itself, so closing it ends all its processes; WebGPU
 * enabled) and open `url` in a new page whose every wait is bounded by `timeoutMs` (a bound on hangs only).
 * `errors` collects the page's uncaught errors, and its console errors too when `consoleErrors`. The caller
 * closes `browser` (in a `finally`).
 */
export async function openChromium(
  url: string,
  timeoutMs: number,
  opts: { context?: BrowserContextOptions; consoleErrors?: boolean } = {},
): Promise<{ browser: Browser; page: Page; errors: string[] }> {
  const { chromium: pw } = await import("playwright-core");
  const browser = await pw.launch({
    executablePath: chromium!,
    args: ["--no-sandbox", "--enable-unsafe-webgpu"],
    timeout: timeoutMs,
  });
  try {
    const page = await (await browser.newContext(opts.context)).newPage();
    page.setDefaultTimeout(timeoutMs);
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    if (opts.consoleErrors) page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    await page.goto(url);
    return { browser, page, errors };
  } catch (e) {
    await browser.close();
    throw e;
  }
}
