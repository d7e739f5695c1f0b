/**
 * One door for every byte source: a path, a `file:` or `http(s):` URL, a Blob, bytes, or an open source.
 *
 * @module
 */
import { type ByteSource, openFile } from "./byte_source.ts";
import { openBlob } from "./blob_source.ts";
import { openBytes } from "./memory_source.ts";
import { openUrl, type OpenUrlOptions } from "./url_source.ts";
import { OptionError } from "../errors.ts";

/** Anything {@link openSource} can open. */
export type SourceInput = string | URL | Blob | Uint8Array | ArrayBuffer | ByteSource;

/** True if `x` already is a {@link ByteSource}. */
export function isByteSource(x: unknown): x is ByteSource {
  if (typeof x !== "object" || x === null) return false;
  const s = x as Partial<ByteSource>;
  return typeof s.read === "function" && typeof s.close === "function" && typeof s.size === "number" &&
    typeof s.name === "string";
}

/**
 * Open `input` as a {@link ByteSource}: `http(s)` URLs (string or URL) through HTTP Range requests, `file:` URLs
 * and other strings as local paths, a `Blob`/`File` by slicing, bytes in memory as they are; a ByteSource is
 * returned unchanged (and stays the caller's to close).
 *
 * @example
 * ```ts
 * import { openSource } from "./open_source.ts";
 * const src = await openSource("models/stories260K/stories260K.gguf");
 * console.log(src.size);
 * await src.close();
 * ```
 */
export async function openSource(input: SourceInput, opts: OpenUrlOptions = {}): Promise<ByteSource> {
  if (isByteSource(input)) return input;
  if (typeof Blob !== "undefined" && input instanceof Blob) return openBlob(input);
  if (input instanceof Uint8Array || input instanceof ArrayBuffer) return openBytes(input);
  if (input instanceof URL || (typeof input === "string" && /^(https?:\/\/|file:)/i.test(input))) {
    const url = new URL(input);
    if (url.protocol === "http:" || url.protocol === "https:") return await openUrl(url, opts);
    if (url.protocol === "file:") {
      const { fileURLToPath } = await import("node:url");
      return await openFile(fileURLToPath(url));
    }
    throw new OptionError(
      `open source: unsupported URL scheme ${url.protocol} in ${url.href} (use http, https, file)`,
    );
  }
  if (typeof input === "string") return await openFile(input);
  throw new OptionError(
    `open source: cannot open a ${Object.prototype.toString.call(input)} (give a path, URL or Blob)`,
  );
}
