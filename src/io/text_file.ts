/**
 * Small text files a model folder holds (config.json, tokenizer files, a shard index): read only when they
 * are regular files of sane size, parsed as JSON with the file named in every error.
 *
 * @module
 */
import { FormatError } from "../errors.ts";

/** Largest text file read whole (a 256K-token tokenizer.json is ~20 MB). */
export const MAX_TEXT_FILE_BYTES = 256 << 20;

/**
 * Throw a FormatError unless `path` is a regular file: a FIFO, socket or device named like a model file
 * would block the reader forever or never end. `st` is a `node:fs` Stats.
 */
export function checkRegularFile(
  path: string,
  st: { isFile(): boolean; isDirectory(): boolean },
  what: string,
): void {
  if (st.isFile()) return;
  throw new FormatError(
    path,
    `${what}: ${
      st.isDirectory() ? "it is a folder" : "not a regular file (a FIFO, socket or device)"
    }, expected a file`,
  );
}

/**
 * Read a local UTF-8 text file; undefined when it does not exist and `optional`. Refuses non-regular files,
 * files over `maxBytes` and text that is not UTF-8, and names `path` in every error (errno included).
 *
 * @example
 * ```ts
 * import { readTextFile } from "./text_file.ts";
 * const text = await readTextFile("test/fixtures/models/llama-gqa-tiny/config.json", "load model");
 * ```
 */
export async function readTextFile(
  path: string,
  what: string,
  optional = false,
  maxBytes = MAX_TEXT_FILE_BYTES,
): Promise<string | undefined> {
  const { readFile, stat } = await import("node:fs/promises");
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    if (optional && (e as { code?: string }).code === "ENOENT") return undefined;
    throw new FormatError(path, `${what}: cannot read the file (${(e as Error).message})`);
  }
  checkRegularFile(path, st, what);
  if (st.size > maxBytes) {
    throw new FormatError(
      path,
      `${what}: ${st.size} bytes, more than the ${maxBytes}-byte limit for this file`,
    );
  }
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new FormatError(path, `${what}: cannot read the file (${(e as Error).message})`);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new FormatError(path, `${what}: the file is not UTF-8 text`);
  }
}

/**
 * Parse `text` as a JSON object; a syntax error or another JSON value throws a FormatError naming `source`.
 *
 * @example
 * ```ts
 * import { parseJsonObject } from "./text_file.ts";
 * parseJsonObject('{"a": 1}', "config.json", "load model"); // { a: 1 }
 * ```
 */
export function parseJsonObject(text: string, source: string, what: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new FormatError(source, `${what}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new FormatError(
      source,
      `${what} must hold a JSON object, got ${
        json === null ? "null" : Array.isArray(json) ? "an array" : typeof json
      }`,
    );
  }
  return json as Record<string, unknown>;
}
