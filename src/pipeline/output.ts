/**
 * The output side of `compress` and `merge`: which tensors a compressed model holds and in which dtype
 * ({@link planOutput}), each block's tensors as written ({@link writeBlockTensors}: factor pairs, GGUF q/k rows
 * put back into the Hugging Face RoPE layout), config.json ({@link outputConfig}: the input's, or one built
 * from a GGUF spec) and the tokenizer files ({@link writeSideFiles}). Browser-safe: files go to an
 * {@link OutputSink}; the input's side files come from a {@link SideFiles} reader.
 *
 * @example
 * ```ts
 * import { storageDtype, TOKENIZER_FILES } from "./output.ts";
 * console.log(storageDtype("BF16"), storageDtype("Q4_0"), TOKENIZER_FILES.includes("tokenizer.json")); // BF16 F32 true
 * ```
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import type { GgufValue } from "../io/gguf.ts";
import type { WritableDType } from "../io/dtype.ts";
import type { SafetensorsStreamWriter, TensorPlan } from "../io/safetensors_writer.ts";
import type { TensorInfo, TensorReader } from "../io/tensor_reader.ts";
import type { Matrix } from "../linalg/matrix.ts";
import type { Factors } from "../methods/factors.ts";
import { EMBED, FINAL_NORM, type LinearName, linearPrefix, LM_HEAD, SVD_A, SVD_B } from "../model/names.ts";
import { permuteQK } from "../model/rope.ts";
import type { LlamaSpec } from "../model/spec.ts";
import {
  baseModelType,
  compressedConfig,
  denseConfig,
  hasFactors,
  HF_BASE_TYPES,
  modelingFile,
  modelingFileName,
  specConfig,
} from "../model/hf_config.ts";
import { ggufToHfTokenizer } from "../tokenize/gguf_to_hf.ts";
import { type OutputSink, writeWhole } from "./sink.ts";

/** Files of a model folder besides its weights and config.json, copied as they are when present. */
export const TOKENIZER_FILES: readonly string[] = Object.freeze([
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
  "tokenizer.model",
  "tokenizer_gguf.json",
]);

/** The modeling files a compressed folder's config.json can name in its auto_map ({@link writeConfig}). */
export const MODELING_FILES: readonly string[] = Object.freeze(HF_BASE_TYPES.map(modelingFileName));

/** The dtype a copied tensor is stored in: F16 and BF16 stay, everything else (F32, quantized) becomes F32. */
export function storageDtype(dtype: string): WritableDType {
  return dtype === "F16" || dtype === "BF16" ? dtype : "F32";
}

/** Block index of a tensor name (`model.layers.{i}.…`), or -1 outside the blocks. */
export function blockOf(name: string): number {
  const m = /^model\.layers\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : -1;
}

/** The tensors of a compressed model, in file order. */
export interface OutputPlan {
  /** Every tensor written, in order: the non-block tensors, then each block's (factor pairs for ranked linears). */
  plan: TensorPlan[];
  /** Non-block tensors (embedding, final norm, lm_head, …), copied first. */
  outside: string[];
  /** Each block's input tensors, in reader order. */
  blocks: TensorInfo[][];
}

/**
 * Plan the output of a compression: `ranks` maps a linear prefix to its rank (null or absent: copied dense).
 * A GGUF input keeps only the tensors under Hugging Face names. Throws a ShapeError naming the tensor when a
 * non-block tensor disagrees with the spec (they are copied without being loaded as a model, so the output
 * would not load).
 */
export function planOutput(
  reader: TensorReader,
  spec: LlamaSpec,
  ranks: Readonly<Record<string, number | null>>,
  opts: { factorDtype: WritableDType; gguf: boolean },
): OutputPlan {
  const all = reader.tensors().filter((t) => !opts.gguf || /^(model\.|lm_head\.)/.test(t.name));
  checkOutside(reader, spec);
  const outside: TensorInfo[] = [];
  const blocks: TensorInfo[][] = Array.from({ length: spec.numLayers }, () => []);
  for (const t of all) {
    const b = blockOf(t.name);
    if (b < 0) outside.push(t);
    else if (b < spec.numLayers) blocks[b].push(t);
  }
  const plan: TensorPlan[] = outside.map((t) => ({
    name: t.name,
    dtype: storageDtype(t.dtype),
    shape: [...t.shape],
  }));
  for (const block of blocks) {
    for (const t of block) {
      const prefix = t.name.replace(/\.weight$/, "");
      const rank = t.name.endsWith(".weight") ? ranks[prefix] : undefined;
      if (typeof rank === "number") {
        plan.push({ name: `${prefix}.${SVD_A}`, dtype: opts.factorDtype, shape: [t.shape[0], rank] });
        plan.push({ name: `${prefix}.${SVD_B}`, dtype: opts.factorDtype, shape: [rank, t.shape[1]] });
      } else {
        plan.push({ name: t.name, dtype: storageDtype(t.dtype), shape: [...t.shape] });
      }
    }
  }
  return { plan, outside: outside.map((t) => t.name), blocks };
}

/** The embedding, final norm and lm_head have the spec's shapes (the output must load as the spec says). */
function checkOutside(reader: TensorReader, spec: LlamaSpec): void {
  const v = spec.vocabSize, d = spec.hiddenSize;
  const expect: [string, number[], string][] = [
    [EMBED, [v, d], "vocab_size × hidden_size"],
    [FINAL_NORM, [d], "hidden_size"],
  ];
  if (reader.has(LM_HEAD)) expect.push([LM_HEAD, [v, d], "vocab_size × hidden_size"]);
  for (const [name, shape, what] of expect) {
    if (!reader.has(name)) {
      throw new ShapeError(`compress: ${reader.name} has no tensor ${name}; the model cannot be written`);
    }
    const got = reader.info(name).shape;
    if (got.length !== shape.length || got.some((x, i) => x !== shape[i])) {
      throw new ShapeError(
        `compress: ${name} in ${reader.name} is [${got.join(", ")}], but the config says [${
          shape.join(", ")
        }] (${what})`,
      );
    }
  }
  if (!spec.tieWordEmbeddings && !reader.has(LM_HEAD)) {
    throw new ShapeError(
      `compress: ${reader.name} has no ${LM_HEAD} and the config does not tie it to the embedding`,
    );
  }
}

/** Query or key heads of a q/k tensor name whose rows a GGUF llama file stores interleaved, else 0. */
function qkHeads(name: string, spec: LlamaSpec, interleaved: boolean): number {
  if (!interleaved) return 0;
  if (name.includes("self_attn.q_proj")) return spec.numHeads;
  if (name.includes("self_attn.k_proj")) return spec.numKvHeads;
  return 0;
}

/**
 * Write block `i`'s tensors in plan order: `factored` linears as their pairs, the rest read and copied. With
 * `interleaved` (a GGUF llama input), q/k rows go back into the Hugging Face "halves" RoPE layout.
 */
export async function writeBlockTensors(
  writer: Pick<SafetensorsStreamWriter, "write">,
  reader: TensorReader,
  spec: LlamaSpec,
  i: number,
  tensors: readonly TensorInfo[],
  factored: ReadonlyMap<LinearName, Factors>,
  interleaved: boolean,
): Promise<void> {
  const byPrefix = new Map<string, Factors>();
  for (const [name, f] of factored) byPrefix.set(linearPrefix(i, name), f);
  const unpermute = (m: Matrix, name: string): Matrix => {
    const h = qkHeads(name, spec, interleaved);
    return h ? permuteQK(m, h, true) : m;
  };
  for (const t of tensors) {
    const prefix = t.name.replace(/\.(weight|bias)$/, "");
    const f = t.name.endsWith(".weight") ? byPrefix.get(prefix) : undefined;
    if (f) {
      await writer.write(`${prefix}.${SVD_A}`, unpermute(f.a, prefix).data);
      await writer.write(`${prefix}.${SVD_B}`, f.b.data);
      continue;
    }
    const data = await reader.read(t.name);
    const h = qkHeads(t.name, spec, interleaved);
    if (h && (t.name.endsWith(".weight") || t.name.endsWith(".bias"))) {
      const cols = t.shape.length === 2 ? t.shape[1] : 1;
      await writer.write(t.name, permuteQK({ rows: t.shape[0], cols, data }, h, true).data);
    } else {
      await writer.write(t.name, data);
    }
  }
}

/** The output config.json: the input's (a copy), or for a GGUF input one built from the spec ({@link specConfig}). */
export function outputConfig(
  config: Record<string, unknown> | undefined,
  spec: LlamaSpec,
  gguf: boolean,
): Record<string, unknown> {
  if (!gguf && config) return structuredClone(config);
  return { ...specConfig(spec), torch_dtype: "float32" };
}

/**
 * Write config.json so that no tool misreads the folder: with factors (its `svd_llm.ranks` holds a rank and it
 * is not merged) as {@link compressedConfig} plus the modeling file its `auto_map` names; without (dense,
 * merged) as {@link denseConfig}, a plain `…ForCausalLM`.
 */
export async function writeConfig(sink: OutputSink, config: Record<string, unknown>): Promise<void> {
  if (hasFactors(config)) {
    const c = compressedConfig(config);
    const base = baseModelType(String(c.model_type));
    await writeWhole(sink, "config.json", JSON.stringify(c, null, 2) + "\n");
    await writeWhole(sink, modelingFileName(base), modelingFile(base));
  } else {
    await writeWhole(sink, "config.json", JSON.stringify(denseConfig(config), null, 2) + "\n");
  }
}

/** The GGUF tokenizer metadata (`tokenizer.*` keys) as `tokenizer_gguf.json`, so the tokenizer can be rebuilt. */
export function ggufTokenizerJson(kv: ReadonlyMap<string, GgufValue>): string {
  const tok: Record<string, unknown> = {};
  for (const [k, v] of kv) {
    if (k.startsWith("tokenizer.")) tok[k] = ArrayBuffer.isView(v) ? Array.from(v as ArrayLike<number>) : v;
  }
  return JSON.stringify(tok, (_k, v) => (typeof v === "bigint" ? Number(v) : v));
}

/** Reads a side file of the input model by name: its bytes, or undefined when it has none. */
export type SideFiles = (name: string) => Promise<Uint8Array | undefined>;

/** Side files of a local folder (lazily imports `node:fs`). */
export function folderSideFiles(dir: string): SideFiles {
  return async (name) => {
    const { readFile } = await import("node:fs/promises");
    const { join } = await import("node:path");
    try {
      return await readFile(join(dir, name));
    } catch (e) {
      if ((e as { code?: string }).code === "ENOENT") return undefined;
      throw e;
    }
  };
}

/** Side files of a folder served over HTTP(S) (a 404 means absent). */
export function urlSideFiles(base: URL, init?: RequestInit): SideFiles {
  const dir = new URL(base.href.endsWith("/") ? base.href : base.href + "/");
  return async (name) => {
    const url = new URL(name, dir);
    const r = await fetch(url, init);
    if (r.status === 404) {
      await r.body?.cancel();
      return undefined;
    }
    if (!r.ok) throw new Error(`read ${url.href}: HTTP ${r.status}`);
    return new Uint8Array(await r.arrayBuffer());
  };
}

/**
 * The tokenizer of the output: a GGUF input's vocabulary as `tokenizer_gguf.json` (and, for a SentencePiece
 * vocabulary, as `tokenizer.json` + `tokenizer_config.json` that transformers reads), or the folder's files.
 */
export async function writeSideFiles(
  sink: OutputSink,
  from: { gguf: ReadonlyMap<string, GgufValue> } | { files: SideFiles } | undefined,
): Promise<void> {
  if (!from) return;
  if ("gguf" in from) {
    await writeWhole(sink, "tokenizer_gguf.json", ggufTokenizerJson(from.gguf));
    if (from.gguf.get("tokenizer.ggml.model") !== "llama") return; // byte-level BPE: tokenizer_gguf.json only
    const hf = ggufToHfTokenizer(from.gguf);
    await writeWhole(sink, "tokenizer.json", JSON.stringify(hf.tokenizerJson));
    await writeWhole(sink, "tokenizer_config.json", JSON.stringify(hf.tokenizerConfig, null, 2) + "\n");
    return;
  }
  for (const name of TOKENIZER_FILES) {
    const bytes = await from.files(name);
    if (bytes) await writeWhole(sink, name, bytes);
  }
}
