/**
 * Bytes in: what `compress` can read a model from (a folder or `.gguf` path, an http(s)/file URL, a GGUF file
 * as a Blob or bytes, a Hugging Face folder as its `File`s, a tar of one), opened through the model loader, and
 * where the output's tokenizer files then come from. File-system access is imported lazily, so the browser's import graph holds no `node:` module.
 *
 * @example
 * ```ts
 * import { openModelSource } from "./source.ts";
 * const bytes = await (await fetch(new URL("../../models/stories260K/stories260K.gguf", import.meta.url))).arrayBuffer();
 * const { model, origin } = await openModelSource(new Blob([bytes]));
 * console.log(model.spec.numLayers, origin.gguf?.has("tokenizer.ggml.tokens")); // 5 true
 * await model.close();
 * ```
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import { type GgufValue, openGguf } from "../io/gguf.ts";
import type { ByteSource } from "../io/byte_source.ts";
import { type FileSet, isTarHeader } from "../io/file_set.ts";
import { openUrl, type OpenUrlOptions } from "../io/url_source.ts";
import {
  type LoadedModel,
  loadModel,
  type ModelFiles,
  modelFromGguf,
  resolveModelFiles,
} from "../model/load.ts";
import { folderSideFiles, type SideFiles, urlSideFiles } from "./output.ts";

/**
 * A model `compress` can open: a folder or `.gguf` path, an http(s)/file URL, a GGUF file's bytes, or
 * {@link ModelFiles} (a GGUF file or a tar of a model folder as a Blob/File; a Hugging Face folder's Files).
 */
export type ModelSource = string | URL | Uint8Array | ArrayBuffer | ModelFiles;

/** Where the model given to `compressModel` came from (all optional). */
export interface ModelOrigin {
  /** The folder or file it was read from: never written onto, and its tokenizer files are copied. */
  inputPath?: string;
  /** Its side files (tokenizer), when not a local folder. */
  sideFiles?: SideFiles;
  /** A GGUF input's metadata (its vocabulary is kept as `tokenizer_gguf.json`). */
  gguf?: ReadonlyMap<string, GgufValue>;
}

/** Where the output's tokenizer files come from. */
export async function sideFilesOf(
  origin: ModelOrigin,
  gguf: boolean,
): Promise<{ gguf: ReadonlyMap<string, GgufValue> } | { files: SideFiles } | undefined> {
  if (origin.gguf) return { gguf: origin.gguf };
  if (origin.sideFiles) return { files: origin.sideFiles };
  if (!origin.inputPath) return undefined;
  if (!gguf) return { files: folderSideFiles(origin.inputPath) };
  // An opened GGUF model given by path only: read its metadata again for the vocabulary.
  const g = await openGguf(origin.inputPath);
  try {
    return { gguf: g.kv };
  } finally {
    await g.close();
  }
}

/** True when the first bytes are GGUF's magic. */
async function isGgufBytes(input: Blob | Uint8Array | ArrayBuffer): Promise<boolean> {
  const head = input instanceof Blob
    ? new Uint8Array(await input.slice(0, 4).arrayBuffer())
    : new Uint8Array(input instanceof Uint8Array ? input.subarray(0, 4) : input.slice(0, 4));
  return head.length === 4 && String.fromCharCode(...head) === "GGUF";
}

/**
 * Open what `compress` was given, and where its side files come from; `urlOpts` (fetch, headers, retries,
 * timeout) apply when `input` is an http(s) URL.
 */
export async function openModelSource(
  input: ModelSource,
  urlOpts: OpenUrlOptions = {},
): Promise<{ model: LoadedModel; origin: ModelOrigin }> {
  const isUrl = input instanceof URL || (typeof input === "string" && /^(https?|file):/i.test(input));
  if (typeof input === "string" && !isUrl) {
    // A path goes through loadModel and all its checks (a GGUF file's vocabulary is read again at the end).
    return { model: await loadModel(input), origin: { inputPath: input } };
  }
  if (isUrl) {
    const url = new URL(input as string | URL);
    if (url.protocol === "file:") {
      const { fileURLToPath } = await import("node:url");
      return await openModelSource(fileURLToPath(url));
    }
    if (/\.gguf$/i.test(url.pathname)) return await openGgufModel(await openUrl(url, urlOpts), url.href);
    return { model: await loadModel(url, urlOpts), origin: { sideFiles: urlSideFiles(url) } };
  }
  if (input instanceof Uint8Array || input instanceof ArrayBuffer) {
    if (!await isGgufBytes(input)) {
      throw new OptionError(
        "compress: bytes is not a GGUF file (bytes must hold one; give a Hugging Face folder by path, URL or its Files)",
      );
    }
    return await openGgufModel(input, "model.gguf");
  }
  if (
    typeof Blob !== "undefined" && input instanceof Blob && !await isGgufBytes(input) && !await isTar(input)
  ) {
    throw new OptionError(
      `compress: ${(input as { name?: string }).name || "blob"} is not a GGUF file (a Blob must hold one, ` +
        "or a tar of a model folder; give a Hugging Face folder by path, URL or its Files)",
    );
  }
  // A Blob, a folder's Files, a FileSet: through the loader's own resolution and checks.
  const r = await resolveModelFiles(input as ModelFiles);
  if ("gguf" in r) return await openGgufModel(r.gguf, r.gguf.name);
  return { model: await loadModel(r.folder), origin: { sideFiles: setSideFiles(r.folder) } };
}

/** True when a Blob holds a tar archive, by the loader's own test ({@link isTarHeader}). */
async function isTar(blob: Blob): Promise<boolean> {
  return isTarHeader(new Uint8Array(await blob.slice(0, 263).arrayBuffer()));
}

/** Side files of a folder given as a {@link FileSet}. */
function setSideFiles(set: FileSet): SideFiles {
  return async (name) => {
    const src = set.open(name);
    if (!src) return undefined;
    try {
      return await src.read(0, src.size);
    } finally {
      await src.close();
    }
  };
}

async function openGgufModel(
  input: string | URL | Blob | Uint8Array | ArrayBuffer | ByteSource,
  where: string,
): Promise<{ model: LoadedModel; origin: ModelOrigin }> {
  const g = await openGguf(input);
  try {
    const name = where.split(/[\\/]/).pop()!.replace(/\.gguf$/i, "");
    const model = modelFromGguf(g, where, name);
    return { model, origin: { gguf: g.kv, inputPath: typeof input === "string" ? input : undefined } };
  } catch (e) {
    await g.close();
    throw e;
  }
}
