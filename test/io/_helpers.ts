/**
 * Shared test helpers of the io room: temporary folders, a local HTTP Range server, random tensors.
 *
 * @module
 */
import { fillUniform } from "../../src/linalg/random.ts";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Make a fresh temporary folder; returns it and a cleanup function. */
export async function tempDir(prefix = "svdllm-io-"): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** How the test server misbehaves for one path. */
export type ServeMode = "ok" | "ignore-range" | "short" | "status-404" | "status-500";

/** A local HTTP server on 127.0.0.1 serving byte arrays with Range support (or a chosen misbehaviour). */
export interface RangeServer {
  /** `http://127.0.0.1:<port>` */
  readonly base: string;
  /** Serve `bytes` at `path` (starting with "/"). */
  put(path: string, bytes: Uint8Array, mode?: ServeMode): string;
  /** Requests seen: method, path, Range header. */
  readonly log: { method: string; path: string; range?: string }[];
  /** Stop the server. */
  close(): Promise<void>;
}

/** Start a {@link RangeServer} on an ephemeral port. */
export async function startRangeServer(): Promise<RangeServer> {
  const files = new Map<string, { bytes: Uint8Array; mode: ServeMode }>();
  const log: { method: string; path: string; range?: string }[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0];
    const range = req.headers.range;
    log.push({ method: req.method ?? "", path, range });
    const f = files.get(path);
    const headers: Record<string, string> = { connection: "close", "accept-ranges": "bytes" };
    if (!f || f.mode === "status-404") {
      res.writeHead(404, { ...headers, "content-length": "9" });
      res.end("not found");
      return;
    }
    if (f.mode === "status-500") {
      res.writeHead(500, { ...headers, "content-length": "4" });
      res.end("oops");
      return;
    }
    const size = f.bytes.byteLength;
    if (req.method === "HEAD") {
      res.writeHead(200, { ...headers, "content-length": String(size) });
      res.end();
      return;
    }
    const m = range?.match(/^bytes=(\d+)-(\d+)$/);
    if (!m || f.mode === "ignore-range") {
      res.writeHead(200, { ...headers, "content-length": String(size) });
      res.end(f.bytes);
      return;
    }
    const a = Number(m[1]);
    const b = Math.min(Number(m[2]), size - 1);
    if (a >= size) {
      res.writeHead(416, { ...headers, "content-range": `bytes */${size}`, "content-length": "0" });
      res.end();
      return;
    }
    let body = f.bytes.subarray(a, b + 1);
    // "short": a 206 whose body stops early (only for reads longer than the 1-byte size probe)
    if (f.mode === "short" && body.byteLength > 1) body = body.subarray(0, body.byteLength - 1);
    res.writeHead(206, {
      ...headers,
      "content-range": `bytes ${a}-${b}/${size}`,
      "content-length": String(body.byteLength),
    });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    log,
    put(path: string, bytes: Uint8Array, mode: ServeMode = "ok"): string {
      files.set(path, { bytes, mode });
      return base + path;
    },
    close: () =>
      new Promise<void>((resolve) => {
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/** Deterministic pseudo-random float32 values in [-scale, scale) (xorshift; reproducible across runtimes). */
export function randomFloats(n: number, seed = 1, scale = 1): Float32Array {
  return fillUniform(new Float32Array(n), seed, scale);
}

/** Product of a shape's dimensions (1 for a scalar). */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
