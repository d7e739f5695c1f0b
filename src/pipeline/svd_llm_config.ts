/**
 * The `svd_llm` section of a compressed model's config.json: what `compress` did, written by the pipeline and
 * read back by `inspect`, `merge` and the `--overwrite` guard. One type for writer and readers.
 *
 * @example
 * ```ts
 * import { readSvdLlmConfig } from "./svd_llm_config.ts";
 * const config = { model_type: "llama", svd_llm: { version: "0.1.0", method: "svd", ranks: {}, layers: {} } };
 * console.log(readSvdLlmConfig(config)?.method); // "svd"
 * console.log(readSvdLlmConfig({ model_type: "llama" })); // undefined: not compressed by this library
 * ```
 *
 * @module
 */

/** Version recorded in the output's config.json. */
export const PIPELINE_VERSION = "0.1.0";

/** The compression methods. */
export type CompressMethod = "svd" | "asvd" | "svdllm" | "fwsvd" | "soco";

/** One linear's entry in `svd_llm.layers`: what its factorisation measured (absent: not measured). */
export interface RecordedLayer {
  /** Fraction of Σσ² kept (of W, W·S or W·L, by method). */
  energy_kept?: number;
  /** SVD-LLM: predicted relative loss ‖(W − AB)Xᵀ‖/‖WXᵀ‖ on the calibration inputs. */
  relative_loss?: number;
  /** SVD-LLM: shift added to the Gram matrix before its Cholesky factorisation. */
  shift?: number;
  /** SVD-LLM update: shift added to B P Bᵀ. */
  update_shift?: number;
}

/** The `svd_llm` section of config.json. */
export interface SvdLlmConfig {
  /** {@link PIPELINE_VERSION} of the writer. */
  version: string;
  /** Method used. */
  method: CompressMethod;
  /** The ratio as given, with its convention. */
  ratio: { convention: "removed" | "kept"; value: number };
  /** Rank allocation ("learned": SoCo's trained scores chose the ranks). */
  allocation: "uniform" | "sensitivity" | "sweep" | "global" | "learned";
  /** Sequential calibration (each block fed the compressed prefix's outputs). */
  sequential: boolean;
  /** SVD-LLM update of A. */
  update: boolean;
  /** ASVD α. */
  alpha?: number;
  /** Calibration used (absent for svd). */
  calibration?: { samples: number; seqlen: number; tokens: number; seed: number; layout: string };
  /** Rank of every linear prefix (null: left dense). */
  ranks: Record<string, number | null>;
  /** Fractions of parameters removed over the block linears and the whole model. */
  achieved: { linears_removed: number; model_removed: number };
  /** What each factorisation measured, by linear prefix. */
  layers: Record<string, RecordedLayer>;
  /** Display name of the input model. */
  source: string;
  /** ISO date of the run. */
  date: string;
  /** FWSVD: the Fisher pass (which side weights the SVD, batches averaged, windows per batch, mean loss). */
  fisher?: {
    side: "kfac" | "both" | "input" | "output";
    batches: number;
    batch_windows: number;
    mean_loss: number;
  };
  /** SoCo: the basis and the training (steps, learning rate, batch, loss weights, budget and what was kept). */
  soco?: {
    basis: "svd" | "whitened";
    steps: number;
    lr: number;
    batch: number;
    kl_weight: number;
    nll_weight: number;
    recoveries: number;
    budget: number;
    kept: number;
  };
  /** Set by `merge`: the factors were multiplied back into dense weights. */
  merged?: boolean;
}

/**
 * The `svd_llm` section of a parsed config.json, or undefined when there is none (a model not written by this
 * library). A section without the fields every writer sets (version, method, ranks) counts as none.
 */
export function readSvdLlmConfig(config: unknown): SvdLlmConfig | undefined {
  if (typeof config !== "object" || config === null) return undefined;
  const s = (config as { svd_llm?: unknown }).svd_llm;
  if (typeof s !== "object" || s === null || Array.isArray(s)) return undefined;
  const c = s as Partial<SvdLlmConfig>;
  if (typeof c.version !== "string" || typeof c.method !== "string") return undefined;
  if (typeof c.ranks !== "object" || c.ranks === null) return undefined;
  return { layers: {}, ...c } as SvdLlmConfig;
}
