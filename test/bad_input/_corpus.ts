/**
 * Helpers of the bad-input corpus: copies of small valid fixtures to corrupt, rewriters of safetensors headers
 * and GGUF bytes, a local HTTP server that logs headers (and can hang), and {@link assertRefused}, the one
 * assertion every case makes.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cp, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import {
  createServer,
  type IncomingMessage,
  type Server as HttpServer,
  type ServerResponse,
} from "node:http";
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type KvValue, writeGguf } from "../model/_gguf_builder.ts";
import { openSafetensors } from "../../src/io/safetensors_reader.ts";
import { hfToGgufName } from "../../src/model/names.ts";

/** The small valid Hugging Face folder every folder case starts from (2 blocks, width 64, 101 tokens). */
export const FIXTURE = new URL("../fixtures/models/llama-gqa-tiny/", import.meta.url).pathname;
/** The bundled, genuinely pretrained GGUF model. */
export const STORIES = new URL("../../models/stories260K/stories260K.gguf", import.meta.url).pathname;

/** A fresh temporary folder. */
export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "svdllm-bad-"));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** A copy of the fixture folder in a temporary folder (the fixture itself is never touched). */
export async function fixtureCopy(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const t = await tempDir();
  const dir = join(t.dir, "model");
  await cp(FIXTURE, dir, { recursive: true });
  return { dir, cleanup: t.cleanup };
}

/** SHA-256 of every regular file under `path` (a file or a folder), to show that nothing was changed. */
export async function snapshot(path: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (p: string) => {
    const st = await stat(p);
    if (st.isDirectory()) {
      for (const n of (await readdir(p)).sort()) await walk(join(p, n));
    } else if (st.isFile()) {
      out[p] = createHash("sha256").update(await readFile(p)).digest("hex");
    } else out[p] = "special";
  };
  await walk(path);
  return out;
}

/**
 * Longest any case may take before it counts as a hang (a bound on hangs, not a speed claim). Sized for a
 * loaded machine (a 2-core CI box running other jobs stretches a case's wall time tenfold), not for a quiet one.
 */
export const HANG_BOUND_MS = 120_000;

/**
 * Assert that `run` is refused: it rejects within {@link HANG_BOUND_MS} with an Error (not a RangeError or
 * TypeError from deep inside) whose message is one line, names `input` and matches `problem`; and that
 * the files under `untouched` (if given) are byte for byte as before.
 */
export async function assertRefused(
  run: () => Promise<unknown>,
  input: string,
  problem: RegExp,
  untouched?: string,
): Promise<Error> {
  const before = untouched ? await snapshot(untouched) : undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hung: no answer within ${HANG_BOUND_MS} ms`)), HANG_BOUND_MS);
  });
  let err: unknown;
  try {
    await Promise.race([run(), hang]);
  } catch (e) {
    err = e;
  } finally {
    clearTimeout(timer);
  }
  assert.ok(err instanceof Error, `expected a refusal naming ${input}, but it was accepted`);
  assert.ok(!/hung: no answer/.test(err.message), err.message);
  assert.ok(!(err instanceof RangeError) && !(err instanceof TypeError), `raw ${err.name}: ${err.message}`);
  assert.ok(!err.message.includes("\n"), `message is not one line: ${err.message}`);
  assert.ok(err.message.includes(input), `message does not name ${input}: ${err.message}`);
  assert.match(err.message, problem);
  if (before) assert.deepEqual(await snapshot(untouched!), before, "the input was changed");
  return err;
}

/** Split a safetensors file into its header JSON text and data section. */
export function splitSafetensors(bytes: Uint8Array): { header: string; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return { header: new TextDecoder().decode(bytes.subarray(8, 8 + n)), data: bytes.subarray(8 + n) };
}

/** Join a header text (any string, even invalid JSON) and a data section into safetensors bytes. */
export function joinSafetensors(header: string, data: Uint8Array): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** A safetensors file with its parsed header rewritten by `edit` (data section unchanged). */
export function editSafetensors(
  bytes: Uint8Array,
  edit: (h: Record<string, Record<string, unknown>>) => void,
): Uint8Array {
  const { header, data } = splitSafetensors(bytes);
  const h = JSON.parse(header);
  edit(h);
  return joinSafetensors(JSON.stringify(h), data);
}

/** Metadata of a small llama GGUF model built from the fixture (SentencePiece vocabulary of 101 pieces). */
export function ggufKv(overrides: Record<string, KvValue | undefined> = {}): Record<string, KvValue> {
  const pieces = ["<unk>", "<s>", "</s>", ...Array.from({ length: 98 }, (_, i) => `p${i}`)];
  const kv: Record<string, KvValue | undefined> = {
    "general.architecture": { type: "string", value: "llama" },
    "llama.embedding_length": { type: "u32", value: 64 },
    "llama.feed_forward_length": { type: "u32", value: 64 },
    "llama.block_count": { type: "u32", value: 2 },
    "llama.attention.head_count": { type: "u32", value: 4 },
    "llama.attention.head_count_kv": { type: "u32", value: 2 },
    "llama.attention.key_length": { type: "u32", value: 16 },
    "llama.context_length": { type: "u32", value: 64 },
    "llama.attention.layer_norm_rms_epsilon": { type: "f32", value: 1e-5 },
    "tokenizer.ggml.model": { type: "string", value: "llama" },
    "tokenizer.ggml.tokens": { type: "strings", value: pieces },
    "tokenizer.ggml.scores": { type: "f32s", value: pieces.map((_, i) => -i) },
    "tokenizer.ggml.token_type": { type: "i32s", value: pieces.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : 1)) },
    "tokenizer.ggml.bos_token_id": { type: "u32", value: 1 },
    "tokenizer.ggml.eos_token_id": { type: "u32", value: 2 },
    ...overrides,
  };
  return Object.fromEntries(Object.entries(kv).filter(([, v]) => v !== undefined)) as Record<string, KvValue>;
}

/** A small valid llama GGUF (the fixture's weights under GGUF names), with metadata `overrides`. */
export async function tinyGguf(overrides: Record<string, KvValue | undefined> = {}): Promise<Uint8Array> {
  const r = await openSafetensors(join(FIXTURE, "model.safetensors"));
  try {
    const tensors = [];
    for (const t of r.tensors()) {
      tensors.push({ name: hfToGgufName(t.name)!, shape: t.shape, data: await r.read(t.name) });
    }
    return writeGguf(ggufKv(overrides), tensors);
  } finally {
    await r.close();
  }
}

/** Byte offset just after the first occurrence of the GGUF string `s` (u64 length + bytes) in `bytes`. */
export function afterGgufString(bytes: Uint8Array, s: string): number {
  const enc = new TextEncoder().encode(s);
  outer: for (let i = 8; i + enc.length <= bytes.length; i++) {
    for (let j = 0; j < enc.length; j++) if (bytes[i + j] !== enc[j]) continue outer;
    if (Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(i - 8, true)) === enc.length) {
      return i + enc.length;
    }
  }
  throw new Error(`${s} not found`);
}

/** Overwrite a little-endian u64 at `at`. */
export function setU64(bytes: Uint8Array, at: number, v: bigint): void {
  new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(at, v, true);
}

/** Overwrite a little-endian u32 at `at`. */
export function setU32(bytes: Uint8Array, at: number, v: number): void {
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(at, v, true);
}

/** One logged request: path and the Authorization header it carried. */
export interface Logged {
  path: string;
  authorization?: string;
}

/** A local HTTP server (127.0.0.1) serving files with Range support, with optional per-path behaviours. */
export interface FileServer {
  readonly base: string;
  readonly log: Logged[];
  /** Serve bytes at `path`. */
  put(path: string, bytes: Uint8Array | string): void;
  /** Answer `path` with a 302 to `location`. */
  redirect(path: string, location: string): void;
  /** Answer `path` with `status` the next `times` requests (then normally). */
  fail(path: string, status: number, times: number): void;
  /** Answer `path` with headers and half a body, then nothing more (a stalled transfer). */
  stall(path: string): void;
  /** Send `path`'s body in `parts` pieces, `delayMs` apart (a slow transfer that progresses). */
  drip(path: string, parts: number, delayMs: number): void;
  close(): Promise<void>;
}

/** Start a {@link FileServer}; it closes itself after `lifetimeMs` (10 min: longer than any test on a loaded machine) if a test forgets to. */
export async function startFileServer(lifetimeMs = 600_000): Promise<FileServer> {
  const files = new Map<string, Uint8Array>();
  const redirects = new Map<string, string>();
  const failures = new Map<string, { status: number; times: number }>();
  const stalls = new Set<string>();
  const drips = new Map<string, { parts: number; delayMs: number }>();
  const open = new Set<ServerResponse>();
  const log: Logged[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0];
    log.push({ path, authorization: req.headers.authorization });
    const headers = { connection: "close" };
    const f = failures.get(path);
    if (f && f.times > 0) {
      f.times--;
      res.writeHead(f.status, { ...headers, "content-length": "0" });
      return res.end();
    }
    if (stalls.has(path)) {
      open.add(res);
      res.writeHead(200, { ...headers, "content-length": "1000" });
      return res.write('{"model_type":');
    }
    const to = redirects.get(path);
    if (to) {
      res.writeHead(302, { ...headers, location: to, "content-length": "0" });
      return res.end();
    }
    const body = files.get(path);
    if (!body) {
      res.writeHead(404, { ...headers, "content-length": "0" });
      return res.end();
    }
    const drip = drips.get(path);
    if (drip && !req.headers.range) {
      open.add(res);
      res.writeHead(200, { ...headers, "content-length": String(body.length) });
      const size = Math.ceil(body.length / drip.parts);
      let at = 0;
      const next = () => {
        if (res.destroyed) return;
        res.write(body.subarray(at, at + size));
        at += size;
        if (at >= body.length) res.end();
        else setTimeout(next, drip.delayMs);
      };
      return next();
    }
    const m = req.headers.range?.match(/^bytes=(\d+)-(\d+)$/);
    if (!m) {
      res.writeHead(200, { ...headers, "content-length": String(body.length) });
      return res.end(req.method === "HEAD" ? undefined : body);
    }
    const a = Number(m[1]), b = Math.min(Number(m[2]), body.length - 1);
    const part = body.subarray(a, b + 1);
    res.writeHead(206, {
      ...headers,
      "content-range": `bytes ${a}-${b}/${body.length}`,
      "content-length": String(part.length),
    });
    res.end(part);
  });
  const { base, close } = await listenLocal(server, open, lifetimeMs);
  return {
    base,
    log,
    stall: (p) => stalls.add(p),
    drip: (p, parts, delayMs) => drips.set(p, { parts, delayMs }),
    put: (p, b) => files.set(p, typeof b === "string" ? new TextEncoder().encode(b) : b),
    redirect: (p, to) => redirects.set(p, to),
    fail: (p, status, times) => failures.set(p, { status, times }),
    close,
  };
}

/** A TCP server on 127.0.0.1 that accepts connections and never answers; `close` drops them. */
export async function startSilentServer(
  lifetimeMs = 600_000,
): Promise<{ base: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createTcpServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
  });
  return await listenLocal(server, sockets, lifetimeMs);
}

/**
 * Listen on a free port of 127.0.0.1; `close` (idempotent) destroys the live connections in `conns`, then
 * closes `server`, and runs by itself after `lifetimeMs` so that a test that forgets it leaves nothing behind.
 */
async function listenLocal(
  server: HttpServer | TcpServer,
  conns: ReadonlySet<{ destroy(): void }>,
  lifetimeMs: number,
): Promise<{ base: string; close(): Promise<void> }> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    clearTimeout(auto);
    for (const c of conns) c.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  };
  const auto = setTimeout(close, lifetimeMs);
  return { base, close };
}
