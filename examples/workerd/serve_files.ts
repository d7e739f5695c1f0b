/**
 * A static file server with HTTP Range support, bound to 127.0.0.1 (node:http: runs on Deno, Bun and Node),
 * for the workerd test and bench: the Worker reads models from it by Range, as from any CDN or bucket.
 *
 * @module
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { open, stat } from "node:fs/promises";
import { join, normalize } from "node:path";

/** A running server: its origin and how to stop it. */
export interface FileServer {
  /** e.g. "http://127.0.0.1:41234". */
  origin: string;
  /** Stop serving. */
  close(): Promise<void>;
}

/** Serve the files under `root` at `/…` on 127.0.0.1, on a free port (or `port`). */
export function serveFiles(root: string, port = 0): Promise<FileServer> {
  const server = createServer(async (req, res) => {
    try {
      const rel = normalize(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname))
        .replace(/^(\/?\.\.(\/|$))+/, "");
      const path = join(root, rel);
      const st = await stat(path).catch(() => null);
      if (!st?.isFile()) return void res.writeHead(404).end("not found\n");
      const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
      let start = 0, end = st.size - 1;
      if (range) {
        start = Number(range[1]);
        end = range[2] ? Math.min(Number(range[2]), st.size - 1) : st.size - 1;
        if (start > end) return void res.writeHead(416, { "content-range": `bytes */${st.size}` }).end();
      }
      const buf = new Uint8Array(Math.max(0, end - start + 1));
      const f = await open(path);
      try {
        await f.read(buf, 0, buf.length, start);
      } finally {
        await f.close();
      }
      const headers: Record<string, string> = {
        "accept-ranges": "bytes",
        "content-length": String(buf.length),
      };
      if (range) headers["content-range"] = `bytes ${start}-${end}/${st.size}`;
      res.writeHead(range ? 206 : 200, headers).end(req.method === "HEAD" ? undefined : buf);
    } catch (e) {
      res.writeHead(500).end(`${(e as Error).message}\n`);
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      const { port: p } = server.address() as AddressInfo;
      resolve({
        origin: `http://127.0.0.1:${p}`,
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            server.closeAllConnections(); // idle keep-alive connections of a fetch pool would hold close() for minutes
          }),
      });
    });
  });
}
