/**
 * Open a model for evaluation, calibration or generation: a Hugging Face folder (config.json, safetensors,
 * tokenizer.json) or a GGUF file. Only the headers are read here; weights are read block by block later.
 *
 * @module
 */
import { FormatError, OptionError } from "../errors.ts";
import { type GgufFile, openGguf } from "../io/gguf.ts";
import { openModelWeights } from "../io/sharded.ts";
import { checkedReader, type TensorInfo, type TensorReader } from "../io/tensor_reader.ts";
import type { OpenUrlOptions } from "../io/url_source.ts";
import { loadHfTokenizer } from "../tokenize/hf.ts";
import { tokenizerFromGguf, tokenizerFromGgufJson } from "../tokenize/from_gguf.ts";
import type { Tokenizer } from "../tokenize/tokenizer.ts";
import { ggufToHfName, LM_HEAD } from "./names.ts";
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

async function loadGgufModel(path: string): Promise<LoadedModel> {
  const g = await openGguf(path);
  try {
    return modelFromGguf(g, path, path.split(/[\\/]/).pop()!.replace(/\.gguf$/i, ""));
  } catch (e) {
    await g.close();
    throw e;
  }
}

/** A folder's tokenizer: tokenizer.json, else the GGUF vocabulary saved as tokenizer_gguf.json. */
async function loadFolderTokenizer(dir: string, spec: LlamaSpec): Promise<Tokenizer> {
  const { readFile } = await import("node:fs/promises");
  const { join } = await import("node:path");
  const ggufJson = join(dir, "tokenizer_gguf.json");
  let text: string | undefined;
  try {
    text = await readFile(ggufJson, "utf8");
  } catch {
    // no GGUF vocabulary: tokenizer.json it is
  }
  if (text === undefined) {
    return await loadHfTokenizer(dir, { bosId: spec.bosTokenId, eosId: spec.eosTokenId });
  }
  try {
    return tokenizerFromGgufJson(JSON.parse(text), ggufJson);
  } catch (e) {
    if (e instanceof FormatError) throw e;
    throw new FormatError(ggufJson, `load tokenizer: ${(e as Error).message}`);
  }
}

/**
 * Open a model: a `.gguf` file, or a Hugging Face folder with config.json, model.safetensors (or a sharded
 * index) and tokenizer.json (or `tokenizer_gguf.json`, the GGUF vocabulary kept by a compressed GGUF model);
 * either may also be an `http(s)` URL, read with Range requests (see `load_url.ts`; `opts` are for it).
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
export async function loadModel(path: string | URL, opts: OpenUrlOptions = {}): Promise<LoadedModel> {
  const m = await loadUnchecked(path, opts);
  try {
    checkLayerCount(m.reader, m.spec);
  } catch (e) {
    await m.close();
    throw e;
  }
  return { ...m, reader: checkedReader(m.reader) };
}

/**
 * Throw a FormatError when the weights hold blocks the spec does not count (config.json's num_hidden_layers or
 * GGUF block_count smaller than the file's): the extra blocks would be skipped silently, a different model.
 * (Missing blocks fail when read, naming the tensor.)
 */
export function checkLayerCount(reader: TensorReader, spec: LlamaSpec): void {
  let top = -1;
  for (const t of reader.tensors()) {
    const m = /^model\.layers\.(\d+)\./.exec(t.name);
    if (m) top = Math.max(top, Number(m[1]));
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
}

async function loadUnchecked(path: string | URL, opts: OpenUrlOptions): Promise<LoadedModel> {
  if (path instanceof URL || /^https?:\/\//i.test(path)) {
    const { loadModelUrl } = await import("./load_url.ts");
    return await loadModelUrl(path, opts);
  }
  if (/\.gguf$/i.test(path)) return await loadGgufModel(path);
  const { readFile, stat } = await import("node:fs/promises");
  const { join, basename } = await import("node:path");
  const st = await stat(path).catch((e: Error) => {
    throw new FormatError(path, `load model: no such file or folder (${e.message})`);
  });
  if (!st.isDirectory()) {
    throw new FormatError(
      path,
      "load model: expected a .gguf file or a Hugging Face model folder (config.json + safetensors)",
    );
  }
  const cfgPath = join(path, "config.json");
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(await readFile(cfgPath, "utf8"));
  } catch (e) {
    throw new FormatError(cfgPath, `load model: cannot read config.json (${(e as Error).message})`);
  }
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new FormatError(
      cfgPath,
      `load model: config.json must hold a JSON object, got ${
        config === null ? "null" : Array.isArray(config) ? "an array" : typeof config
      }`,
    );
  }
  const spec = specFromHfConfig(config, cfgPath);
  const tokenizer = await loadFolderTokenizer(path, spec);
  const reader = await openModelWeights(path);
  return { spec, reader, tokenizer, config, name: basename(path), close: () => reader.close() };
}
