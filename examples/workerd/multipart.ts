/**
 * The compressed folder as a `multipart/mixed` body streamed while the model is compressed: each file is one
 * part (`content-disposition: attachment; filename="…"`), written as the pipeline writes it, so the Worker
 * never holds the output (tinylm-brown's is 22 MB, a sixth of workerd's 128 MB). Unlike tar, a part needs
 * no size up front. The closing delimiter `--BOUNDARY--` is written only at `commit`; on failure the stream
 * is errored, which cuts the HTTP body: a client that sees no closing delimiter ({@link parseMultipart}
 * throws) has a partial output.
 *
 * @example
 * ```ts
 * import { multipartSink, parseMultipart } from "./multipart.ts";
 * const { sink, readable, contentType } = multipartSink("out");
 * const body = new Response(readable).arrayBuffer();
 * const f = await sink.file("config.json");
 * await f.write(new TextEncoder().encode("{}"));
 * await f.close();
 * await sink.commit();
 * const files = parseMultipart(new Uint8Array(await body), contentType);
 * console.log(new TextDecoder().decode(files.get("config.json"))); // "{}"
 * ```
 *
 * @module
 */
import type { ByteSink, OutputSink } from "../../mod.ts";

export type { ByteSink, OutputSink };

/** A sink streaming into `readable` as multipart/mixed with the given `contentType`. */
export interface MultipartSink {
  /** Give this to `compress`. */
  sink: OutputSink;
  /** The response body. */
  readable: ReadableStream<Uint8Array>;
  /** `multipart/mixed; boundary=…`. */
  contentType: string;
  /** Resolves with the first file's name when the pipeline starts writing (time to send the headers). */
  started: Promise<string>;
}

const enc = new TextEncoder();

/** A multipart sink named `name` (see the module doc). */
export function multipartSink(name: string): MultipartSink {
  const boundary = `svd-llm-${crypto.randomUUID()}`;
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const w = writable.getWriter();
  let state: "open" | "committed" | "aborted" = "open";
  let start!: (name: string) => void;
  const started = new Promise<string>((r) => (start = r));
  const live = (what: string) => {
    if (state !== "open") throw new Error(`output ${name}: ${what} after ${state}`);
  };
  const sink: OutputSink = {
    name,
    file(file: string): Promise<ByteSink> {
      live(`file ${file}`);
      if (!/^[^\\/\0"\r\n]+$/.test(file) || file === "." || file === "..") {
        throw new Error(`output ${name}: invalid file name ${JSON.stringify(file)}`);
      }
      start(file);
      const head = `--${boundary}\r\ncontent-type: application/octet-stream\r\n` +
        `content-disposition: attachment; filename="${file}"\r\n\r\n`;
      const opened = w.write(enc.encode(head));
      return opened.then(() => ({
        write: (bytes: Uint8Array) => (live(`write ${file}`), w.write(bytes.slice())), // the writer reuses buffers
        close: () => w.write(enc.encode("\r\n")),
        abort: () => Promise.resolve(), // the whole stream is errored by the sink's abort
      }));
    },
    async commit() {
      live("commit");
      state = "committed";
      await w.write(enc.encode(`--${boundary}--\r\n`));
      await w.close();
    },
    async abort(reason?: unknown) {
      if (state !== "open") return;
      state = "aborted";
      await w.abort(reason ?? new Error(`output ${name}: aborted`)).catch(() => {});
    },
  };
  return { sink, readable, contentType: `multipart/mixed; boundary=${boundary}`, started };
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = from; i <= hay.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/**
 * Read a body written by {@link multipartSink} into file name → bytes. Throws a RangeError when the closing
 * delimiter is missing (the body was cut: a partial output) or a part has no file name.
 */
export function parseMultipart(body: Uint8Array, contentType: string): Map<string, Uint8Array> {
  const b = /boundary=([^;\s]+)/.exec(contentType)?.[1];
  if (!b) throw new RangeError(`parse multipart: no boundary in content type ${JSON.stringify(contentType)}`);
  const delim = enc.encode(`--${b}`);
  const out = new Map<string, Uint8Array>();
  let pos = indexOf(body, delim, 0);
  while (pos >= 0) {
    const after = pos + delim.length;
    if (body[after] === 0x2d && body[after + 1] === 0x2d) return out; // "--": the closing delimiter
    const headEnd = indexOf(body, enc.encode("\r\n\r\n"), after);
    if (headEnd < 0) break;
    const head = new TextDecoder().decode(body.subarray(after, headEnd));
    const name = /filename="([^"]+)"/.exec(head)?.[1];
    if (!name) throw new RangeError(`parse multipart: a part at byte ${pos} has no file name`);
    const next = indexOf(body, enc.encode(`\r\n--${b}`), headEnd + 4);
    if (next < 0) break;
    out.set(name, body.slice(headEnd + 4, next));
    pos = next + 2;
  }
  throw new RangeError(`parse multipart: no closing delimiter after ${body.length} bytes (output cut short)`);
}
