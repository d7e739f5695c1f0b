/**
 * An HTTP(S) URL as a {@link ByteSource}, read with Range requests: a reader fetches a header, then only
 * the tensors it is asked for, never the whole file.
 *
 * @module
 */
import { type ByteSource, checkRange } from "./byte_source.ts";
import { FormatError } from "../errors.ts";

/** Options of {@link openUrl} and {@link fetchUrlText}. */
export interface OpenUrlOptions {
  /** The fetch to use (a proxy, a mock, an authenticated client); default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /**
   * Extra request headers (e.g. `Authorization`), sent to the URL's own origin only: a redirect to another
   * host is followed without them.
   */
  headers?: Record<string, string>;
  /**
   * Retries of a request after a network error, a timeout or a transient answer (408, 429, 500, 502, 503,
   * 504); default 2. Other statuses, and the caller's abort, are never retried.
   */
  retries?: number;
  /** Pause before the first retry in milliseconds, growing linearly (default 250). */
  retryDelayMs?: number;
  /**
   * Longest wait without progress, in milliseconds (default 30 000): for the answer to a request, then between
   * two chunks of its body. A server that accepts and never answers, or stalls mid-body, fails (after the
   * retries) with a FormatError naming the URL instead of hanging; a slow transfer that progresses goes on.
   */
  timeoutMs?: number;
  /** Aborts every request (and the pauses between retries) when it fires. */
  signal?: AbortSignal;
}

/** Statuses worth retrying: the server says "later", not "no". */
const TRANSIENT = new Set([408, 429, 500, 502, 503, 504]);
/** Redirects followed per request. */
const MAX_REDIRECTS = 5;

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
  const request = <T>(
    method: string,
    range: string | undefined,
    what: string,
    use: (res: Response) => Promise<T>,
  ): Promise<T> => requestWithPolicy(parsed, name, opts, method, range, what, use);

  const size = await probeSize();

  async function probeSize(): Promise<number> {
    const what = "open URL (Range probe bytes=0-0)";
    const res = await request("GET", "bytes=0-0", what, (r) => discard(r).then(() => r));
    if (res.status === 206) {
      const total = totalFromContentRange(res.headers.get("content-range"));
      if (total !== undefined) return total;
    } else if (res.status === 416) {
      // an empty file cannot satisfy bytes=0-0; servers then send "bytes */0"
      const total = totalFromContentRange(res.headers.get("content-range"));
      if (total !== undefined) return total;
      throw new FormatError(name, `${what}: status 416 without a Content-Range total`);
    } else if (res.status === 200) {
      throw new FormatError(
        name,
        `${what}: server ignored the Range header (status 200, whole file sent); it must support byte ranges`,
      );
    } else {
      throw new FormatError(name, `${what}: HTTP status ${res.status} ${res.statusText}`.trimEnd());
    }
    // 206 without a usable total: ask HEAD for the length
    const head = await request("HEAD", undefined, "open URL (HEAD)", (r) => discard(r).then(() => r));
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
      const buf = await request("GET", range, what, async (res) => {
        if (res.status === 200) {
          await discard(res);
          throw new FormatError(
            name,
            `${what}: server ignored the Range header (status 200, whole file sent)`,
          );
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
        return await res.arrayBuffer();
      });
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

/** Thrown by a deadline or the caller's abort inside {@link requestWithPolicy}. */
class Stopped extends Error {}

/**
 * One request under the retry policy: each attempt may wait `opts.timeoutMs` for the answer, then as long
 * again between two chunks of the body `use` reads; network errors, timeouts and {@link TRANSIENT} statuses are retried
 * `opts.retries` times after a growing pause; the caller's signal stops everything. Redirects are followed
 * here (at most {@link MAX_REDIRECTS}), and the caller's headers go to the first URL's origin only.
 */
export async function requestWithPolicy<T>(
  url: URL,
  name: string,
  opts: OpenUrlOptions,
  method: string,
  range: string | undefined,
  what: string,
  use: (res: Response) => Promise<T>,
): Promise<T> {
  const doFetch = opts.fetch ?? globalThis.fetch;
  if (typeof doFetch !== "function") throw new FormatError(name, "open URL: no fetch() in this runtime");
  const retries = opts.retries ?? 2,
    retryDelayMs = opts.retryDelayMs ?? 250,
    timeoutMs = opts.timeoutMs ?? 30_000;
  for (
    const [k, v] of [["retries", retries], ["retryDelayMs", retryDelayMs], ["timeoutMs", timeoutMs]] as const
  ) {
    if (!Number.isFinite(v) || v < 0) {
      throw new FormatError(name, `${what}: option ${k} must be ≥ 0, got ${v}`);
    }
  }
  const aborted = () => new FormatError(name, `${what}: aborted by the caller`);
  for (let attempt = 0;; attempt++) {
    if (opts.signal?.aborted) throw aborted();
    const ctrl = new AbortController();
    let timedOut = false;
    let stop: (e: Error) => void = () => {};
    const stopped = new Promise<never>((_, reject) => (stop = reject));
    stopped.catch(() => {});
    const expire = () => {
      timedOut = true;
      ctrl.abort();
      stop(new Stopped());
    };
    // an idle deadline: re-armed by every body chunk, so a slow transfer that progresses is not cut
    let timer = setTimeout(expire, timeoutMs);
    const rearm = () => {
      clearTimeout(timer);
      timer = setTimeout(expire, timeoutMs);
    };
    const onAbort = () => {
      ctrl.abort();
      stop(new Stopped());
    };
    opts.signal?.addEventListener("abort", onAbort);
    let failure: Error;
    try {
      // Promise.race: a fetch (or a body) that ignores its signal still cannot outlive the deadline
      const res = await Promise.race([
        fetchFollowing(doFetch, url, opts.headers, method, range, ctrl.signal, name),
        stopped,
      ]);
      if (TRANSIENT.has(res.status) && attempt < retries) {
        await discard(res);
        failure = new Error(`HTTP status ${res.status}`);
      } else {
        return await Promise.race([use(watchProgress(res, rearm)), stopped]);
      }
    } catch (e) {
      if (e instanceof FormatError) throw e;
      if (opts.signal?.aborted) throw aborted();
      failure = timedOut ? new Error(`no answer for ${timeoutMs} ms (timeoutMs)`) : e as Error;
      if (attempt >= retries) {
        throw new FormatError(name, `${what}: request failed after ${attempt + 1} tries: ${failure.message}`);
      }
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
    }
    await pause(retryDelayMs * (attempt + 1), opts.signal);
  }
}

/** `res` with a body that calls `onChunk` as each chunk arrives (the same status, headers and bytes). */
function watchProgress(res: Response, onChunk: () => void): Response {
  if (!res.body || typeof TransformStream === "undefined") return res;
  const body = res.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, out) {
        onChunk();
        out.enqueue(chunk);
      },
    }),
  );
  return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
}

/** Wait `ms`, or less if `signal` fires (the next loop turn then reports the abort). */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done);
  });
}

/** fetch with redirects followed by hand: the caller's headers are dropped on the way to another origin. */
async function fetchFollowing(
  doFetch: typeof fetch,
  first: URL,
  callerHeaders: Record<string, string> | undefined,
  method: string,
  range: string | undefined,
  signal: AbortSignal,
  name: string,
): Promise<Response> {
  let url = first;
  for (let hop = 0;; hop++) {
    // identity encoding: byte ranges must address the stored bytes, not a compressed rendition
    const headers: Record<string, string> = {
      "accept-encoding": "identity",
      ...(url.origin === first.origin ? callerHeaders : {}),
    };
    if (range) headers.range = range;
    const res = await doFetch(url.href, { method, headers, signal, redirect: "manual" });
    if (res.type === "opaqueredirect") {
      // A browser hides the target of a manual redirect: let it follow. Headers go to this hop's origin as
      // above; the Fetch standard drops Authorization on a cross-origin redirect.
      return await doFetch(url.href, { method, headers, signal });
    }
    const location = res.status >= 300 && res.status < 400 ? res.headers.get("location") : null;
    if (location === null) return res;
    await discard(res);
    if (hop >= MAX_REDIRECTS) throw new FormatError(name, `more than ${MAX_REDIRECTS} redirects`);
    const next = new URL(location, url);
    if (next.protocol !== "http:" && next.protocol !== "https:") {
      throw new FormatError(name, `redirect to a ${next.protocol} URL refused`);
    }
    url = next;
  }
}

/**
 * Fetch a small text file (a config.json, a tokenizer, a shard index) under the {@link OpenUrlOptions}
 * policy; undefined on 404 when `optional`; `what` names the action in errors. Refuses bodies over `maxBytes` (default 256 MB) and bodies that
 * are not UTF-8, naming the URL.
 */
export async function fetchUrlText(
  url: string | URL,
  opts: OpenUrlOptions = {},
  optional = false,
  what = "fetch",
  maxBytes = 256 << 20,
): Promise<string | undefined> {
  const parsed = new URL(url);
  const name = displayName(parsed);
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new FormatError(name, `${what}: only http(s) URLs are read, got ${parsed.protocol}`);
  }
  return await requestWithPolicy(parsed, name, opts, "GET", undefined, what, async (res) => {
    if (res.status === 404 && optional) {
      await discard(res);
      return undefined;
    }
    if (!res.ok) {
      await discard(res);
      throw new FormatError(name, `${what}: HTTP status ${res.status} ${res.statusText}`.trimEnd());
    }
    const declared = Number(res.headers.get("content-length") ?? 0);
    if (declared > maxBytes) {
      await discard(res);
      throw new FormatError(
        name,
        `${what}: ${declared} bytes, more than the ${maxBytes}-byte limit for this file`,
      );
    }
    const buf = new Uint8Array(await res.arrayBuffer());
    if (buf.length > maxBytes) {
      throw new FormatError(
        name,
        `${what}: ${buf.length} bytes, more than the ${maxBytes}-byte limit for this file`,
      );
    }
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(buf);
    } catch {
      throw new FormatError(name, `${what}: the file is not UTF-8 text`);
    }
  });
}
