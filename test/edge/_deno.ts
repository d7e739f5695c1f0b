// Helpers of the edge tests: the repository root, the project's Deno binary (tests run under Bun too), a
// child process runner, and a static file server on 127.0.0.1 (what a JSR or CDN user's runtime fetches).
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server, type ServerResponse } from "node:http";
import { extname, join, normalize, sep } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** The repository root (ends with a separator). */
export const root: string = fileURLToPath(new URL("../../", import.meta.url));

/** The Deno the project installs (npm `deno`), which the tests drive as a child process. */
export const deno: string = join(root, "node_modules", ".bin", "deno");

/** The subpath exports of deno.json: [name, file relative to the root]. */
export function exportsOf(): [string, string][] {
  const cfg = JSON.parse(readFileSync(join(root, "deno.json"), "utf8")) as {
    exports: Record<string, string>;
  };
  return Object.entries(cfg.exports);
}

/** Result of {@link run}. */
export interface RunResult {
  code: number;
  out: string;
  err: string;
}

/**
 * Run `exe argv…` to completion without blocking the event loop (a server in this process may have to answer
 * the child), killing it after `timeoutMs`.
 */
export function run(
  exe: string,
  argv: string[],
  opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(exe, argv, {
      cwd: opts.cwd ?? root,
      env: { ...process.env, NO_COLOR: "1", ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "", err = "";
    child.stdout.on("data", (d) => out += d);
    child.stderr.on("data", (d) => err += d);
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 300_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, out, err });
    });
  });
}

const TYPES: Record<string, string> = {
  ".ts": "application/typescript",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".html": "text/html",
};

/** A running file server: its origin (`http://127.0.0.1:PORT`) and how to stop it. */
export interface FileServer {
  origin: string;
  close(): Promise<void>;
}

/**
 * Serve `files` (paths relative to `dir`, `/`-separated; anything else answers 404) on 127.0.0.1 at a free
 * port, with single byte ranges (`Range: bytes=a-b`, as `loadModel(URL)` reads). `extra` maps URL paths to
 * generated bodies (an import map, a bundle; a function is called per request); `onPost` receives POSTed
 * bodies by path; `headers` go on every answer (COOP/COEP for a cross-origin-isolated page); `hold` may
 * return a promise that delays the answer to a range request (path, first byte) until it resolves.
 */
export function serveFiles(
  dir: string,
  files: Iterable<string>,
  extra: Record<string, { type: string; body: string | Uint8Array | (() => string | Uint8Array) }> = {},
  headers: Record<string, string> = {},
  onPost?: (path: string, body: string) => void,
  hold?: (path: string, start: number) => Promise<void> | undefined,
): Promise<FileServer> {
  const allowed = new Set(files);
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname).slice(1);
    if (req.method === "POST") {
      let body = "";
      req.on("data", (d) => body += d);
      req.on("end", () => {
        onPost?.("/" + path, body);
        res.writeHead(204, headers);
        res.end();
      });
      return;
    }
    const gen = extra["/" + path];
    if (gen) {
      res.writeHead(200, { "content-type": gen.type, ...headers });
      res.end(typeof gen.body === "function" ? gen.body() : gen.body);
      return;
    }
    const file = normalize(join(dir, path));
    if (!allowed.has(path) || !file.startsWith(normalize(dir + sep)) || !existsSync(file)) {
      res.writeHead(404);
      res.end(`not served: ${path}`);
      return;
    }
    const type = TYPES[extname(file)] ?? "application/octet-stream";
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    const held = range ? hold?.(path, Number(range[1])) : undefined;
    const answer = () => sendBytes(res, readFileSync(file), type, req.headers.range, headers);
    if (held) held.then(answer);
    else answer();
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const addr = server.address() as { port: number };
      resolve({
        origin: `http://127.0.0.1:${addr.port}`,
        close: () => new Promise<void>((r) => server.close(() => r())),
      });
    });
  });
}

/**
 * Answer with `body`: whole (200), or the single byte range `range` asks for (`bytes=a-b` or `bytes=a-`: 206,
 * or 416 when it lies outside), as `loadModel(URL)` reads; `headers` go on every answer.
 */
export function sendBytes(
  res: ServerResponse,
  body: Uint8Array,
  type: string,
  range: string | undefined,
  headers: Record<string, string> = {},
): void {
  const r = /^bytes=(\d+)-(\d*)$/.exec(range ?? "");
  if (!r) {
    res.writeHead(200, { "content-type": type, "content-length": String(body.length), ...headers });
    res.end(body);
    return;
  }
  const start = Number(r[1]), end = Math.min(body.length - 1, r[2] ? Number(r[2]) : body.length - 1);
  if (start >= body.length || end < start) {
    res.writeHead(416, { "content-range": `bytes */${body.length}`, ...headers });
    res.end();
    return;
  }
  res.writeHead(206, {
    "content-type": type,
    "content-range": `bytes ${start}-${end}/${body.length}`,
    "content-length": String(end - start + 1),
    ...headers,
  });
  res.end(body.subarray(start, end + 1));
}
