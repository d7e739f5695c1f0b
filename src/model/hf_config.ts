/**
 * A compressed model folder that Hugging Face transformers cannot misread. Its config.json names a model type
 * of our own (`svd_llama`, `svd_mistral`, `svd_qwen2`: {@link svdModelType}) with an `auto_map` to a small
 * modeling file written beside the weights ({@link modelingFile}), in which each low-rank linear is
 * `y = A (B x) + bias` with the rank the config's `svd_llm.ranks` records. So
 * `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` loads the factors as written, and
 * without `trust_remote_code` transformers refuses the unknown model type instead of random-initialising the
 * linears it does not find (what a `LlamaForCausalLM` config over `*.svd_a`/`*.svd_b` tensors did).
 * {@link denseConfig} undoes the transform for outputs that are dense again (`merge`, ONNX export).
 *
 * @example
 * ```ts
 * import { compressedConfig, denseConfig, modelingFileName } from "./hf_config.ts";
 * const base = { model_type: "llama", architectures: ["LlamaForCausalLM"], hidden_size: 8 };
 * const ranks = { "model.layers.0.mlp.up_proj": 3, "model.layers.0.mlp.down_proj": null };
 * const c = compressedConfig({ ...base, svd_llm: { ranks } });
 * console.log(c.model_type, c.architectures, modelingFileName("llama")); // svd_llama [ "SvdLlamaForCausalLM" ] modeling_svd_llama.py
 * console.log(denseConfig(c).model_type); // llama
 * ```
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import type { LlamaSpec } from "./spec.ts";

/** Prefix of our model types: `svd_` + the base model type. */
export const SVD_MODEL_PREFIX = "svd_";

/** Base model types a compressed folder can wrap, with the transformers class-name stem of each. */
const BASES: Readonly<Record<string, string>> = Object.freeze({
  llama: "Llama",
  mistral: "Mistral",
  qwen2: "Qwen2",
});

/** The base model types {@link compressedConfig} accepts. */
export const HF_BASE_TYPES: readonly string[] = Object.freeze(Object.keys(BASES));

/** The model type of a compressed model over `base` (`"llama"` → `"svd_llama"`); an OptionError for another. */
export function svdModelType(base: string): string {
  if (!(base in BASES)) {
    throw new OptionError(
      `export Hugging Face folder: model_type ${JSON.stringify(base)} is not supported (supported: ${
        HF_BASE_TYPES.join(", ")
      })`,
    );
  }
  return SVD_MODEL_PREFIX + base;
}

/** The base model type of `type`: `"svd_llama"` → `"llama"`, anything else unchanged. */
export function baseModelType(type: string): string {
  return type.startsWith(SVD_MODEL_PREFIX) && type.slice(SVD_MODEL_PREFIX.length) in BASES
    ? type.slice(SVD_MODEL_PREFIX.length)
    : type;
}

/** Name of the modeling file written beside a compressed model over `base`: `modeling_svd_llama.py`. */
export function modelingFileName(base: string): string {
  return `modeling_${svdModelType(base)}.py`;
}

/** True when a config's `svd_llm.ranks` holds a factored linear (a number) and it is not marked merged. */
export function hasFactors(config: Record<string, unknown>): boolean {
  const s = config.svd_llm as { ranks?: unknown; merged?: unknown } | undefined;
  if (!s || typeof s !== "object" || s.merged === true) return false;
  const ranks = s.ranks;
  return typeof ranks === "object" && ranks !== null &&
    Object.values(ranks).some((r) => typeof r === "number");
}

/**
 * The config.json of a compressed folder: `model_type` `svd_<base>`, `architectures` `Svd<Base>ForCausalLM`
 * and an `auto_map` to {@link modelingFileName}. Throws an OptionError naming the model type when it is not one
 * of {@link HF_BASE_TYPES}, and one naming the linear when a rank is not a positive integer.
 */
export function compressedConfig(config: Record<string, unknown>): Record<string, unknown> {
  const raw = config.model_type;
  const base = baseModelType(typeof raw === "string" ? raw : String(raw));
  const type = svdModelType(base);
  const ranks = (config.svd_llm as { ranks?: Record<string, unknown> } | undefined)?.ranks ?? {};
  for (const [name, r] of Object.entries(ranks)) {
    if (r !== null && !(typeof r === "number" && Number.isInteger(r) && r > 0)) {
      throw new OptionError(
        `export Hugging Face folder: svd_llm.ranks[${JSON.stringify(name)}] is ${
          JSON.stringify(r)
        }, not a positive integer or null`,
      );
    }
  }
  const cls = `Svd${BASES[base]}`;
  const module = modelingFileName(base).replace(/\.py$/, "");
  return {
    ...structuredClone(config),
    architectures: [`${cls}ForCausalLM`],
    model_type: type,
    auto_map: { AutoConfig: `${module}.${cls}Config`, AutoModelForCausalLM: `${module}.${cls}ForCausalLM` },
  };
}

/** The config.json of a dense model: a compressed config's `svd_<base>` type, architecture and auto_map undone. */
export function denseConfig(config: Record<string, unknown>): Record<string, unknown> {
  const raw = config.model_type;
  if (typeof raw !== "string" || baseModelType(raw) === raw) return structuredClone(config);
  const { auto_map: _drop, ...rest } = structuredClone(config);
  const base = baseModelType(raw);
  return { ...rest, model_type: base, architectures: [`${BASES[base]}ForCausalLM`] };
}

/**
 * The architecture fields of a Hugging Face config.json, from `spec`: the whole config of a folder written
 * from a GGUF file, and what the ONNX export sets over the source's own config. `modelType` defaults to the
 * one the spec implies (qwen2 when attention has biases: the one GGUF architecture besides llama we read);
 * the architecture is its `…ForCausalLM` (Llama's for a type not in {@link HF_BASE_TYPES}). A missing BOS or
 * EOS token is null, not absent: transformers' LlamaConfig would read absent as ids 1 and 2.
 *
 * @example
 * ```ts
 * import { specConfig } from "./hf_config.ts";
 * import { specFromHfConfig } from "./spec.ts";
 * const spec = specFromHfConfig({
 *   model_type: "llama", hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2,
 *   num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 32, bos_token_id: 1, eos_token_id: 2,
 * });
 * const c = specConfig(spec);
 * console.log(c.architectures, c.head_dim, c.vocab_size); // [ "LlamaForCausalLM" ] 4 32
 * ```
 */
export function specConfig(
  spec: LlamaSpec,
  modelType: string = spec.attentionBias ? "qwen2" : "llama",
): Record<string, unknown> {
  return {
    architectures: [`${Object.hasOwn(BASES, modelType) ? BASES[modelType] : BASES.llama}ForCausalLM`],
    model_type: modelType,
    hidden_act: "silu",
    hidden_size: spec.hiddenSize,
    intermediate_size: spec.intermediateSize,
    num_hidden_layers: spec.numLayers,
    num_attention_heads: spec.numHeads,
    num_key_value_heads: spec.numKvHeads,
    head_dim: spec.headDim,
    rms_norm_eps: spec.rmsNormEps,
    rope_theta: spec.ropeTheta,
    max_position_embeddings: spec.maxPositions,
    tie_word_embeddings: spec.tieWordEmbeddings,
    vocab_size: spec.vocabSize,
    bos_token_id: spec.bosTokenId >= 0 ? spec.bosTokenId : null,
    eos_token_id: spec.eosTokenId >= 0 ? spec.eosTokenId : null,
  };
}

/**
 * The Python text of {@link modelingFileName}: a config class and a `…ForCausalLM` subclass of transformers'
 * own `base` classes that swaps each linear `svd_llm.ranks` gives a rank for a low-rank one. Its parameters are
 * named as in model.safetensors (`<prefix>.svd_b`: rank×in, applied first; `<prefix>.svd_a`: out×rank;
 * `<prefix>.bias` on A), so transformers loads the file with no key renaming.
 */
export function modelingFile(base: string): string {
  const type = svdModelType(base);
  const stem = BASES[base], cls = `Svd${stem}`;
  return `# Written by @svd/llm beside a compressed model: ${stem} with low-rank linears.
# Load with AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).
import torch
from torch import nn
from transformers import ${stem}Config, ${stem}ForCausalLM


class SvdLinear(nn.Module):
    """y = A (B x) + bias, B: rank x in (applied first), A: out x rank; names as in model.safetensors."""

    def __init__(self, in_features, out_features, rank, bias, dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.svd_b = nn.Parameter(torch.empty(rank, in_features, dtype=dtype))
        self.svd_a = nn.Parameter(torch.empty(out_features, rank, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype)) if bias else None

    def forward(self, x):
        return nn.functional.linear(nn.functional.linear(x, self.svd_b), self.svd_a, self.bias)


class ${cls}Config(${stem}Config):
    model_type = "${type}"


class ${cls}ForCausalLM(${stem}ForCausalLM):
    config_class = ${cls}Config

    def __init__(self, config):
        super().__init__(config)
        ranks = (getattr(config, "svd_llm", None) or {}).get("ranks", {})
        for name, rank in ranks.items():
            if rank is None:
                continue
            parent, _, child = name.rpartition(".")
            owner = self.get_submodule(parent)
            dense = getattr(owner, child)
            setattr(owner, child, SvdLinear(dense.in_features, dense.out_features, int(rank),
                                            dense.bias is not None, dense.weight.dtype))
`;
}
