// Shared helpers of the pipeline tests: the bundled model, its evaluation text, reloading a compressed folder,
// and a tiny synthetic Hugging Face model folder written on the fly.
import { mkdir, mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { createSafetensorsWriter } from "../../src/io/safetensors_writer.ts";
import { openModelWeights } from "../../src/io/sharded.ts";
import { createRng } from "../../src/linalg/random.ts";
import { specFromHfConfig } from "../../src/model/spec.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import type { TensorReader } from "../../src/io/tensor_reader.ts";
import type { LlamaSpec } from "../../src/model/spec.ts";

export const ROOT = new URL("../../", import.meta.url).pathname;
export const STORIES = join(ROOT, "models/stories260K/stories260K.gguf");
/** The shared material: beside the repository (a clone), or beside its worktrees' folder (a git worktree). */
export const SHARED = [join(ROOT, "../shared"), join(ROOT, "../../shared")].find((d) => existsSync(d)) ??
  join(ROOT, "../shared");
export const HAS_SHARED = existsSync(join(SHARED, "models/tinylm-brown/model.safetensors"));

/** TinyStories validation text: the shared copy when present, else the one bundled in the repo. */
export async function storiesText(): Promise<string> {
  const shared = join(SHARED, "data/tinystories-valid.part1.txt");
  return await readFile(existsSync(shared) ? shared : join(ROOT, "data/tinystories-valid.part1.txt"), "utf8");
}

export async function tempDir(prefix = "svdllm-test-"): Promise<string> {
  return await mkdtemp(join(tmpdir(), prefix));
}

/** Names in `dir` (to check that no temporary folder was left behind). */
export async function listing(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

/** The parts of a compressed folder's config.json the tests read. */
export interface FolderConfig {
  [key: string]: unknown;
  svd_llm: { method: string; ratio: unknown; ranks: Record<string, number | null>; allocation: string };
}

/** Open a compressed (or any) Hugging Face folder without its tokenizer. */
export async function openFolder(
  dir: string,
): Promise<{ spec: LlamaSpec; reader: TensorReader; config: FolderConfig }> {
  const config = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
  return { spec: specFromHfConfig(config), reader: await openModelWeights(dir), config };
}

/** Perplexity of a folder on ids (papers' protocol). */
export async function folderPpl(dir: string, ids: Int32Array, window: number): Promise<number> {
  const m = await openFolder(dir);
  try {
    return (await perplexity(m, ids, { window })).ppl;
  } finally {
    await m.reader.close();
  }
}

/** A model folder opened as `compressModel`'s input (spec, weights reader, name). */
export async function openModelInput(dir: string, name = "synthetic") {
  const { spec, reader } = await openFolder(dir);
  return { spec, reader, name };
}

/** {@link syntheticModel} written into a new folder `parent/name`; returns its path. */
export async function syntheticFolder(
  parent: string,
  name: string,
  poison?: { tensor: string; index: number },
): Promise<string> {
  const dir = join(parent, name);
  await mkdir(dir);
  await syntheticModel(dir, poison);
  return dir;
}

/**
 * A random 2-block LLaMA (hidden 16, 4 heads / 2 kv heads, mlp 24, vocab 32) as a Hugging Face folder
 * (config.json + model.safetensors, no tokenizer). `poison` sets one value of a tensor to NaN.
 */
export async function syntheticModel(dir: string, poison?: { tensor: string; index: number }): Promise<void> {
  const config = {
    model_type: "llama",
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 32,
    rms_norm_eps: 1e-5,
    max_position_embeddings: 64,
    bos_token_id: 1,
    eos_token_id: 2,
  };
  await writeFile(join(dir, "config.json"), JSON.stringify(config));
  const d = 16, f = 24, kv = 8;
  const shapes: [string, number[]][] = [["model.embed_tokens.weight", [32, d]]];
  for (let i = 0; i < 2; i++) {
    const p = `model.layers.${i}`;
    shapes.push(
      [`${p}.input_layernorm.weight`, [d]],
      [`${p}.self_attn.q_proj.weight`, [d, d]],
      [`${p}.self_attn.k_proj.weight`, [kv, d]],
      [`${p}.self_attn.v_proj.weight`, [kv, d]],
      [`${p}.self_attn.o_proj.weight`, [d, d]],
      [`${p}.post_attention_layernorm.weight`, [d]],
      [`${p}.mlp.gate_proj.weight`, [f, d]],
      [`${p}.mlp.up_proj.weight`, [f, d]],
      [`${p}.mlp.down_proj.weight`, [d, f]],
    );
  }
  shapes.push(["model.norm.weight", [d]], ["lm_head.weight", [32, d]]);
  const w = await createSafetensorsWriter(
    join(dir, "model.safetensors"),
    shapes.map(([name, shape]) => ({ name, dtype: "F32" as const, shape })),
  );
  const rng = createRng(42);
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = name.includes("norm")
      ? new Float32Array(n).fill(1)
      : new Float32Array(n).map(() => rng.normal() * 0.3);
    if (poison?.tensor === name) data[poison.index] = NaN;
    await w.write(name, data);
  }
  await w.close();
}
