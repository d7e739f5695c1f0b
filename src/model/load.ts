/**
 * Open a model for evaluation, calibration or generation: a Hugging Face folder (config.json, safetensors,
 * tokenizer.json) or a GGUF file, local or by URL — one loader, whose folder is either a local directory or a
 * URL prefix ({@link loadModel}). Only the headers are read here, and every size they state is checked against
 * the tensors present ({@link checkLoadedModel}); weights are read block by block later.
 *
 * @module
 */
import { FormatError, OptionError } from "../errors.ts";
import type { ByteSource } from "../io/byte_source.ts";
import { type GgufFile, openGguf } from "../io/gguf.ts";
import { openSafetensors } from "../io/safetensors_reader.ts";
import { INDEX_FILE, openModelWeights, openSetWeights, openShardedSafetensors } from "../io/sharded.ts";
import { openBlob } from "../io/blob_source.ts";
import {
  type FileSet,
  fileSetFromFiles,
  fileSetFromTar,
  isFileSet,
  isTarHeader,
  readSetText,
} from "../io/file_set.ts";
import { checkedReader, type TensorInfo, type TensorReader } from "../io/tensor_reader.ts";
import { checkRegularFile, parseJsonObject, readTextFile } from "../io/text_file.ts";
import { fetchUrlText, openUrl, type OpenUrlOptions } from "../io/url_source.ts";
import { hfTokenizerFromJson } from "../tokenize/hf.ts";
import { tokenizerFromGguf, tokenizerFromGgufJson } from "../tokenize/from_gguf.ts";
import type { Tokenizer } from "../tokenize/tokenizer.ts";
import { EMBED, FINAL_NORM, ggufToHfName, LINEAR_NAMES, LM_HEAD } from "./names.ts";
import { linearShape } from "./linear_shape.ts";
import { type LlamaSpec, specFromGguf, specFromHfConfig } from "./spec.ts";

/** An opened model: spec, weights under canonical names, tokenizer. Close it when done. */
export interface LoadedModel {
  /** Architecture. */
  readonly spec: LlamaSpec;
  /** Weights under Hugging Face names (a GGUF file's names are mapped). */
  readonly reader: TensorReader;
  /** The model's tokenizer. */
  readonly tokenizer: Tokenizer;
  /** Raw config.json, or for GGUF an object of the metadata's scalar values. */
  readonly config: Record<string, unknown>;
  /** Display name: the folder or file name. */
  readonly name: string;
  /** Release the weight files. */
  close(): Promise<void>;
}

/**
 * View a GGUF file under Hugging Face tensor names (`blk.0.attn_q.weight` → `model.layers.0.self_attn.q_proj.weight`).
 * Tensors outside the LLaMA map keep their GGUF names. Shapes are as stored: q/k rows stay in llama.cpp's
 * interleaved layout, which is why a GGUF spec has ropeStyle "interleaved".
 */
export function ggufAsHfReader(g: GgufFile): TensorReader {
  const toGguf = new Map<string, string>();
  const infos: TensorInfo[] = [];
  for (const t of g.tensors()) {
    const hf = ggufToHfName(t.name) ?? t.name;
    if (toGguf.has(hf)) throw new FormatError(g.name, `GGUF: two tensors map to ${hf}`);
    toGguf.set(hf, t.name);
    infos.push(Object.freeze({ ...t, name: hf }));
  }
  const byName = new Map(infos.map((i) => [i.name, i]));
  const frozen = Object.freeze(infos);
  const gg = (name: string): string => {
    const n = toGguf.get(name);
    if (n === undefined) {
      throw new FormatError(g.name, `no tensor named ${JSON.stringify(name)} in this GGUF file`);
    }
    return n;
  };
  return {
    name: g.name,
    metadata: g.metadata,
    tensors: () => frozen,
    has: (name) => byName.has(name),
    info: (name) => byName.get(name) ?? g.info(gg(name)),
    read: (name) => g.read(gg(name)),
    close: () => g.close(),
  };
}

/**
 * A {@link LoadedModel} over an opened GGUF file (spec and tokenizer from its metadata, tensors under Hugging
 * Face names). Closing the model closes the file.
 */
export function modelFromGguf(g: GgufFile, where: string, name: string): LoadedModel {
  const reader = checkedReader(ggufAsHfReader(g));
  if (reader.has("rope_freqs.weight")) {
    // Llama 3.1+ GGUFs carry their RoPE scaling as per-pair frequency factors: not applied here
    throw new OptionError(`${where}: GGUF rope_freqs (Llama 3.1-style RoPE scaling) is not supported`);
  }
  const embedRows = reader.has("model.embed_tokens.weight")
    ? reader.info("model.embed_tokens.weight").shape[0]
    : undefined;
  const spec = Object.freeze({
    ...specFromGguf(g.kv, where, embedRows),
    tieWordEmbeddings: !reader.has(LM_HEAD),
  });
  const tokenizer = tokenizerFromGguf(g.kv, where);
  const config: Record<string, unknown> = {};
  for (const [k, v] of g.kv) if (typeof v !== "object") config[k] = typeof v === "bigint" ? String(v) : v;
  return { spec, reader, tokenizer, config, name, close: () => reader.close() };
}

async function loadGgufModel(input: string | ByteSource, where: string, name: string): Promise<LoadedModel> {
  const g = await openGguf(input);
  try {
    return modelFromGguf(g, where, name.replace(/\.gguf$/i, ""));
  } catch (e) {
    await g.close();
    throw e;
  }
}

/**
 * Open a model: a `.gguf` file, or a Hugging Face folder with config.json, model.safetensors (or a sharded
 * index) and tokenizer.json (else `tokenizer_gguf.json`, the GGUF vocabulary kept by a compressed GGUF model).
 * Either may be a local path, a `file:` URL or an `http(s)` URL (a folder URL such as
 * `https://huggingface.co/<org>/<repo>/resolve/main/`): the same code reads both, remote files with Range
 * requests under `opts` (timeout, retries, abort signal, headers sent to that host only). In a browser the
 * folder may be given as its `File`s (a `FileList` from `<input type=file webkitdirectory>` or a drop), and a
 * GGUF file, or a tar of a model folder, as one `File`/`Blob` ({@link ModelFiles}). A shard index may
 * name only plain files beside it. Sizes in the config are checked against the tensors present
 * ({@link checkLoadedModel}) before anything is allocated from them.
 * Every tensor read is checked for NaN and ±Inf ({@link checkedReader}): a non-finite weight throws a
 * NumericError naming the tensor rather than producing a NaN perplexity or a NaN compressed model.
 *
 * @example
 * ```ts
 * import { loadModel } from "./load.ts";
 * const m = await loadModel("models/stories260K/stories260K.gguf");
 * console.log(m.spec.numLayers, m.tokenizer.encode("Once upon a time", { bos: true }));
 * await m.close();
 * ```
 */
export async function loadModel(
  path: string | URL | ModelFiles,
  opts: OpenUrlOptions = {},
): Promise<LoadedModel> {
  const m = typeof path === "string" || path instanceof URL
    ? await loadUnchecked(path, opts)
    : await loadFiles(await resolveModelFiles(path));
  try {
    checkLoadedModel(m);
  } catch (e) {
    await m.close();
    throw e;
  }
  return { ...m, reader: checkedReader(m.reader) };
}

/**
 * Throw a FormatError when the config's block count (num_hidden_layers / block_count) and the blocks the
 * weights hold disagree: more blocks in the weights would be skipped silently (a different model), fewer would
 * let a few bytes of config (`num_hidden_layers: 1e9`) drive a loop, and allocations, over blocks that are not
 * there. Runs over the tensor list only, before any weight is read.
 */
export function checkLayerCount(reader: TensorReader, spec: LlamaSpec): void {
  const present = new Set<number>();
  let top = -1; // a loop, not Math.max(...present): a hostile header may name 10⁶ blocks
  for (const t of reader.tensors()) {
    const m = /^model\.layers\.(\d+)\./.exec(t.name);
    if (m) {
      const i = Number(m[1]);
      present.add(i);
      if (i > top) top = i;
    }
  }
  if (top >= spec.numLayers) {
    throw new FormatError(
      reader.name,
      `load model: the weights hold ${
        top + 1
      } blocks (model.layers.0 … model.layers.${top}) but the config ` +
        `says ${spec.numLayers} (num_hidden_layers / block_count); fix the config rather than drop blocks`,
    );
  }
  if (present.size < spec.numLayers) {
    let missing = 0;
    while (present.has(missing)) missing++;
    throw new FormatError(
      reader.name,
      `load model: the config says ${spec.numLayers} blocks (num_hidden_layers / block_count) but the weights ` +
        `hold ${present.size} (model.layers.${missing} is missing)`,
    );
  }
}

/** Storage types a weight may have: an integer tensor (U8, I32, I64) read as floats would be garbage. */
const FLOAT_DTYPES: ReadonlySet<string> = new Set(["F32", "F16", "BF16", "F64"]);

/** [out, in] of each block linear under `spec` (from {@link linearShape}), by linear name. */
function linearShapes(spec: LlamaSpec): Record<string, readonly [number, number]> {
  return Object.fromEntries(LINEAR_NAMES.map((n) => [n, linearShape(spec, n)]));
}

/**
 * Throw a FormatError naming the first block tensor whose shape the config contradicts (a dense weight
 * [out, in], low-rank factors svd_a [out, r] and svd_b [r, in], norms [hidden]): sizes from a few bytes of
 * config are checked against the tensors present before they size anything.
 */
function checkBlockShapes(reader: TensorReader, spec: LlamaSpec): void {
  const want = linearShapes(spec);
  for (const t of reader.tensors()) {
    const m =
      /^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj|input_layernorm|post_attention_layernorm)\.(weight|svd_a|svd_b)$/
        .exec(t.name);
    if (!m) continue;
    const [out, inp] = want[m[1]] ?? [spec.hiddenSize, 0];
    const s = t.shape;
    const ok = want[m[1]] === undefined
      ? m[2] === "weight" && s.length === 1 && s[0] === spec.hiddenSize
      : m[2] === "weight"
      ? s.length === 2 && s[0] === out && s[1] === inp
      : m[2] === "svd_a"
      ? s.length === 2 && s[0] === out
      : s.length === 2 && s[1] === inp;
    if (!ok) {
      const expected = want[m[1]] === undefined
        ? `[${spec.hiddenSize}]`
        : m[2] === "weight"
        ? `[${out}, ${inp}]`
        : m[2] === "svd_a"
        ? `[${out}, rank]`
        : `[rank, ${inp}]`;
      throw new FormatError(
        reader.name,
        `load model: ${t.name} has shape [${s.join(", ")}] but the config (hidden_size ${spec.hiddenSize}, ` +
          `intermediate_size ${spec.intermediateSize}, ${spec.numHeads}/${spec.numKvHeads} heads of ${spec.headDim}) ` +
          `says ${expected}`,
      );
    }
  }
}

/**
 * Check an opened model against its own tensor list before anything is read or allocated from the config:
 * the block count ({@link checkLayerCount}), floating-point weights (an integer dtype is refused with the
 * tensor's name), every block linear's and norm's shape, the embedding's, lm_head's and final norm's shapes, and the BOS/EOS ids inside the
 * vocabulary (an id outside it would silently mean "no BOS"). Throws a FormatError naming the input.
 */
export function checkLoadedModel(m: LoadedModel): void {
  const { reader, spec, tokenizer } = m;
  checkLayerCount(reader, spec);
  for (const t of reader.tensors()) {
    if (!FLOAT_DTYPES.has(t.dtype) && /\.(weight|bias)$/.test(t.name)) {
      throw new FormatError(
        reader.name,
        `load model: tensor ${t.name} has the integer dtype ${t.dtype}; weights must be F32, F16, BF16 or F64`,
      );
    }
  }
  checkBlockShapes(reader, spec);
  // embedding and lm_head: [vocab (or more rows, padding), hidden]; final norm: [hidden]
  for (const name of [EMBED, LM_HEAD, FINAL_NORM]) {
    if (!reader.has(name)) continue;
    const shape = reader.info(name).shape;
    const ok = name === FINAL_NORM
      ? shape.length === 1 && shape[0] === spec.hiddenSize
      : shape.length === 2 && shape[1] === spec.hiddenSize && shape[0] >= spec.vocabSize;
    if (!ok) {
      throw new FormatError(
        reader.name,
        `load model: ${name} has shape [${shape.join(", ")}] but the config says ${
          name === FINAL_NORM ? "" : `vocab_size ${spec.vocabSize} × `
        }hidden_size ${spec.hiddenSize}`,
      );
    }
  }
  const vocab = Math.max(spec.vocabSize, tokenizer.vocabSize);
  for (const [field, id] of [["bos_token_id", tokenizer.bosId], ["eos_token_id", tokenizer.eosId]] as const) {
    if (id >= vocab || id >= spec.vocabSize) {
      throw new FormatError(
        m.name,
        `load model: ${field} ${id} is outside the vocabulary (0 … ${
          spec.vocabSize - 1
        }); fix the config or the tokenizer`,
      );
    }
  }
}

/** Where a Hugging Face model folder's files are read from: a local folder or a folder URL. */
interface ModelFolder {
  /** Display name (the folder's or the hub repository's name). */
  readonly name: string;
  /** The folder itself, for messages. */
  readonly where: string;
  /** A file's path or URL, for messages. */
  at(file: string): string;
  /** A small text file of the folder; undefined when absent and `optional`. */
  readText(file: string, optional: boolean): Promise<string | undefined>;
  /** The weights: model.safetensors or the sharded index (a local folder may also hold one other file). */
  openWeights(): Promise<TensorReader>;
}

async function localFolder(dir: string, opts: OpenUrlOptions): Promise<ModelFolder> {
  const { join, basename } = await import("node:path");
  return {
    name: basename(dir),
    where: dir,
    at: (file) => join(dir, file),
    readText: (file, optional) => readTextFile(join(dir, file), `load model: read ${file}`, optional),
    openWeights: () => openModelWeights(dir, opts),
  };
}

function urlFolder(u: URL, opts: OpenUrlOptions): ModelFolder {
  // the Hugging Face hub's https://huggingface.co/<org>/<repo>/resolve/<rev>/ names the repo, not the revision
  const hub = /\/([^/]+)\/resolve\/[^/]+\/?$/.exec(u.pathname);
  const last = hub?.[1] ?? u.pathname.replace(/\/+$/, "").split("/").pop() ?? "";
  let name: string;
  try {
    name = decodeURIComponent(last) || u.host;
  } catch {
    name = last || u.host;
  }
  const base = u.href.endsWith("/") ? u.href : u.href + "/";
  const at = (file: string) => new URL(file, base).href;
  return {
    name,
    where: base,
    at,
    readText: (file, optional) => fetchUrlText(at(file), opts, optional, `load model: read ${file}`),
    async openWeights() {
      const index = await fetchUrlText(at(INDEX_FILE), opts, true, `load model: read ${INDEX_FILE}`);
      return index === undefined
        ? await openSafetensors(at("model.safetensors"), opts)
        : await openShardedSafetensors(at(INDEX_FILE), opts);
    },
  };
}

/**
 * A folder's tokenizer, in this order: `tokenizer.json` (with `tokenizer_config.json` when present), else
 * `tokenizer_gguf.json` (the GGUF vocabulary a compressed GGUF model keeps).
 */
async function folderTokenizer(f: ModelFolder, spec: LlamaSpec): Promise<Tokenizer> {
  const text = await f.readText("tokenizer.json", true);
  if (text !== undefined) {
    const json = parseJsonObject(text, f.at("tokenizer.json"), "load tokenizer: tokenizer.json");
    const cfgText = await f.readText("tokenizer_config.json", true);
    const cfg = cfgText === undefined
      ? {}
      : parseJsonObject(cfgText, f.at("tokenizer_config.json"), "load tokenizer: tokenizer_config.json");
    try {
      return hfTokenizerFromJson(
        json,
        cfg,
        { bosId: spec.bosTokenId, eosId: spec.eosTokenId },
        f.at("tokenizer.json"),
      );
    } catch (e) {
      if (e instanceof FormatError) throw e;
      throw new FormatError(f.at("tokenizer.json"), `load tokenizer: ${(e as Error).message}`);
    }
  }
  const gg = await f.readText("tokenizer_gguf.json", true);
  if (gg === undefined) {
    throw new FormatError(
      f.where,
      "load model: neither tokenizer.json nor tokenizer_gguf.json in this folder",
    );
  }
  const at = f.at("tokenizer_gguf.json");
  try {
    return tokenizerFromGgufJson(parseJsonObject(gg, at, "load tokenizer: tokenizer_gguf.json"), at);
  } catch (e) {
    if (e instanceof FormatError) throw e;
    throw new FormatError(at, `load tokenizer: ${(e as Error).message}`);
  }
}

async function loadFolder(f: ModelFolder): Promise<LoadedModel> {
  const cfgPath = f.at("config.json");
  const config = parseJsonObject(
    (await f.readText("config.json", false))!,
    cfgPath,
    "load model: config.json",
  );
  const spec = specFromHfConfig(config, cfgPath);
  const tokenizer = await folderTokenizer(f, spec);
  const reader = await f.openWeights();
  return { spec, reader, tokenizer, config, name: f.name, close: () => reader.close() };
}

/**
 * A model given as files rather than a path or URL: one GGUF file or one tar of a model folder as a `Blob`/
 * `File`; a folder's `File`s (a `FileList` or an array; picked folders carry `webkitRelativePath`); or a
 * {@link FileSet}.
 */
export type ModelFiles = Blob | ArrayLike<File> | FileSet;

/** What {@link ModelFiles} hold: one GGUF file, or a folder's files (a picked folder, or a tar's members). */
export type ResolvedModelFiles = { gguf: ByteSource; name: string } | { folder: FileSet };

/** Refuse a single file that is neither GGUF nor a tar, naming it and saying what it seems to be. */
async function sniffOne(src: ByteSource): Promise<ResolvedModelFiles> {
  const head = await src.read(0, Math.min(src.size, 512));
  const text = new TextDecoder().decode(head.subarray(0, 4));
  if (text === "GGUF") return { gguf: src, name: src.name.split("/").pop()!.replace(/\.gguf$/i, "") };
  if (isTarHeader(head)) return { folder: await fileSetFromTar(src) };
  // safetensors: an 8-byte little-endian header length, then the JSON header
  const looksSafetensors = head.length > 9 && head[8] === 0x7b && head[6] === 0 && head[7] === 0;
  throw new FormatError(
    src.name,
    looksSafetensors
      ? "load model: a safetensors file alone has no config.json or tokenizer; give the whole model folder's " +
        "files (config.json, *.safetensors, tokenizer.json)"
      : "load model: not a model file (neither GGUF, a model folder's files, nor a tar of one)",
  );
}

/**
 * Tell what {@link ModelFiles} hold, reading at most one header: a lone file (no folder in its
 * `webkitRelativePath`) is sniffed — GGUF, a tar of a folder, or refused with a message naming it; several
 * files are a folder (whose one `.gguf` is loaded when it has no config.json). Throws a FormatError naming
 * the file, or an OptionError for what is not a File/Blob.
 */
export async function resolveModelFiles(input: ModelFiles): Promise<ResolvedModelFiles> {
  if (isFileSet(input)) return gguFolder(input);
  if (typeof Blob !== "undefined" && input instanceof Blob) return await sniffOne(openBlob(input));
  if (typeof input !== "object" || input === null || typeof (input as ArrayLike<File>).length !== "number") {
    throw new OptionError(
      `load model: cannot read a model from ${
        Object.prototype.toString.call(input)
      } (give a path, URL, File, Blob or a folder's Files)`,
    );
  }
  const files = Array.from(input as ArrayLike<File>);
  const lone = files.length === 1 &&
    !(files[0] as { webkitRelativePath?: string }).webkitRelativePath?.includes("/");
  if (lone && files[0] instanceof Blob) return await sniffOne(openBlob(files[0]));
  return gguFolder(fileSetFromFiles(files));
}

/** A folder with no config.json and a single `.gguf` file is that GGUF file. */
function gguFolder(set: FileSet): ResolvedModelFiles {
  const top = set.list().filter((n) => !n.includes("/"));
  const ggufs = top.filter((n) => /\.gguf$/i.test(n));
  if (!top.includes("config.json") && ggufs.length === 1) {
    return { gguf: set.open(ggufs[0])!, name: ggufs[0].replace(/\.gguf$/i, "") };
  }
  return { folder: set };
}

/** Load resolved files (unchecked, like {@link loadUnchecked}). */
async function loadFiles(r: ResolvedModelFiles): Promise<LoadedModel> {
  if ("gguf" in r) return await loadGgufModel(r.gguf, r.gguf.name, r.name);
  const set = r.folder;
  return await loadFolder({
    name: set.name,
    where: set.where,
    at: set.at,
    readText: (file, optional) => readSetText(set, file, `load model: read ${file}`, optional),
    openWeights: () => openSetWeights(set),
  });
}

async function loadUnchecked(path: string | URL, opts: OpenUrlOptions): Promise<LoadedModel> {
  if (path instanceof URL || /^[a-z][a-z0-9+.-]*:\/\//i.test(path)) {
    let u: URL;
    try {
      u = new URL(path);
    } catch {
      throw new FormatError(String(path), "load model: not a valid URL");
    }
    if (u.protocol === "file:") return await loadUnchecked((await import("node:url")).fileURLToPath(u), opts);
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new FormatError(
        u.href,
        `load model: unsupported URL scheme ${u.protocol} (use http, https, file)`,
      );
    }
    const name = urlFolder(u, opts).name;
    if (/\.gguf$/i.test(u.pathname)) return await loadGgufModel(await openUrl(u, opts), u.href, name);
    return await loadFolder(urlFolder(u, opts));
  }
  const { stat } = await import("node:fs/promises");
  const st = await stat(path).catch((e: Error) => {
    throw new FormatError(path, `load model: no such file or folder (${e.message})`);
  });
  if (/\.gguf$/i.test(path) && !st.isDirectory()) {
    checkRegularFile(path, st, "load model");
    return await loadGgufModel(path, path, path.split(/[\\/]/).pop()!);
  }
  if (!st.isDirectory()) {
    throw new FormatError(
      path,
      "load model: expected a .gguf file or a Hugging Face model folder (config.json + safetensors)",
    );
  }
  return await loadFolder(await localFolder(path, opts));
}
