/**
 * The shape of each block linear, from the model spec alone: one place for the widths every room needs
 * (the block loader, the compression pipeline's rank plan, the KV-cache accounting).
 *
 * @example
 * ```ts
 * import { linearShape } from "./linear_shape.ts";
 * import { specFromHfConfig } from "./spec.ts";
 * const spec = specFromHfConfig({
 *   model_type: "llama", hidden_size: 64, intermediate_size: 172, num_hidden_layers: 5,
 *   num_attention_heads: 8, num_key_value_heads: 4, vocab_size: 512,
 * });
 * console.log(linearShape(spec, "self_attn.k_proj")); // [32, 64]: kv heads × head width, by hidden
 * ```
 *
 * @module
 */
import type { LinearName } from "./names.ts";
import type { LlamaSpec } from "./spec.ts";

/** Output × input features of the block linear `name` (its weight is rows×cols, y = W·x). */
export function linearShape(spec: LlamaSpec, name: LinearName): [rows: number, cols: number] {
  const d = spec.hiddenSize, f = spec.intermediateSize;
  const q = spec.numHeads * spec.headDim, kv = spec.numKvHeads * spec.headDim;
  switch (name) {
    case "self_attn.q_proj":
      return [q, d];
    case "self_attn.k_proj":
    case "self_attn.v_proj":
      return [kv, d];
    case "self_attn.o_proj":
      return [d, q];
    case "mlp.gate_proj":
    case "mlp.up_proj":
      return [f, d];
    case "mlp.down_proj":
      return [d, f];
  }
}
