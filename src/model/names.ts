/**
 * Canonical tensor names (Hugging Face layout) and the GGUF → Hugging Face name map. Every room speaks the
 * Hugging Face names; the GGUF reader is wrapped to answer to them.
 *
 * A compressed checkpoint stores a linear `<prefix>` as two tensors instead of `<prefix>.weight`:
 * `<prefix>.svd_a` (out×rank) and `<prefix>.svd_b` (rank×in), with y = svd_a·(svd_b·x); a bias stays
 * `<prefix>.bias`.
 *
 * @module
 */

/** The seven linears of a LLaMA block, as suffixes of `model.layers.{i}.`. */
export const LINEAR_NAMES = [
  "self_attn.q_proj",
  "self_attn.k_proj",
  "self_attn.v_proj",
  "self_attn.o_proj",
  "mlp.gate_proj",
  "mlp.up_proj",
  "mlp.down_proj",
] as const;

/** One of {@link LINEAR_NAMES}. */
export type LinearName = typeof LINEAR_NAMES[number];

/** Token embedding (vocab×hidden). */
export const EMBED = "model.embed_tokens.weight";
/** Final RMSNorm weight (hidden). */
export const FINAL_NORM = "model.norm.weight";
/** Output projection (vocab×hidden); absent when tied to the embedding. */
export const LM_HEAD = "lm_head.weight";

/** Suffix of a low-rank factor: `<prefix>.svd_a` is out×rank. */
export const SVD_A = "svd_a";
/** Suffix of a low-rank factor: `<prefix>.svd_b` is rank×in. */
export const SVD_B = "svd_b";

/** Name prefix of block `i`: `model.layers.{i}`. */
export function blockPrefix(i: number): string {
  return `model.layers.${i}`;
}

/** Prefix of linear `name` in block `i`, e.g. `model.layers.3.self_attn.q_proj`. */
export function linearPrefix(i: number, name: LinearName): string {
  return `${blockPrefix(i)}.${name}`;
}

/** Input RMSNorm weight of block `i` (hidden). */
export function inputNormName(i: number): string {
  return `${blockPrefix(i)}.input_layernorm.weight`;
}

/** Post-attention RMSNorm weight of block `i` (hidden). */
export function postNormName(i: number): string {
  return `${blockPrefix(i)}.post_attention_layernorm.weight`;
}

/** GGUF per-block tensor stems → Hugging Face suffixes after `model.layers.{i}.`. */
const GGUF_BLOCK: Readonly<Record<string, string>> = {
  attn_q: "self_attn.q_proj",
  attn_k: "self_attn.k_proj",
  attn_v: "self_attn.v_proj",
  attn_output: "self_attn.o_proj",
  ffn_gate: "mlp.gate_proj",
  ffn_up: "mlp.up_proj",
  ffn_down: "mlp.down_proj",
  attn_norm: "input_layernorm",
  ffn_norm: "post_attention_layernorm",
};

const GGUF_GLOBAL: Readonly<Record<string, string>> = {
  token_embd: "model.embed_tokens",
  output_norm: "model.norm",
  output: "lm_head",
};

/**
 * The Hugging Face name of a GGUF tensor (`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`,
 * `token_embd.weight` → `model.embed_tokens.weight`; suffixes such as `.bias`, `.svd_a` carry over), or
 * undefined for a name outside the LLaMA map (rope frequency tables and the like).
 */
export function ggufToHfName(name: string): string | undefined {
  const m = /^blk\.(\d+)\.([a-z_]+)\.([a-z_]+)$/.exec(name);
  if (m) {
    const stem = GGUF_BLOCK[m[2]];
    return stem === undefined ? undefined : `model.layers.${Number(m[1])}.${stem}.${m[3]}`;
  }
  const g = /^([a-z_]+)\.([a-z_]+)$/.exec(name);
  if (g && Object.hasOwn(GGUF_GLOBAL, g[1])) return `${GGUF_GLOBAL[g[1]]}.${g[2]}`;
  return undefined;
}

/** The GGUF name of a Hugging Face tensor name (inverse of {@link ggufToHfName}), or undefined. */
export function hfToGgufName(name: string): string | undefined {
  const m = /^model\.layers\.(\d+)\.(.+)\.([a-z_]+)$/.exec(name);
  if (m) {
    const stem = Object.keys(GGUF_BLOCK).find((k) => GGUF_BLOCK[k] === m[2]);
    return stem === undefined ? undefined : `blk.${Number(m[1])}.${stem}.${m[3]}`;
  }
  const g = /^(.+)\.([a-z_]+)$/.exec(name);
  const stem = g && Object.keys(GGUF_GLOBAL).find((k) => GGUF_GLOBAL[k] === g[1]);
  return stem ? `${stem}.${g![2]}` : undefined;
}
