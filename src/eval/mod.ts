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
