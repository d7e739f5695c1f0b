/**
 * The evaluation room's public API: perplexity in the papers' protocol, per-window NLL for other protocols,
 * KL divergence to a reference model, greedy generation.
 *
 * @module
 */
export {
  defaultBatchTokens,
  perplexity,
  type PerplexityOptions,
  type PerplexityResult,
  windowNll,
  type WindowNllOptions,
} from "./perplexity.ts";
export { klDivergence, type KlOptions, type KlResult } from "./kl.ts";
export { generate, type GenerateOptions, nextTokenLogits } from "./generate.ts";
// Types the exported functions name, re-exported so this entry point documents them (deno doc --lint).
export type { ModelWeights, ProgressEvent } from "../model/llama.ts";
export type { LlamaSpec } from "../model/spec.ts";
export type { RopeScaling } from "../model/rope.ts";
export type { DType, TensorInfo, TensorReader } from "../io/tensor_reader.ts";
