/**
 * `compress()`: read a model block by block, observe each block's linear inputs on calibration data,
 * factor its seven linears with the chosen method, run the compressed block to get the next block's inputs,
 * stream the block's tensors to disk, drop it. Only one block's weights, its observers and the calibration
 * hidden states are in memory at a time (the ASVD sensitivity sweep, when asked for, holds the model).
 *
 * Calibration streams. `sequential: true` (default) feeds block i the outputs of the already-compressed blocks
 * 0…i−1 (GPTQ style), so later blocks are fitted to the errors of earlier ones. `sequential: false` uses the
 * original model's activations throughout (what the ASVD reference does). SVD-LLM's `update: true` is the
 * reference's local update: the whitening is built from the original activations X, then A is refitted by
 * least squares on the compressed prefix's activations X' against the original layer applied to them, W·X'
 * (refitting on the whitening's own inputs would change nothing, see methods.md). Measured on stories260K,
 * plain sequential whitening beats it: whitening on X' already optimises A and B jointly for X', which the
 * update can only approach with B fixed. (Fitting A to the original model's outputs W·X instead was tried and
 * is far worse: regression on perturbed inputs shrinks A, and the shrinkage compounds over blocks.) Against
 * the paper's baseline, whitening on the original activations, the update does help (stories260K at 20 / 40 /
 * 60 % removed: ppl 42.3 → 40.8, 120.3 → 94.4, 305.5 → 197.6). Both paths reproduce the official code
 * exactly (tools/svdllm_reference_check.py; tinylm-brown at 60 %: 252.10 whitening, 251.44 with the update).
 *
 * Output: a folder with `model.safetensors` (`<prefix>.svd_a`/`<prefix>.svd_b` pairs instead of
 * `<prefix>.weight`, every other tensor unchanged), `config.json` (the original plus an `svd_llm` section)
 * and the tokenizer files, written under a temporary name and renamed when complete. A GGUF input is written
 * as a Hugging Face folder: q/k rows are put back into the Hugging Face RoPE layout and its SentencePiece
 * vocabulary is saved as `tokenizer_gguf.json`.
 *
 * @module
 */
import { NumericError, OptionError } from "../errors.ts";
import { AbsMeanObserver } from "../calib/abs_mean.ts";
import { GramObserver } from "../calib/gram.ts";
import { calibrationWindows } from "../calib/windows.ts";
import { createSafetensorsWriter, type TensorPlan } from "../io/safetensors_writer.ts";
import type { WritableDType } from "../io/dtype.ts";
import type { Matrix } from "../linalg/matrix.ts";
import type { CholeskyResult } from "../linalg/cholesky.ts";
import type { ResidentCholesky } from "../linalg/cholesky_resident.ts";
import {
  BLOCK_FIELD,
  BlockScratch,
  type Linear,
  type LinearObserver,
  type LlamaBlock,
  loadBlock,
} from "../model/llama.ts";
import { checkLayerCount, loadModel } from "../model/load.ts";
import { EMBED, LINEAR_NAMES, type LinearName, linearPrefix, SVD_A, SVD_B } from "../model/names.ts";
import { permuteQK } from "../model/rope.ts";
import type { LlamaSpec } from "../model/spec.ts";
import { checkedReader, type TensorReader } from "../io/tensor_reader.ts";
import type { Tokenizer } from "../tokenize/tokenizer.ts";
import { compressAsvd } from "../methods/asvd.ts";
import type { LayerShape } from "../methods/asvd_sensitivity.ts";
import type { Factors, MethodReport } from "../methods/factors.ts";
import {
  describeRatio,
  keptFraction,
  type LayerParams,
  layerParams,
  type ParamSummary,
  rankFor,
  type Ratio,
  summarizeParams,
} from "../methods/ratio.ts";
import { compressSvd } from "../methods/svd.ts";
import { KV_LINEARS, type KvCacheReport, kvCacheSavings, kvRank } from "../methods/kvcache.ts";
import { compressSvdLlm, crossFromLayer, type SvdLlmStats, updateA } from "../methods/svdllm.ts";
import { embedWindows, type HiddenStates, runBlock } from "./hidden.ts";
import { openOutputDir } from "./output_dir.ts";
import { allocateLinears, type AllocationMode } from "./sensitivity.ts";
import { createPeakMemory, findGarbageCollector, findMemoryTrimmer } from "./memory.ts";

/** Version recorded in the output's config.json. */
export const PIPELINE_VERSION = "0.1.0";

/**
 * Tokens per forward batch by default: a batch's temporaries (projections, MLP activations, attention
 * scores) scale with it, and 1024 rows keep the matrix products efficient.
 */
export const BATCH_TOKENS = 1024;

/**
 * Heap pages are handed back after factoring a linear of at least this many values (4 MiB in float32): the
 * temporaries of smaller ones are not worth the page faults of reusing trimmed memory.
 */
const TRIM_MIN_VALUES = 1 << 20;

/** Float32 bytes of a block's linears below which a compression never trims (see `findMemoryTrimmer`). */
const TRIM_MIN_BLOCK_BYTES = 8 << 20;

/** The compression methods. */
export type CompressMethod = "svd" | "asvd" | "svdllm";

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
  /** "calibrate" (embedding windows), "sensitivity" (ASVD sweep), "compress" (a layer), "write", "done". */
  stage: "calibrate" | "sensitivity" | "compress" | "write" | "done";
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

/** Options of {@link compress}. */
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
   * per-component truncation losses under one budget) — for ASVD also called "sensitivity", its fast
   * allocation; ASVD's "sweep" (the paper's full sensitivity sweep: minutes). See `allocateLinears`.
   */
  allocation?: AllocationMode;
  /**
   * The full sweep's JSON cache file (resumable), ratio grid and windows used; `ratio`: "sensitivity"'s
   * calibrated variant (see `allocateLinears`).
   */
  sensitivity?: { cacheFile?: string; ratios?: readonly number[]; samples?: number; ratio?: number };
  /** Linears to compress (default all seven). */
  linears?: readonly LinearName[];
  /**
   * ASVD's KV-cache mode: compress only k_proj and v_proj, and read `ratio` as the fraction of the KV cache
   * kept (rank = floor(kvDim·kept)); the report gives the cache bytes per token saved.
   */
  kvCache?: boolean;
  /** SVD-LLM Cholesky damping (default "auto"). */
  damping?: "none" | "auto" | number;
  /** Windows per forward batch (default: as many as fit in {@link BATCH_TOKENS} tokens, at least 1). */
  batchSize?: number;
  /** Storage type of the factors (default "F32"). */
  dtype?: WritableDType;
  /** Accept ranks that save nothing. */
  force?: boolean;
  /** Replace an existing output folder. */
  overwrite?: boolean;
  /** Progress events (no printing happens here). */
  onProgress?: (event: CompressProgress) => void;
}

/** One compressed linear in the report: its parameter accounting and what the method measured. */
export interface LayerReport extends LayerParams {
  /** Fraction of Σσ² kept (of W, W·S or W·L). */
  energyKept?: number;
  /** SVD-LLM: predicted relative layer loss ‖(W − AB)Xᵀ‖/‖WXᵀ‖ on the calibration inputs. */
  relativeLoss?: number;
  /** SVD-LLM: Cholesky shift added to the Gram matrix. */
  shift?: number;
  /** SVD-LLM update: shift added to B P Bᵀ. */
  updateShift?: number;
  /** Seconds spent factoring. */
  seconds: number;
}

/** Seconds spent in each phase of a {@link compress} run; the phases do not overlap. */
export interface CompressPhases {
  /** ASVD's sensitivity sweep (0 when not run or read from its cache). */
  sensitivity: number;
  /** Reading the non-block tensors, copying them to the output and embedding the calibration windows. */
  embed: number;
  /** Reading each block's weights. */
  read: number;
  /** Calibration passes that feed the observers (forward products, |x| statistics or Gram matrices). */
  calibrate: number;
  /** Factorisations (Cholesky, SVD, triangular products; SVD-LLM's update). */
  factor: number;
  /** Passes that only advance the hidden states to the next block (through the compressed or dense block). */
  propagate: number;
  /** Writing each block's tensors and closing the output file. */
  write: number;
}

/** What {@link compress} did. */
export interface CompressReport {
  /** Output folder. */
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
  /** Rank allocation used. */
  allocation: AllocationMode;
  /** Allocation facts when not uniform (densePpl: NaN when no sweep ran; achievedKept: over the linears). */
  sensitivity?: { seconds: number; fromCache: boolean; densePpl: number; achievedKept: number };
  /** KV-cache mode: cache bytes per token, full versus latent (fp16 values). */
  kvCache?: KvCacheReport;
  /** Wall time, seconds. */
  seconds: number;
  /** Where the wall time went, seconds (the rest: set-up, tokenising, the output's config and tokenizer). */
  phases: CompressPhases;
  /** Peak resident memory seen during the run, bytes (0 where the runtime does not tell). */
  peakRssBytes: number;
}

/** A model already opened (as `loadModel` returns), for {@link compressModel}. */
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

/** Linears that read the same input share one observer. */
const INPUT_GROUP: Readonly<Record<LinearName, string>> = {
  "self_attn.q_proj": "attn",
  "self_attn.k_proj": "attn",
  "self_attn.v_proj": "attn",
  "self_attn.o_proj": "o",
  "mlp.gate_proj": "mlp",
  "mlp.up_proj": "mlp",
  "mlp.down_proj": "down",
};

/** Output × input features of each linear. */
export function linearShape(spec: LlamaSpec, name: LinearName): [number, number] {
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

/**
 * Compress the model at `input` (a Hugging Face folder or a GGUF file) into the folder `output`.
 * Throws OptionError for bad options (ratio outside (0, 1), missing or too-short calibration, an existing
 * output without `overwrite`, output onto the input), NumericError for NaN weights or activations; on any
 * failure nothing is left under `output`.
 *
 * @example
 * ```ts ignore
 * import { compress } from "./compress.ts";
 * const report = await compress("models/tinylm-brown", "out/tinylm-svdllm", {
 *   method: "svdllm",
 *   ratio: { removed: 0.2 },
 *   calibration: { text: calibText, samples: 64, seqlen: 256 },
 * });
 * ```
 */
export async function compress(
  input: string,
  output: string,
  opts: CompressOptions,
): Promise<CompressReport> {
  validate(opts);
  if (typeof output !== "string" || output.trim() === "") {
    throw new OptionError(`compress: the output must be a folder path, got ${JSON.stringify(output)}`);
  }
  const model = await loadModel(input);
  try {
    return await compressModel(model, output, opts, { inputPath: input });
  } finally {
    await model.close();
  }
}

function validate(opts: CompressOptions): void {
  if (!opts || !["svd", "asvd", "svdllm"].includes(opts.method)) {
    throw new OptionError(
      `compress: method must be "svd", "asvd" or "svdllm", got ${JSON.stringify(opts?.method)}`,
    );
  }
  keptFraction(opts.ratio);
  if (opts.update && opts.method !== "svdllm") {
    throw new OptionError(`compress: update applies to method "svdllm" only, not "${opts.method}"`);
  }
  if (opts.kvCache && (opts.linears || (opts.allocation ?? "uniform") !== "uniform")) {
    throw new OptionError(`compress: kvCache chooses the linears and ranks itself; drop linears/allocation`);
  }
  if (
    opts.allocation !== undefined && !["uniform", "sensitivity", "sweep", "global"].includes(opts.allocation)
  ) {
    throw new OptionError(
      `compress: allocation must be "uniform", "sensitivity", "sweep" or "global", got ${
        JSON.stringify(opts.allocation)
      }`,
    );
  }
  if (opts.dtype !== undefined && !["F32", "F16", "BF16"].includes(opts.dtype)) {
    throw new OptionError(
      `compress: dtype must be "F32", "F16" or "BF16", got ${JSON.stringify(opts.dtype)}`,
    );
  }
  if ((opts.allocation === "sensitivity" || opts.allocation === "sweep") && opts.method !== "asvd") {
    throw new OptionError(`compress: allocation "${opts.allocation}" applies to method "asvd" only`);
  }
  if (opts.method !== "svd" && !opts.calibration?.text && !opts.calibration?.ids) {
    throw new OptionError(
      `compress: method "${opts.method}" needs calibration data (calibration.text or calibration.ids)`,
    );
  }
  const b = opts.batchSize ?? 8;
  if (!Number.isInteger(b) || b < 1) {
    throw new OptionError(`compress: batchSize must be a positive integer, got ${b}`);
  }
  for (const l of opts.linears ?? []) {
    if (!LINEAR_NAMES.includes(l)) throw new OptionError(`compress: unknown linear ${JSON.stringify(l)}`);
  }
}

/**
 * {@link compress} for a model already opened; `inputPath` (the folder or file it came from) is used to
 * refuse writing onto it and to copy the tokenizer files.
 */
export async function compressModel(
  model: ModelInput,
  output: string,
  opts: CompressOptions,
  { inputPath }: { inputPath?: string } = {},
): Promise<CompressReport> {
  validate(opts);
  const t0 = performance.now();
  const phases: CompressPhases = {
    sensitivity: 0,
    embed: 0,
    read: 0,
    calibrate: 0,
    factor: 0,
    propagate: 0,
    write: 0,
  };
  let tPhase = 0;
  // Phase clock: start() before a phase's work, stop(name) after it adds the elapsed time to that phase.
  const start = () => (tPhase = performance.now());
  const stop = (name: keyof CompressPhases) => (phases[name] += (performance.now() - tPhase) / 1000);
  const peak = createPeakMemory();
  const spec = model.spec;
  // Every weight read is checked for NaN/Inf, so a bad weight is named where it is read (a no-op wrap for a
  // model from loadModel, already checked).
  const reader = checkedReader(model.reader);
  checkLayerCount(reader, spec);
  const method = opts.method;
  const linears = opts.kvCache ? KV_LINEARS : opts.linears ?? LINEAR_NAMES;
  const sequential = opts.sequential ?? true;
  const update = opts.update ?? false;
  const batch = opts.batchSize ??
    Math.max(1, Math.floor(BATCH_TOKENS / (opts.calibration?.seqlen ?? Math.min(256, spec.maxPositions))));
  const allocation = opts.allocation ?? "uniform";
  // Collect garbage at stage boundaries (a factored linear, a written block, a forward pass: see memory.ts),
  // once enough has been dropped since the last collection to be worth one (pacedCollector).
  const gc = pacedCollector(await findGarbageCollector());
  // And hand freed heap pages back to the system where the allocation pattern changes (see memory.ts): after a
  // block's calibration passes, after each large linear's factorisation, after the block is written.
  // Only for blocks of TRIM_MIN_BLOCK_BYTES or more: on smaller ones every pass and factorisation pays the
  // page faults of reusing trimmed memory (tinylm-brown, 2.9 MB blocks: 7–10 % of the run) for no lower peak.
  const blockBytes = LINEAR_NAMES.reduce(
    (t, l) => t + 4 * linearShape(spec, l)[0] * linearShape(spec, l)[1],
    0,
  );
  const trim = blockBytes >= TRIM_MIN_BLOCK_BYTES ? findMemoryTrimmer() : null;
  const linearBytes = (m: number, n: number) => 32 * m * n; // float64 W·L, its QR and SVD, the blocks
  const emit = (e: CompressProgress, large = true) => {
    peak.sample();
    const linear = e.stage === "compress" ? /(?:self_attn|mlp)\.\w+$/.exec(e.layer ?? "")?.[0] : undefined;
    if (linear) gc?.(linearBytes(...linearShape(spec, linear as LinearName)));
    else if (e.stage === "write") {
      gc?.(linears.reduce((t, l) => t + 4 * linearShape(spec, l)[0] * linearShape(spec, l)[1], 0));
    } else gc?.(COLLECT_BYTES); // rare stages: collect now
    if (large) trim?.();
    opts.onProgress?.(e);
  };
  // A GGUF input: its names/metadata need translating into a Hugging Face folder. Its q/k rows are permuted
  // only when stored for interleaved RoPE (llama), not for qwen2's halves.
  const gguf = inputPath !== undefined
    ? /\.gguf$/i.test(inputPath)
    : "general.architecture" in reader.metadata;
  const interleaved = spec.ropeStyle === "interleaved";

  // Refuse a bad destination before any expensive work.
  const out = await openOutputDir(output, {
    overwrite: opts.overwrite,
    inputs: inputPath ? [inputPath] : [],
  });
  try {
    // Calibration windows.
    let windows: Int32Array[] | undefined;
    let calibration: CompressReport["calibration"];
    if (method !== "svd") {
      const c = opts.calibration!;
      const seqlen = c.seqlen ?? Math.min(256, spec.maxPositions);
      const samples = c.samples ?? 32;
      if (seqlen > spec.maxPositions) {
        throw new OptionError(
          `compress: calibration seqlen ${seqlen} exceeds the model's context ${spec.maxPositions}`,
        );
      }
      let ids: ArrayLike<number>;
      if (c.ids) ids = c.ids;
      else {
        if (!model.tokenizer) throw new OptionError(`compress: calibration.text needs the model's tokenizer`);
        ids = model.tokenizer.encode(c.text!, { bos: true });
      }
      windows = calibrationWindows(ids, { samples, seqlen, seed: c.seed ?? 0, layout: c.layout ?? "random" });
      for (const w of windows) {
        for (const id of w) {
          if (!(id >= 0 && id < spec.vocabSize)) {
            throw new OptionError(
              `compress: calibration token id ${id} is outside the vocabulary (${spec.vocabSize})`,
            );
          }
        }
      }
      calibration = { samples, seqlen, tokens: ids.length, seed: c.seed ?? 0, layout: c.layout ?? "random" };
    }

    // Ranks: known from shapes (uniform), or after the ASVD sweep.
    const shapes: LayerShape[] = [];
    for (let i = 0; i < spec.numLayers; i++) {
      for (const name of linears) {
        const [m, n] = linearShape(spec, name);
        shapes.push({ name: linearPrefix(i, name), rows: m, cols: n });
      }
    }
    const ranks: Record<string, number | null> = {};
    let sensitivity: CompressReport["sensitivity"];
    if (allocation !== "uniform") {
      start();
      const res = await allocateLinears({ spec, reader }, windows, {
        allocation,
        method,
        kept: keptFraction(opts.ratio),
        alpha: opts.alpha,
        linears,
        batchSize: batch,
        sensitivity: opts.sensitivity,
        onProgress: (e) => emit({ stage: "sensitivity", ...e }),
      });
      Object.assign(ranks, res.ranks);
      sensitivity = {
        seconds: res.seconds,
        fromCache: res.fromCache,
        densePpl: res.densePpl ?? NaN,
        achievedKept: res.achievedKept,
      };
      stop("sensitivity");
    } else if (opts.kvCache) {
      for (const s of shapes) ranks[s.name] = kvRank(s.rows, keptFraction(opts.ratio));
    } else {
      for (const s of shapes) {
        ranks[s.name] = rankFor(s.rows, s.cols, opts.ratio, { force: opts.force, layer: s.name });
      }
    }

    // Tensor plan: the embedding table, then each block's tensors in reader order with factor pairs.
    const factorDtype = opts.dtype ?? "F32";
    const keepDtype = (d: string): WritableDType => (d === "F16" || d === "BF16" ? d : "F32");
    const all = reader.tensors().filter((t) => !gguf || /^(model\.|lm_head\.)/.test(t.name));
    const blockOf = (name: string): number => {
      const m = /^model\.layers\.(\d+)\./.exec(name);
      return m ? Number(m[1]) : -1;
    };
    const plan: TensorPlan[] = [];
    // Non-block tensors are copied whole before the blocks, one at a time with a collection after each, so
    // that no two of the large vocab×hidden tables (embedding, lm_head) are ever in memory together; the
    // calibration streams are embedded from the embedding table's copy. (After the blocks they would land on
    // a heap already fragmented by the factorisations: measured worse.)
    const copyFirst: string[] = [];
    const addBlockTensors = (i: number) => {
      for (const t of all) {
        if (blockOf(t.name) !== i) continue;
        const prefix = t.name.replace(/\.weight$/, "");
        const rank = t.name.endsWith(".weight") ? ranks[prefix] : undefined;
        if (typeof rank === "number") {
          plan.push({ name: `${prefix}.${SVD_A}`, dtype: factorDtype, shape: [t.shape[0], rank] });
          plan.push({ name: `${prefix}.${SVD_B}`, dtype: factorDtype, shape: [rank, t.shape[1]] });
        } else {
          plan.push({ name: t.name, dtype: keepDtype(t.dtype), shape: [...t.shape] });
        }
      }
    };
    const copyPlan = (names: string[]) => {
      for (const t of all) {
        if (names.includes(t.name)) {
          plan.push({ name: t.name, dtype: keepDtype(t.dtype), shape: [...t.shape] });
        }
      }
    };
    for (const t of all) if (blockOf(t.name) < 0) copyFirst.push(t.name);
    copyPlan(copyFirst);
    for (let i = 0; i < spec.numLayers; i++) addBlockTensors(i);

    const { join } = await import("node:path");
    const writer = await createSafetensorsWriter(join(out.temp, "model.safetensors"), plan, {
      metadata: { format: "pt", svd_llm_method: method },
      inputs: inputPath ? [inputPath] : [],
    });
    try {
      // Calibration streams: two separate buffers, both advanced in place, embedded from the one read of the
      // embedding table that is also its copy (no lm_head, no cached head: they would stay for the whole run).
      const useOrig = windows !== undefined && (!sequential || update);
      const useComp = windows !== undefined && (sequential || update);
      start();
      const [orig, comp] = await copyAndEmbed(writer, reader, spec, copyFirst, windows, useOrig, useComp, gc);
      stop("embed");
      emit({ stage: "calibrate", done: 1, total: 1 });

      const layerReports: LayerReport[] = [];
      // Factoring order: the widest input first (down_proj in a LLaMA block), so that the largest statistics
      // (down_proj's in×in Gram matrix, f² float64) are dropped before the other linears are factored instead
      // of being held through them. The factors do not depend on the order; reports keep the model's order.
      const factorOrder = [...linears].sort((a, b) => linearShape(spec, b)[1] - linearShape(spec, a)[1]);
      const totalLayers = shapes.filter((s) => ranks[s.name] !== null).length;
      let doneLayers = 0;
      const tLayers = performance.now();
      // Each block in a function of its own: once it returns, nothing of the block (weights, factors, observers,
      // the locals of its loops) is reachable, so the collection at its "write" event frees all of it before the
      // next block is loaded. (As locals of this long-running async function, the previous block's factors and
      // the garbage of its last pass stayed resident through the next block's calibration pass: +30 MiB.)
      const compressBlock = async (i: number): Promise<void> => {
        start();
        const block = await loadBlock(reader, spec, i);
        stop("read");
        // Statistics of this block's linear inputs.
        const groups = new Map<string, AbsMeanObserver | GramObserver>();
        const updateGroups = new Map<string, GramObserver>();
        const wanted = new Set(linears.filter((l) => ranks[linearPrefix(i, l)] !== null));
        // The group whose statistics a linear's input feeds, or undefined when already counted (q/k/v and
        // gate/up share one input).
        const groupOf = (linear: LinearName): string | undefined => {
          if (!wanted.has(linear)) return undefined;
          const g = INPUT_GROUP[linear];
          return linear === firstOf(wanted, g) ? g : undefined;
        };
        const add = (
          target: Map<string, AbsMeanObserver | GramObserver>,
          gram: boolean,
          g: string,
          x: Matrix,
        ) => {
          let o = target.get(g);
          if (!o) {
            const name = linearPrefix(i, firstOf(wanted, g)!); // errors name the (first) layer fed
            o = gram ? new GramObserver(name, x.cols) : new AbsMeanObserver(name, x.cols);
            target.set(g, o);
          }
          o.addBatch(x);
        };
        const observer =
          (target: Map<string, AbsMeanObserver | GramObserver>, gram: boolean) =>
          (linear: LinearName, x: Matrix) => {
            const g = groupOf(linear);
            if (g) add(target, gram, g, x);
          };
        let nextOrig: HiddenStates | undefined;
        const statsStream = update ? orig : sequential ? comp : orig;
        start();
        if (statsStream) {
          // On the original stream this pass is also its advance (in place); on the compressed stream its
          // output is not needed (the compressed block advances that one).
          const obs = observer(groups, method === "svdllm");
          // After the last block the original stream is not read again: observe only (no down_proj product).
          const advance = statsStream === orig && i < spec.numLayers - 1;
          runBatches(spec, block, statsStream, batch, obs, advance ? "inplace" : "discard", gc);
          if (statsStream === orig) nextOrig = orig;
          peak.sample();
          trim?.();
        }
        if (update && comp) {
          const obs = observer(updateGroups as Map<string, GramObserver | AbsMeanObserver>, true);
          runBatches(spec, block, comp, batch, obs, "discard", gc);
          peak.sample();
          trim?.();
        }
        if (statsStream || (update && comp)) stop("calibrate");
        // Factor each linear.
        const factored = new Map<LinearName, Factors & { updateShift?: number }>();
        // One Cholesky per shared input (q/k/v, gate/up); each group's statistics are dropped after its last
        // linear, so at most one Gram matrix and its factor are alive while a big linear is factored.
        const choleskyOf = new Map<string, CholeskyResult | ResidentCholesky>();
        const reports = new Map<LinearName, LayerReport>();
        for (const name of factorOrder) {
          const prefix = linearPrefix(i, name);
          const rank = ranks[prefix];
          if (rank === null) continue;
          const lin = block[BLOCK_FIELD[name]] as Linear;
          if (lin.kind !== "dense") {
            throw new OptionError(`compress: ${prefix} is already low-rank in the input`);
          }
          const w = lin.weight;
          start();
          let f: Factors & { updateShift?: number };
          if (method === "svd") f = compressSvd(w, rank);
          else if (method === "asvd") {
            const o = groups.get(INPUT_GROUP[name]) as AbsMeanObserver;
            f = compressAsvd(w, { absMean: o.mean(), absMax: o.max() }, rank, { alpha: opts.alpha });
          } else {
            // The group's last linear owns its statistics: they leave the maps first, so the Gram matrix and
            // its factor can be collected during the factorisation (`release`).
            const last = name === lastOf(factorOrder, wanted, INPUT_GROUP[name]);
            const stats = svdllmStats(groups, choleskyOf, INPUT_GROUP[name], last, opts.damping);
            f = compressSvdLlm(w, stats, rank, {
              damping: opts.damping,
              collect: gc ? () => gc(COLLECT_BYTES) : undefined,
            });
            if (update) {
              const p = (updateGroups.get(INPUT_GROUP[name]) as GramObserver).gram();
              const u = updateA(f.b, { gram: p, cross: crossFromLayer(w, p) });
              f = { ...f, a: u.a, updateShift: u.shift };
            }
          }
          stop("factor");
          factored.set(name, f);
          // Without an original stream the dense weight has no further use: drop it now, so that the block
          // never holds a linear twice (dense and factored) while its later linears are factored.
          if (!orig) {
            (block as unknown as Record<string, Linear>)[BLOCK_FIELD[name]] = {
              kind: "lowrank",
              a: f.a,
              b: f.b,
              bias: lin.bias,
            };
          }
          if (name === lastOf(factorOrder, wanted, INPUT_GROUP[name])) {
            groups.delete(INPUT_GROUP[name]);
            updateGroups.delete(INPUT_GROUP[name]);
            choleskyOf.delete(INPUT_GROUP[name]);
          }
          reports.set(name, reportOf(prefix, f.report, f.updateShift));
          doneLayers++;
          const el = (performance.now() - tLayers) / 1000;
          emit({
            stage: "compress",
            block: i,
            layer: prefix,
            done: doneLayers,
            total: totalLayers,
            etaSeconds: (el / doneLayers) * (totalLayers - doneLayers),
          }, w.rows * w.cols >= TRIM_MIN_VALUES);
        }
        for (const name of linears) if (reports.has(name)) layerReports.push(reports.get(name)!);
        groups.clear();
        updateGroups.clear();
        // The compressed block, and the next block's inputs.
        // (Built inline, never held by a local: the suspended frame of this async loop would keep the previous
        // block's factors alive through the next block's calibration pass.)
        // (The last block's output is never read: no pass. Its factors are finite, checked when formed.)
        start();
        if (comp && i < spec.numLayers - 1) {
          runBatches(spec, lowRankBlock(block, factored), comp, batch, undefined, "inplace", gc);
          assertFiniteStream(comp, i);
        }
        if (orig && !nextOrig) runBatches(spec, block, orig, batch, undefined, "inplace", gc);
        peak.sample();
        stop("propagate");
        // Write this block's tensors in plan order.
        start();
        await writeBlock(writer, reader, spec, i, all, factored, interleaved, blockOf);
        stop("write");
        factored.clear(); // the factors are on disk
      };
      for (let i = 0; i < spec.numLayers; i++) {
        await compressBlock(i);
        emit({ stage: "write", block: i, done: i + 1, total: spec.numLayers });
      }
      start();
      await writer.close();
      stop("write");

      // config.json and tokenizer files.
      const summary = summarizeParams(
        shapes.map((s) => layerParams(s.name, s.rows, s.cols, ranks[s.name])),
        otherParams(reader, shapes, gguf),
      );
      const config = outputConfig(model, spec, gguf);
      config.svd_llm = {
        version: PIPELINE_VERSION,
        method,
        ratio: "removed" in opts.ratio
          ? { convention: "removed", value: opts.ratio.removed }
          : { convention: "kept", value: opts.ratio.kept },
        allocation,
        sequential,
        update,
        alpha: method === "asvd" ? (opts.alpha ?? 0.5) : undefined,
        calibration,
        ranks,
        achieved: { linears_removed: summary.linears.removed, model_removed: summary.model.removed },
        // What each factorisation measured, for `inspect` (absent entries: not measured by the method).
        layers: Object.fromEntries(layerReports.map((l) => [l.name, {
          energy_kept: l.energyKept,
          relative_loss: l.relativeLoss,
          shift: l.shift,
          update_shift: l.updateShift,
        }])),
        source: model.name,
        date: new Date().toISOString(),
      };
      const fs = await import("node:fs/promises");
      await fs.writeFile(join(out.temp, "config.json"), JSON.stringify(config, null, 2) + "\n");
      await copyTokenizer(inputPath, out.temp, gguf);
      await out.commit();
      emit({ stage: "done", done: 1, total: 1 });
      return {
        output,
        method,
        ratio: opts.ratio,
        ratioLabel: describeRatio(opts.ratio),
        layers: layerReports,
        params: summary,
        calibration,
        sequential,
        update,
        allocation,
        sensitivity,
        kvCache: opts.kvCache ? kvCacheSavings(spec, ranks) : undefined,
        seconds: (performance.now() - t0) / 1000,
        phases,
        peakRssBytes: peak.peak(),
      };
    } catch (e) {
      await writer.abort();
      throw e;
    }
  } catch (e) {
    await out.abort();
    throw e;
  } finally {
    peak.stop();
  }
}

/**
 * {@link runBlock} over the stream `h` in place (or for its observer only), `batch` windows at a time, all
 * batches sharing one scratch for their temporaries (norms, projections, attention, MLP activations: tens of
 * MB for 1024 tokens), so a pass leaves one set of them, collected once at its end, instead of a set per
 * batch (collecting after every batch cost a quarter of the run time).
 */
function runBatches(
  spec: LlamaSpec,
  block: LlamaBlock,
  h: HiddenStates,
  batch: number,
  observe: LinearObserver | undefined,
  output: "inplace" | "discard",
  gc: PacedCollector | null,
): void {
  // The scratch lives in passWithScratch's frame only: a local here would still be a root during the
  // collection below, and the pass's ~50 MiB of temporaries (d 1024, 1024 tokens) would stay resident through
  // the factorisations that follow (measured: they were the difference between 346 and 294 MiB).
  gc?.(passWithScratch(spec, block, h, batch, observe, output));
}

/** One {@link runBlock} pass over its own scratch; returns the scratch's bytes, garbage once this returns. */
function passWithScratch(
  spec: LlamaSpec,
  block: LlamaBlock,
  h: HiddenStates,
  batch: number,
  observe: LinearObserver | undefined,
  output: "inplace" | "discard",
): number {
  const scratch = new BlockScratch();
  runBlock(spec, block, h, batch, observe, output, scratch); // "inplace" writes over h
  return scratch.bytes;
}

/** Collect garbage once about this many bytes of dropped arrays have piled up since the last collection. */
const COLLECT_BYTES = 16 << 20;

/** A collection request: `dropped` estimates the bytes that became garbage since the previous request. */
type PacedCollector = (dropped: number) => void;

/**
 * Pace `gc`: a forced collection costs 10–60 ms here whatever the heap (V8 marks the whole heap), so
 * collecting at every stage boundary of a small model (a linear of 1 MB, a batch of 14 MB) spent a quarter
 * of the run in the collector. Collections now wait until {@link COLLECT_BYTES} have been dropped: a large
 * model's linears and passes are each above it, so they are still collected at once (its peak is
 * unchanged), and a small model's resident set stays within that much of what is alive.
 */
function pacedCollector(gc: (() => void) | null): PacedCollector | null {
  if (!gc) return null;
  let pending = 0;
  return (dropped) => {
    pending += dropped;
    if (pending < COLLECT_BYTES) return;
    gc();
    pending = 0;
  };
}

/** `block` with the factored linears replaced by their low-rank pairs. */
function lowRankBlock(block: LlamaBlock, factored: Map<LinearName, Factors>): LlamaBlock {
  const out: LlamaBlock = { ...block };
  for (const [name, f] of factored) {
    const lin = block[BLOCK_FIELD[name]] as Linear;
    (out as unknown as Record<string, Linear>)[BLOCK_FIELD[name]] = {
      kind: "lowrank",
      a: f.a,
      b: f.b,
      bias: lin.bias,
    };
  }
  return out;
}

/**
 * Copy the tensors `names` (the embedding table among them) and embed the calibration windows from that
 * same read. A function of its own so that the vocab×hidden table dies with its frame: a local of the
 * long-running async `compressModel` would be kept alive by its suspended frame for the whole run.
 */
async function copyAndEmbed(
  writer: { write(name: string, data: Float32Array): Promise<void> },
  reader: TensorReader,
  spec: LlamaSpec,
  names: readonly string[],
  windows: readonly Int32Array[] | undefined,
  useOrig: boolean,
  useComp: boolean,
  gc: PacedCollector | null,
): Promise<[HiddenStates | undefined, HiddenStates | undefined]> {
  let streams: [HiddenStates | undefined, HiddenStates | undefined] = [undefined, undefined];
  let embedded = false;
  const embedFrom = (data: Float32Array) => {
    streams = embedStreams(spec, data, windows!, useOrig, useComp);
    embedded = true;
  };
  for (const name of names) {
    await copyTensor(writer, reader, name, name === EMBED && windows ? embedFrom : undefined);
    gc?.(4 * reader.info(name).shape.reduce((a, b) => a * b, 1)); // the tensor died with copyTensor's frame
  }
  if (windows && !embedded) embedFrom(await reader.read(EMBED));
  gc?.(COLLECT_BYTES);
  return streams;
}

/** Copy one tensor, handing its values to `use` first. */
async function copyTensor(
  writer: { write(name: string, data: Float32Array): Promise<void> },
  reader: TensorReader,
  name: string,
  use?: (data: Float32Array) => void,
): Promise<void> {
  const data = await reader.read(name);
  use?.(data);
  await writer.write(name, data);
}

/** Embed the calibration windows once or twice (original / compressed streams) from the table `data`. */
function embedStreams(
  spec: LlamaSpec,
  data: Float32Array,
  windows: readonly Int32Array[],
  orig: boolean,
  comp: boolean,
): [HiddenStates | undefined, HiddenStates | undefined] {
  const table = { rows: spec.vocabSize, cols: spec.hiddenSize, data }; // vocab×hidden
  return [
    orig ? embedWindows(spec, table, windows) : undefined,
    comp ? embedWindows(spec, table, windows) : undefined,
  ];
}

/**
 * SVD-LLM statistics of input group `g`: the group's Cholesky factor (computed once, from its observer's Gram
 * matrix). For the group's `last` linear the observer and the factor leave the maps, and the stats object
 * is their only holder (`release: true`), so `compressSvdLlm` can let them be collected early.
 */
function svdllmStats(
  groups: Map<string, AbsMeanObserver | GramObserver>,
  choleskyOf: Map<string, CholeskyResult | ResidentCholesky>,
  g: string,
  last: boolean,
  damping: CompressOptions["damping"],
): SvdLlmStats {
  let chol = choleskyOf.get(g);
  if (!chol) {
    // The Gram matrix has no use after its factorisation: the factor takes its place (one in×in float64
    // matrix per group instead of two; for down_proj's input, the largest, tens of MB), in wasm memory where
    // the observer accumulated it (no host copy of either: see linalg/cholesky_resident.ts).
    const o = groups.get(g) as GramObserver;
    chol = o.cholesky({ damping: damping ?? "auto" });
  }
  if (last) {
    groups.delete(g);
    choleskyOf.delete(g);
    return { cholesky: chol, release: true };
  }
  choleskyOf.set(g, chol);
  return { cholesky: chol };
}

/** The last linear of `order` (the factoring order) that is wanted and reads the inputs of `group`. */
function lastOf(
  order: readonly LinearName[],
  wanted: Set<LinearName>,
  group: string,
): LinearName | undefined {
  let last: LinearName | undefined;
  for (const l of order) if (wanted.has(l) && INPUT_GROUP[l] === group) last = l;
  return last;
}

function firstOf(wanted: Set<LinearName>, group: string): LinearName | undefined {
  for (const l of LINEAR_NAMES) if (wanted.has(l) && INPUT_GROUP[l] === group) return l;
  return undefined;
}

function assertFiniteStream(h: HiddenStates, block: number): void {
  const d = h.x.data;
  for (let i = 0; i < d.length; i++) {
    if (!Number.isFinite(d[i])) {
      throw new NumericError(
        `compress: the compressed block ${block} produced a non-finite activation at token ${
          Math.floor(i / h.x.cols)
        } (check the input weights and the calibration data)`,
      );
    }
  }
}

function reportOf(name: string, r: MethodReport, updateShift?: number): LayerReport {
  const p = layerParams(name, r.rows, r.cols, r.rank);
  return {
    name,
    rows: r.rows,
    cols: r.cols,
    rank: r.rank,
    before: p.before,
    after: p.after,
    energyKept: r.energyKept,
    relativeLoss: r.relativeLoss,
    shift: r.shift,
    updateShift,
    seconds: r.seconds,
  };
}

/** Count of every value not in a listed linear (embeddings, norms, lm_head, dense linears left out). */
function otherParams(reader: TensorReader, shapes: LayerShape[], gguf: boolean): number {
  const listed = new Set(shapes.map((s) => `${s.name}.weight`));
  let n = 0;
  for (const t of reader.tensors()) {
    if (gguf && !/^(model\.|lm_head\.)/.test(t.name)) continue;
    if (!listed.has(t.name)) n += t.shape.reduce((a, b) => a * b, 1);
  }
  return n;
}

async function writeBlock(
  writer: { write(name: string, data: Float32Array): Promise<void> },
  reader: TensorReader,
  spec: LlamaSpec,
  i: number,
  all: readonly { name: string }[],
  factored: Map<LinearName, Factors>,
  interleaved: boolean,
  blockOf: (name: string) => number,
): Promise<void> {
  const byPrefix = new Map<string, [LinearName, Factors]>();
  for (const [name, f] of factored) byPrefix.set(linearPrefix(i, name), [name, f]);
  // GGUF llama stores q/k rows in the interleaved RoPE layout; the Hugging Face folder wants halves.
  const heads = (name: string): number => {
    if (!interleaved) return 0;
    if (name.includes("self_attn.q_proj")) return spec.numHeads;
    if (name.includes("self_attn.k_proj")) return spec.numKvHeads;
    return 0;
  };
  const unpermute = (m: Matrix, name: string): Matrix => {
    const h = heads(name);
    return h ? permuteQK(m, h, true) : m;
  };
  for (const t of all) {
    if (blockOf(t.name) !== i) continue;
    const prefix = t.name.replace(/\.(weight|bias)$/, "");
    const hit = t.name.endsWith(".weight") ? byPrefix.get(prefix) : undefined;
    if (hit) {
      const f = hit[1];
      await writer.write(`${prefix}.${SVD_A}`, unpermute(f.a, prefix).data);
      await writer.write(`${prefix}.${SVD_B}`, f.b.data);
    } else {
      const data = await reader.read(t.name);
      const info = reader.info(t.name);
      const h = heads(t.name);
      if (h && (t.name.endsWith(".weight") || t.name.endsWith(".bias"))) {
        const cols = info.shape.length === 2 ? info.shape[1] : 1;
        await writer.write(t.name, permuteQK({ rows: info.shape[0], cols, data }, h, true).data);
      } else {
        await writer.write(t.name, data);
      }
    }
  }
}

/** The output config.json: the input's, or for a GGUF input one built from the spec. */
function outputConfig(
  model: ModelInput,
  spec: LlamaSpec,
  gguf: boolean,
): Record<string, unknown> {
  if (!gguf && model.config) return structuredClone(model.config);
  const qwen2 = spec.attentionBias; // the one GGUF architecture besides llama that we read
  return {
    architectures: [qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"],
    model_type: qwen2 ? "qwen2" : "llama",
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
    torch_dtype: "float32",
  };
}

const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
  "tokenizer.model",
];

async function copyTokenizer(inputPath: string | undefined, dir: string, gguf: boolean): Promise<void> {
  if (!inputPath) return;
  const fs = await import("node:fs/promises");
  const { join } = await import("node:path");
  if (gguf) {
    // Keep the SentencePiece vocabulary of the GGUF metadata, so the tokenizer can be rebuilt.
    const { openGguf } = await import("../io/gguf.ts");
    const g = await openGguf(inputPath);
    try {
      const tok: Record<string, unknown> = {};
      for (const [k, v] of g.kv) {
        if (k.startsWith("tokenizer.")) {
          tok[k] = ArrayBuffer.isView(v) ? Array.from(v as ArrayLike<number>) : v;
        }
      }
      await fs.writeFile(
        join(dir, "tokenizer_gguf.json"),
        JSON.stringify(tok, (_k, v) => (typeof v === "bigint" ? Number(v) : v)),
      );
    } finally {
      await g.close();
    }
    return;
  }
  for (const f of TOKENIZER_FILES) {
    try {
      await fs.copyFile(join(inputPath, f), join(dir, f));
    } catch (e) {
      if ((e as { code?: string }).code !== "ENOENT") throw e;
    }
  }
}
