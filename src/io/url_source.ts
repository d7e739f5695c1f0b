/**
 * An HTTP(S) URL as a {@link ByteSource}, read with Range requests: a reader fetches a header, then only
 * the tensors it is asked for, never the whole file.
 *
 * @module
 */
import { type ByteSource, checkRange } from "./byte_source.ts";
import { FormatError } from "../errors.ts";

/** Options of {@link openUrl}. */
export interface OpenUrlOptions {
  /** The fetch to use (a proxy, a mock, an authenticated client); default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Extra request headers sent with every request (e.g. `Authorization`). */
  headers?: Record<string, string>;
  /** Retries of a request after a network error or a 502/503/504 answer (default 2). */
  retries?: number;
  /** Pause before the first retry in milliseconds, growing linearly (default 250). */
  retryDelayMs?: number;
}

/** Name a URL in messages without any user:password part. */
function displayName(url: URL): string {
  if (!url.username && !url.password) return url.href;
  const u = new URL(url.href);
  u.username = "";
  u.password = "";
  return u.href;
}

/** Stop a response body we will not read, so the connection is not left streaming a whole file. */
async function discard(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // the body may already be closed; nothing to release then
  }
}

/** Total size from a Content-Range header (`bytes 0-0/1234` or `bytes *\/1234`), or undefined. */
function totalFromContentRange(value: string | null): number | undefined {
  const m = value?.match(/^\s*bytes\s+(?:\d+-\d+|\*)\/(\d+)\s*$/i);
  if (!m) return undefined;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Open a remote file by URL as a {@link ByteSource}. The size comes from a one-byte Range probe
 * (`bytes=0-0` → `Content-Range`), or from a HEAD request's `Content-Length` if the probe gives none.
 * Every read is one ranged GET; a server that ignores Range (status 200), answers with a short body or an
 * error status gives a {@link FormatError} naming the URL and the status.
 *
 * @example
 * ```ts ignore
 * import { openUrl } from "./url_source.ts";
 * const src = await openUrl("https://example.org/model.safetensors");
 * const headerLength = await src.read(0, 8);
 * ```
 */
export async function openUrl(url: string | URL, opts: OpenUrlOptions = {}): Promise<ByteSource> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new FormatError(String(url), "open URL: not a valid URL");
  }
  const name = displayName(parsed);
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new FormatError(
      name,
      `open URL: only http(s) URLs are read with Range requests, got ${parsed.protocol}`,
    );
  }
  const doFetch = opts.fetch ?? globalThis.fetch;
  if (typeof doFetch !== "function") throw new FormatError(name, "open URL: no fetch() in this runtime");
  // identity encoding: byte ranges must address the stored bytes, not a compressed rendition
  const baseHeaders = { "accept-encoding": "identity", ...opts.headers };

  const retries = opts.retries ?? 2;
  const retryDelayMs = opts.retryDelayMs ?? 250;

  /** One request, retried on network errors and 502/503/504 (transient), with a growing pause. */
  async function request(method: string, range: string | undefined, what: string): Promise<Response> {
    const headers: Record<string, string> = { ...baseHeaders };
    if (range) headers.range = range;
    for (let attempt = 0;; attempt++) {
      let res: Response;
      try {
        res = await doFetch(parsed.href, { method, headers });
      } catch (e) {
        if (attempt < retries) {
          await new Promise((r) => setTimeout(r, retryDelayMs * (attempt + 1)));
          continue;
        }
        throw new FormatError(
          name,
          `${what}: request failed after ${attempt + 1} tries: ${(e as Error).message}`,
        );
      }
      if ((res.status === 502 || res.status === 503 || res.status === 504) && attempt < retries) {
        await discard(res);
        await new Promise((r) => setTimeout(r, retryDelayMs * (attempt + 1)));
        continue;
      }
      return res;
    }
  }

  const size = await probeSize();

  async function probeSize(): Promise<number> {
    const what = "open URL (Range probe bytes=0-0)";
    const res = await request("GET", "bytes=0-0", what);
    if (res.status === 206) {
      const total = totalFromContentRange(res.headers.get("content-range"));
      await discard(res);
      if (total !== undefined) return total;
    } else if (res.status === 416) {
      // an empty file cannot satisfy bytes=0-0; servers then send "bytes */0"
      const total = totalFromContentRange(res.headers.get("content-range"));
      await discard(res);
      if (total !== undefined) return total;
      throw new FormatError(name, `${what}: status 416 without a Content-Range total`);
    } else if (res.status === 200) {
      await discard(res);
      throw new FormatError(
        name,
        `${what}: server ignored the Range header (status 200, whole file sent); it must support byte ranges`,
      );
    } else {
      await discard(res);
      throw new FormatError(name, `${what}: HTTP status ${res.status} ${res.statusText}`.trimEnd());
    }
    // 206 without a usable total: ask HEAD for the length
    const head = await request("HEAD", undefined, "open URL (HEAD)");
    await discard(head);
    const len = Number(head.headers.get("content-length") ?? NaN);
    if (!head.ok || !Number.isSafeInteger(len) || len < 0) {
      throw new FormatError(
        name,
        `open URL: cannot learn the size (no Content-Range total, HEAD status ${head.status}, Content-Length ${
          head.headers.get("content-length")
        })`,
      );
    }
    return len;
  }

  return {
    name,
    size,
    async read(offset: number, length: number): Promise<Uint8Array> {
      checkRange(name, size, offset, length);
      if (length === 0) return new Uint8Array(0);
      const range = `bytes=${offset}-${offset + length - 1}`;
      const what = `read ${length} bytes at offset ${offset} (Range ${range})`;
      const res = await request("GET", range, what);
      if (res.status === 200) {
        await discard(res);
        throw new FormatError(name, `${what}: server ignored the Range header (status 200, whole file sent)`);
      }
      if (res.status !== 206) {
        await discard(res);
        throw new FormatError(name, `${what}: HTTP status ${res.status} ${res.statusText}`.trimEnd());
      }
      const start = res.headers.get("content-range")?.match(/^\s*bytes\s+(\d+)-/i)?.[1];
      if (start !== undefined && Number(start) !== offset) {
        await discard(res);
        throw new FormatError(
          name,
          `${what}: server answered a different range (${res.headers.get("content-range")})`,
        );
      }
      let buf: ArrayBuffer;
      try {
        buf = await res.arrayBuffer();
      } catch (e) {
        throw new FormatError(name, `${what}: body failed: ${(e as Error).message}`);
      }
      if (buf.byteLength !== length) {
        const problem = buf.byteLength < length ? "short body" : "body too long";
        throw new FormatError(name, `${what}: ${problem}, got ${buf.byteLength} of ${length} bytes`);
      }
      return new Uint8Array(buf);
    },
    close(): Promise<void> {
      return Promise.resolve();
    },
  };
}
