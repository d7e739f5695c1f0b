/**
 * Serve the browser page: builds the browser bundle of mod.ts (into a temporary folder; it is served as
 * examples/web/svd_llm.js, nothing is written into the repository) and serves the repository on 127.0.0.1 with the headers that make the page cross-origin isolated (COOP/COEP: worker
 * threads need SharedArrayBuffer) and with HTTP Range (the library reads models by Range requests).
 *
 * ```sh
 * deno run -A examples/web/serve.ts [--port 8000]
 * # then open http://127.0.0.1:8000/examples/web/index.html
 * ```
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { open, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const port = Number(process.argv[process.argv.indexOf("--port") + 1] || 8000);
const TYPES: Record<string, string> = {
  ".html": "text/html",
  ".js": "text/javascript",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
  ".png": "image/png",
};
const ISOLATED = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
  "cross-origin-resource-policy": "same-origin",
};

const tmp = mkdtempSync(join(tmpdir(), "svd-llm-web-"));
const built = spawnSync(
  process.execPath,
  ["bundle", "--platform", "browser", "-o", join(tmp, "svd_llm.js"), join(root, "mod.ts")],
  { stdio: "inherit" },
);
if (built.status !== 0) throw new Error("serve: deno bundle of mod.ts failed (run this with Deno)");
const bundle = readFileSync(join(tmp, "svd_llm.js"));
rmSync(tmp, { recursive: true, force: true });

createServer(async (req, res) => {
  const url = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
  if (url === "/examples/web/svd_llm.js") {
    return void res.writeHead(200, { "content-type": "text/javascript", ...ISOLATED }).end(bundle);
  }
  const path = normalize(join(root, url));
  const st = path.startsWith(root) ? await stat(path).catch(() => null) : null; // nothing above the repository
  if (!st?.isFile()) return void res.writeHead(404, ISOLATED).end("not found\n");
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
  const start = range ? Number(range[1]) : 0;
  const end = range?.[2] ? Math.min(Number(range[2]), st.size - 1) : st.size - 1;
  if (range && (start >= st.size || end < start)) {
    return void res.writeHead(416, { "content-range": `bytes */${st.size}`, ...ISOLATED }).end();
  }
  const f = await open(path);
  const body = new Uint8Array(end - start + 1);
  await f.read(body, 0, body.length, start);
  await f.close();
  res.writeHead(range ? 206 : 200, {
    "content-type": TYPES[extname(path)] ?? "application/octet-stream",
    "content-length": String(body.length),
    "accept-ranges": "bytes",
    ...(range ? { "content-range": `bytes ${start}-${end}/${st.size}` } : {}),
    ...ISOLATED,
  });
  res.end(body);
}).listen(port, "127.0.0.1", () => console.log(`http://127.0.0.1:${port}/examples/web/index.html`));
