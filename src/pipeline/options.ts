/**
 * The public options and report of `compress`: what a caller passes (method, ratio, calibration, the options
 * of each method and allocation, output and cancellation) and what it gets back. Types and limits only; the
 * checks are in `validate.ts`, the run in `compress.ts`.
 *
 * @example
 * ```ts
 * import { BATCH_TOKENS, type CompressOptions } from "./options.ts";
 * const opts: CompressOptions = {
 *   method: "svdllm",
 *   ratio: { removed: 0.2 },
 *   calibration: { text: "Once upon a time there was a little dog.", samples: 4, seqlen: 8 },
 *   batchSize: Math.floor(BATCH_TOKENS / 8),
 * };
 * console.log(opts.method); // "svdllm"
 * ```
 *
 * @module
 */
import type { WritableDType } from "../io/dtype.ts";
import type { TensorReader } from "../io/tensor_reader.ts";
import type { OpenUrlOptions } from "../io/url_source.ts";
import type { FwsvdWeighting } from "../methods/fwsvd.ts";
import type { KvCacheReport } from "../methods/kvcache.ts";
import type { ParamSummary, Ratio } from "../methods/ratio.ts";
import type { LinearName } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import type { Tokenizer } from "../tokenize/tokenizer.ts";
import type { LayerReport } from "./block_step.ts";
import type { CompressPhases } from "./phases.ts";
import type { AllocationMode } from "./sensitivity.ts";
import type { OutputSink } from "./sink.ts";
import type { SocoPassProgress, SocoPassResult, SocoRunOptions } from "./soco_pass.ts";
import type { CompressMethod } from "./svd_llm_config.ts";

/**
 * Tokens per forward batch by default: a batch's temporaries (projections, MLP activations, attention
 * scores) scale with it, and 1024 rows keep the matrix products efficient.
 */
export const BATCH_TOKENS = 1024;

/** Most calibration windows accepted: beyond this a typo (`--samples 1e8`), not a calibration set. */
export const MAX_SAMPLES = 1 << 16;

/** Most bytes the calibration streams may take (float32 tokens × hidden, one or two streams): 8 GiB. */
export const MAX_STREAM_BYTES = 8 * 2 ** 30;

/** Where calibration tokens come from and how they are cut. */
export interface CalibrationOptions {
  /** Calibration text, tokenized with the model's tokenizer (one BOS at the start). */
  text?: string;
  /** Or token ids directly. */
  ids?: ArrayLike<number>;
  /** Windows (default 32). */
  samples?: number;
  /** Tokens per window (default min(256, the model's context)). */
  seqlen?: number;
  /** Seed of the random window starts (default 0). */
  seed?: number;
  /** "random" (default, as the references) or "consecutive"; see `calibrationWindows`. */
  layout?: "random" | "consecutive";
}

/** A progress event: what is being done, and how far along. */
export interface CompressProgress {
  /** "calibrate" (embedding windows), "fisher" (FWSVD's gradient pass), "soco" (SoCo's bases, then its training steps), "sensitivity" (ASVD sweep), "compress" (a layer), "write", "done". */
  stage: "calibrate" | "fisher" | "soco" | "sensitivity" | "compress" | "write" | "done";
  /** Block index, when the event concerns one. */
  block?: number;
  /** Layer name (tensor prefix), when the event concerns one. */
  layer?: string;
  /** Units done in this stage. */
  done: number;
  /** Units in this stage. */
  total: number;
  /** Estimated seconds left in this stage. */
  etaSeconds?: number;
}

/** Options of `compress`. */
export interface CompressOptions {
  /** The method. */
  method: CompressMethod;
  /** Target, in one explicit convention: `{ removed: 0.2 }` (SVD-LLM) or `{ kept: 0.8 }` (ASVD). */
  ratio: Ratio;
  /** Calibration data (required by asvd and svdllm, ignored by svd). */
  calibration?: CalibrationOptions;
  /**
   * Feed each block the compressed prefix's outputs (default true); false: the original activations.
   * Ignored with `update`, whose whitening always uses the original activations and whose refit the
   * compressed prefix's (the reference's local update).
   */
  sequential?: boolean;
  /** SVD-LLM closed-form update of A (default false). */
  update?: boolean;
  /** ASVD: α (default 0.5). */
  alpha?: number;
  /**
   * Ranks per linear: "uniform" (default: every linear at the ratio); "global" (any method: its exact
   * per-component truncation losses under one budget); ASVD's "sensitivity" (fast: each component's
   * calibration-loss increase estimated from a gradient pass) and "sweep" (the paper's full sensitivity
   * sweep: minutes). See `allocateLinears`.
   */
  allocation?: AllocationMode;
  /**
   * The full sweep's JSON cache file (resumable), ratio grid and windows used; `ratio`: "sensitivity"'s
   * calibrated variant; `proxy`: "sensitivity"'s estimate, "fisher" (default) or "output" (see
   * `allocateLinears`).
   */
  sensitivity?: {
    cacheFile?: string;
    ratios?: readonly number[];
    samples?: number;
    ratio?: number;
    proxy?: "fisher" | "output";
  };
  /** Linears to compress (default all seven). */
  linears?: readonly LinearName[];
  /**
   * ASVD's KV-cache mode: compress only k_proj and v_proj, and read `ratio` as the fraction of the KV cache
   * kept (rank = floor(kvDim·kept)); the report gives the cache bytes per token saved.
   */
  kvCache?: boolean;
  /**
   * FWSVD: how the Fisher information weights each linear (default "kfac": both sides, with the K-FAC factors
   * E[dy dyᵀ] and E[x xᵀ]; "both": both sides, diagonal; "input": per input feature; "output": per output
   * row, the paper's row weighting). With "kfac" and `sequential` (the default), block i's input factor is
   * taken on the compressed blocks before it.
   */
  fisherSide?: FwsvdWeighting;
  /** FWSVD: calibration windows per gradient (default 1: each window's own gradient squared, as the paper). */
  fisherBatch?: number;
  /** SoCo: the basis and the training (steps, learning rate, batch, loss weights, checkpoint / resume). */
  soco?: SocoRunOptions;
  /** SoCo: every event of its pass (bases per block, every training step with its loss and budget). */
  onSoco?: (event: SocoPassProgress) => void;
  /** SVD-LLM Cholesky damping (default "auto"). */
  damping?: "none" | "auto" | number;
  /** Windows per forward batch (default: as many as fit in {@link BATCH_TOKENS} tokens, at least 1). */
  batchSize?: number;
  /** Storage type of the factors (default "F32"). */
  dtype?: WritableDType;
  /** Accept ranks that save nothing. */
  force?: boolean;
  /** Replace an existing output folder (only one written by this library; see `openOutputDir`). */
  overwrite?: boolean;
  /** How an http(s) URL input is fetched (custom fetch, headers sent to its own origin, retries, timeout). */
  url?: OpenUrlOptions;
  /** Progress events (no printing happens here). */
  onProgress?: (event: CompressProgress) => void;
  /** Cancels the run (checked between linears and between batches); nothing complete-looking is left. */
  signal?: AbortSignal;
}

/** What `compress` did. */
export interface CompressReport {
  /** Output: the folder path, or the sink's name. */
  output: string;
  /** Method. */
  method: CompressMethod;
  /** The ratio as given. */
  ratio: Ratio;
  /** Human label of the ratio. */
  ratioLabel: string;
  /** Per-layer results. */
  layers: LayerReport[];
  /** Parameter counts over the block linears and the whole model. */
  params: ParamSummary;
  /** Calibration used (absent for svd). */
  calibration?: { samples: number; seqlen: number; tokens: number; seed: number; layout: string };
  /** Sequential calibration. */
  sequential: boolean;
  /** SVD-LLM update. */
  update: boolean;
  /** Rank allocation used ("learned": SoCo's, chosen by its training). */
  allocation: AllocationMode | "learned";
  /** Allocation facts when not uniform (densePpl: NaN when no sweep ran; achievedKept: over the linears). */
  sensitivity?: { seconds: number; fromCache: boolean; densePpl: number; achievedKept: number };
  /** SoCo: what its pass learned (basis, budget, loss history, spectra and scores, seconds). */
  soco?: Omit<SocoPassResult, "factors">;
  /** FWSVD: the Fisher pass (batches averaged, mean calibration loss in nats per token). */
  fisher?: { side: FwsvdWeighting; batches: number; meanLoss: number };
  /** KV-cache mode: cache bytes per token, full versus latent (fp16 values). */
  kvCache?: KvCacheReport;
  /** Wall time, seconds. */
  seconds: number;
  /** Where the wall time went, seconds (the rest: set-up, tokenising, the output's config and tokenizer). */
  phases: CompressPhases;
  /** CPU time of the run, seconds (all threads), where the runtime reports it. */
  cpuSeconds?: number;
  /** Where the CPU time went, seconds per phase (all threads), where the runtime reports it. */
  cpuPhases?: CompressPhases;
  /** Peak resident memory seen during the run, bytes (0 where the runtime does not tell). */
  peakRssBytes: number;
}

/** A model already opened (as `loadModel` returns), for `compressModel`. */
export interface ModelInput {
  /** Architecture. */
  spec: LlamaSpec;
  /** Weights under Hugging Face names. */
  reader: TensorReader;
  /** Tokenizer (needed for `calibration.text`). */
  tokenizer?: Tokenizer;
  /** config.json (or GGUF scalar metadata). */
  config?: Record<string, unknown>;
  /** Display name. */
  name: string;
}

/** Where `compress` writes: a folder path, or a sink (memory, streams; see `sink.ts`). */
export type CompressOutput = string | OutputSink;
