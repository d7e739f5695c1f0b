/**
 * `compress()`: read a model block by block, observe each block's linear inputs on calibration data,
 * factor its seven linears with the chosen method, run the compressed block to get the next block's inputs,
 * stream the block's tensors to the output, drop it. Only one block's weights, its observers and the
 * calibration hidden states are in memory at a time (the ASVD sensitivity sweep, when asked for, holds the
 * model). The driver below is the whole run; one file per concern beside it: the block step
 * (`block_step.ts`), the output side (`output.ts`, `sink.ts`), the memory policy (`memory_policy.ts`) and
 * the phase clock (`phases.ts`).
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
 * Output: `model.safetensors` (`<prefix>.svd_a`/`<prefix>.svd_b` pairs instead of `<prefix>.weight`, every
 * other tensor unchanged), `config.json` (the original plus an `svd_llm` section) and the tokenizer files, to
 * a folder (written under a temporary name and renamed when complete) or any {@link OutputSink}. A GGUF input
 * is written as a Hugging Face folder: q/k rows are put back into the Hugging Face RoPE layout and its
 * SentencePiece vocabulary is saved as `tokenizer_gguf.json`.
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import { calibrationWindows } from "../calib/windows.ts";
import type { WritableDType } from "../io/dtype.ts";
import { createSafetensorsStreamWriter } from "../io/safetensors_writer.ts";
import { checkedReader, type TensorReader } from "../io/tensor_reader.ts";
import type { OpenUrlOptions } from "../io/url_source.ts";
import { checkText } from "../calib/text.ts";
import type { FwsvdWeighting } from "../methods/fwsvd.ts";
import { fwsvdFactors, WEIGHTINGS } from "./fwsvd.ts";
import {
  checkSocoOptions,
  socoBudget,
  socoPass,
  type SocoPassProgress,
  type SocoPassResult,
  type SocoRunOptions,
} from "./soco_pass.ts";
import type { Factors } from "../methods/factors.ts";
import type { LayerShape } from "../methods/asvd_sensitivity.ts";
import { KV_LINEARS, type KvCacheReport, kvCacheSavings, kvRank } from "../methods/kvcache.ts";
import {
  describeRatio,
  keptFraction,
  layerParams,
  type ParamSummary,
  rankFor,
  type Ratio,
  summarizeParams,
} from "../methods/ratio.ts";
import { linearShape } from "../model/linear_shape.ts";
import { checkLayerCount } from "../model/load.ts";
import { EMBED, LINEAR_NAMES, type LinearName, linearPrefix } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import type { Tokenizer } from "../tokenize/tokenizer.ts";
import { type BlockStepContext, compressBlock, type LayerReport } from "./block_step.ts";
import { embedWindows, type HiddenStates } from "./hidden.ts";
import { defaultMemoryPolicy, type MemoryPolicy } from "./memory_policy.ts";
import { outputConfig, planOutput, writeBlockTensors, writeConfig, writeSideFiles } from "./output.ts";
import { type CompressPhases, createPhaseClock, type PhaseClock } from "./phases.ts";
import { allocateLinears, type AllocationMode } from "./sensitivity.ts";
import { type ModelOrigin, type ModelSource, openModelSource, sideFilesOf } from "./source.ts";
import type { OutputSink } from "./sink.ts";
import { type CompressMethod, PIPELINE_VERSION, type SvdLlmConfig } from "./svd_llm_config.ts";

export { linearShape } from "../model/linear_shape.ts";
export type { ModelOrigin, ModelSource } from "./source.ts";
export type { LayerReport } from "./block_step.ts";
export type { CompressPhases } from "./phases.ts";
export { type CompressMethod, PIPELINE_VERSION } from "./svd_llm_config.ts";

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

/** What {@link compress} did. */
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

/** Where {@link compress} writes: a folder path, or a sink (memory, streams; see `sink.ts`). */
export type CompressOutput = string | OutputSink;

/**
 * Compress the model at `input` (a Hugging Face folder or a GGUF file, by path or URL; or a GGUF file as a
 * Blob or bytes) into `output` (a folder path, or an {@link OutputSink}). Throws OptionError for bad options
 * (ratio outside (0, 1), missing or too-short calibration, an existing output without `overwrite`, output
 * onto the input), NumericError for NaN weights or activations; on any failure or abort nothing
 * complete-looking is left.
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
  input: ModelSource,
  output: CompressOutput,
  opts: CompressOptions,
): Promise<CompressReport> {
  validate(opts);
  checkOutput(output);
  const { model, origin } = await openModelSource(input, opts.url);
  try {
    return await compressModel(model, output, opts, origin);
  } finally {
    await model.close();
  }
}

/**
 * {@link compress} for a model already opened; `origin.inputPath` (the folder or file it came from) is used to
 * refuse writing onto it and to copy the tokenizer files.
 */
export async function compressModel(
  model: ModelInput,
  output: CompressOutput,
  opts: CompressOptions,
  origin: ModelOrigin = {},
): Promise<CompressReport> {
  validate(opts);
  checkOutput(output);
  const t0 = performance.now();
  const run = await startRun(model, opts, origin);
  const sink = await openSink(output, opts, origin); // a bad destination is refused before any expensive work
  try {
    const { windows, calibration } = calibrate(model, run.spec, opts);
    const shapes = layerShapes(run.spec, run.linears);
    const { ranks, sensitivity } = await allocateRanks(run, shapes, windows);
    // FWSVD: one Fisher pass (forward and backward) over the windows; SoCo: its bases and training, whose
    // scores choose the ranks. Neither needs calibration streams in the block loop.
    const fisher = opts.method === "fwsvd" ? await fisherPass(run, windows!, ranks) : undefined;
    const soco = opts.method === "soco" ? await socoRun(run, windows!, calibration!.seed) : undefined;
    if (soco) Object.assign(ranks, soco.ranks);
    const modelPass = fisher !== undefined || soco !== undefined;
    const layers = await compressBlocks(run, sink, ranks, shapes, modelPass ? undefined : windows, {
      fisher,
      learned: soco?.factors ?? fisher?.factors,
    });
    const params = summarizeParams(
      shapes.map((s) => layerParams(s.name, s.rows, s.cols, ranks[s.name])),
      otherParams(run.reader, shapes, run.gguf),
    );
    const config = outputConfig(model.config, run.spec, run.gguf);
    config.svd_llm = svdLlmSection(model, run, { calibration, ranks, params, layers, fisher, soco });
    await writeConfig(sink, config);
    await writeSideFiles(sink, await sideFilesOf(origin, run.gguf));
    opts.signal?.throwIfAborted();
    await sink.commit();
    run.memory.boundary();
    run.emit({ stage: "done", done: 1, total: 1 });
    return {
      output: sink.name,
      method: opts.method,
      ratio: opts.ratio,
      ratioLabel: describeRatio(opts.ratio),
      layers,
      params,
      calibration,
      sequential: run.sequential,
      update: run.update,
      allocation: run.allocation,
      sensitivity,
      fisher: fisher && { side: fisher.side, batches: fisher.batches, meanLoss: fisher.meanLoss },
      soco: soco && (({ factors: _, ...facts }) => facts)(soco),
      kvCache: opts.kvCache ? kvCacheSavings(run.spec, ranks) : undefined,
      seconds: (performance.now() - t0) / 1000,
      phases: run.clock.phases,
      peakRssBytes: run.memory.peak(),
    };
  } catch (e) {
    await sink.abort(e);
    throw e;
  } finally {
    run.memory.stop();
  }
}

/**
 * The driver proper, as GPTQ's `llama_sequential`: copy the non-block tensors and embed the calibration
 * windows, then for each block one step (observe → factor → propagate → write), streaming to the output.
 */
async function compressBlocks(
  run: Run,
  sink: OutputSink,
  ranks: Record<string, number | null>,
  shapes: readonly LayerShape[],
  windows: Int32Array[] | undefined,
  pass: { fisher?: RunFisher; learned?: ReadonlyMap<string, Factors> } = {},
): Promise<LayerReport[]> {
  const { spec, reader, memory, clock, emit } = run;
  const out = planOutput(reader, spec, ranks, { factorDtype: run.opts.dtype ?? "F32", gguf: run.gguf });
  const writer = await createSafetensorsStreamWriter(await sink.file("model.safetensors"), out.plan, {
    metadata: { format: "pt", svd_llm_method: run.opts.method },
    name: `${sink.name}/model.safetensors`,
  });
  try {
    // Calibration streams: two separate buffers, both advanced in place, embedded from the one read of the
    // embedding table that is also its copy (no lm_head, no cached head: they would stay for the whole run).
    const useOrig = windows !== undefined && (!run.sequential || run.update);
    const useComp = windows !== undefined && (run.sequential || run.update);
    const [orig, comp] = await clock.time(
      "embed",
      () => copyAndEmbed(writer, reader, spec, out.outside, windows, useOrig, useComp, memory),
    );
    memory.boundary();
    emit({ stage: "calibrate", done: 1, total: 1 });
    const interleaved = spec.ropeStyle === "interleaved"; // a GGUF llama file's q/k rows
    const ctx = blockContext(
      run,
      ranks,
      shapes,
      orig,
      comp,
      pass,
      (i, factored) => writeBlockTensors(writer, reader, spec, i, out.blocks[i], factored, interleaved),
    );
    const layers: LayerReport[] = [];
    for (let i = 0; i < spec.numLayers; i++) {
      layers.push(...await compressBlock(ctx, i));
      memory.afterBlock(run.blockBytes); // only now is nothing of block i reachable
      emit({ stage: "write", block: i, done: i + 1, total: spec.numLayers });
    }
    await clock.time("write", () => writer.close());
    return layers;
  } catch (e) {
    await writer.abort();
    throw e;
  }
}

/** The fixed choices of one run, derived once from the options and the model, and its hooks. */
interface Run {
  /** The options as given. */
  opts: CompressOptions;
  /** Architecture. */
  spec: LlamaSpec;
  /** Weights, checked for non-finite values as read. */
  reader: TensorReader;
  /** Linears compressed. */
  linears: readonly LinearName[];
  /** SVD-LLM update. */
  update: boolean;
  /** Sequential calibration. */
  sequential: boolean;
  /** Rank allocation. */
  allocation: AllocationMode | "learned";
  /** Windows per forward batch. */
  batch: number;
  /** The input is a GGUF file (its names and layout are translated). */
  gguf: boolean;
  /** Float32 bytes of one block's compressed linears. */
  blockBytes: number;
  /** Memory hooks. */
  memory: MemoryPolicy;
  /** Phase clock. */
  clock: PhaseClock;
  /** Progress. */
  emit: (e: CompressProgress) => void;
}

async function startRun(model: ModelInput, opts: CompressOptions, origin: ModelOrigin): Promise<Run> {
  const spec = model.spec;
  // Every weight read is checked for NaN/Inf, so a bad weight is named where it is read (a no-op wrap for a
  // model from loadModel, already checked).
  const reader = checkedReader(model.reader);
  checkLayerCount(reader, spec);
  checkCalibrationSize(opts, spec);
  if (opts.method === "soco") socoBudget(spec, opts.ratio); // an unreachable budget is refused before any work
  const linears = opts.kvCache ? KV_LINEARS : opts.linears ?? LINEAR_NAMES;
  const seqlen = opts.calibration?.seqlen ?? Math.min(256, spec.maxPositions);
  const blockBytes = linears.reduce((t, l) => t + 4 * linearShape(spec, l)[0] * linearShape(spec, l)[1], 0);
  const path = origin.inputPath;
  return {
    opts,
    spec,
    reader,
    linears,
    update: opts.update ?? false,
    sequential: opts.sequential ?? true,
    allocation: opts.method === "soco" ? "learned" : opts.allocation ?? "uniform",
    batch: opts.batchSize ?? Math.max(1, Math.floor(BATCH_TOKENS / seqlen)),
    gguf: origin.gguf !== undefined ||
      (path !== undefined ? /\.gguf$/i.test(path) : "general.architecture" in reader.metadata),
    blockBytes,
    memory: await defaultMemoryPolicy(blockBytes),
    clock: createPhaseClock(),
    emit: (e) => opts.onProgress?.(e),
  };
}

/** The output: a folder path opens a folder sink (lazily imported: file-system code), a sink is used as is. */
async function openSink(
  output: CompressOutput,
  opts: CompressOptions,
  origin: ModelOrigin,
): Promise<OutputSink> {
  if (typeof output !== "string") return output;
  opts.signal?.throwIfAborted();
  const { openFolderSink } = await import("./sink_folder.ts");
  return await openFolderSink(output, {
    overwrite: opts.overwrite,
    inputs: origin.inputPath ? [origin.inputPath] : [],
  });
}

/** Every compressed linear's prefix and shape, block by block. */
function layerShapes(spec: LlamaSpec, linears: readonly LinearName[]): LayerShape[] {
  const shapes: LayerShape[] = [];
  for (let i = 0; i < spec.numLayers; i++) {
    for (const name of linears) {
      const [rows, cols] = linearShape(spec, name);
      shapes.push({ name: linearPrefix(i, name), rows, cols });
    }
  }
  return shapes;
}

/** What every block step shares: the run's choices, the streams, the progress of the linears, the writer. */
function blockContext(
  run: Run,
  ranks: Readonly<Record<string, number | null>>,
  shapes: readonly LayerShape[],
  orig: HiddenStates | undefined,
  comp: HiddenStates | undefined,
  pass: { fisher?: RunFisher; learned?: ReadonlyMap<string, Factors> },
  write: BlockStepContext["write"],
): BlockStepContext {
  const { spec, opts } = run;
  const total = shapes.filter((s) => ranks[s.name] !== null).length;
  const t0 = performance.now();
  let done = 0;
  return {
    spec,
    reader: run.reader,
    method: opts.method,
    linears: run.linears,
    // The widest input first (down_proj in a LLaMA block), so that the largest statistics (its in×in Gram
    // matrix) are dropped before the other linears are factored. The factors do not depend on the order.
    factorOrder: [...run.linears].sort((a, b) => linearShape(spec, b)[1] - linearShape(spec, a)[1]),
    ranks,
    alpha: opts.alpha,
    damping: opts.damping,
    learned: pass.learned,
    update: run.update,
    sequential: run.sequential,
    batch: run.batch,
    orig,
    comp,
    clock: run.clock,
    memory: run.memory,
    signal: opts.signal,
    onLinear: (block, layer) => {
      done++;
      const etaSeconds = ((performance.now() - t0) / 1000 / done) * (total - done);
      run.emit({ stage: "compress", block, layer, done, total, etaSeconds });
    },
    write,
  };
}

/** The methods {@link compress} runs. */
const METHODS: readonly CompressMethod[] = ["svd", "asvd", "svdllm", "fwsvd", "soco"];

/** FWSVD's pass of a run: every compressed linear's factors, and how the Fisher was measured. */
interface RunFisher {
  /** How the Fisher information weighted each linear. */
  side: FwsvdWeighting;
  /** Linear prefix → its factors (the block loop only writes them). */
  factors: ReadonlyMap<string, Factors>;
  /** Batches averaged (per block, when sequential). */
  batches: number;
  /** Mean calibration loss over the batches, nats per token. */
  meanLoss: number;
}

/**
 * FWSVD's Fisher pass and factors (the whole model, forward and backward, per batch; with K-FAC and
 * `sequential`, then a forward pass over the compressed prefix for the input factors).
 */
async function fisherPass(
  run: Run,
  windows: readonly Int32Array[],
  ranks: Record<string, number | null>,
): Promise<RunFisher> {
  const { opts } = run;
  const side = opts.fisherSide ?? "kfac";
  const f = await run.clock.time(
    "fisher",
    () =>
      fwsvdFactors({ spec: run.spec, reader: run.reader }, windows, {
        ranks,
        side,
        // K-FAC's input factors follow the compressed prefix as SVD-LLM's whitening does; the diagonal sides
        // come from the dense model (their sequential form costs a backward pass per block).
        sequential: run.sequential && side === "kfac" ? "inputs" : false,
        batchWindows: opts.fisherBatch,
        linears: run.linears,
        signal: opts.signal,
        onProgress: (e) => {
          run.memory.boundary();
          run.emit({ stage: "fisher", done: e.done, total: e.total });
        },
      }),
  );
  return { side, factors: f.factors, batches: f.fisher.batches, meanLoss: f.fisher.meanLoss };
}

/** SoCo's pass on the run's model and windows, its events reported as "soco" progress. */
async function socoRun(run: Run, windows: readonly Int32Array[], seed: number): Promise<SocoPassResult> {
  const { opts } = run;
  const o = opts.soco ?? {};
  const steps = o.steps ?? 100;
  return await run.clock.time(
    "soco",
    () =>
      socoPass({ spec: run.spec, reader: run.reader }, windows, opts.ratio, {
        ...o,
        seed,
        signal: opts.signal,
        sample: () => run.memory.sample(),
        onProgress: (e) => {
          opts.onSoco?.(e);
          if (e.stage === "bases") run.emit({ stage: "soco", block: e.block, done: e.done, total: e.total });
          else run.emit({ stage: "soco", done: e.train.step, total: steps });
        },
      }),
  );
}

/** Refuse an output that is neither a non-empty path nor a sink. */
function checkOutput(output: CompressOutput): void {
  if (typeof output === "string" ? output.trim() === "" : typeof output?.file !== "function") {
    throw new OptionError(
      `compress: the output must be a folder path or an output sink, got ${JSON.stringify(output)}`,
    );
  }
}

function validate(opts: CompressOptions): void {
  if (!opts || !METHODS.includes(opts.method)) {
    throw new OptionError(
      `compress: method must be "svd", "asvd", "svdllm", "fwsvd" or "soco", got ${
        JSON.stringify(opts?.method)
      }`,
    );
  }
  if (opts.fisherSide !== undefined && !WEIGHTINGS.includes(opts.fisherSide)) {
    throw new OptionError(
      `compress: fisherSide must be "kfac", "both", "input" or "output", got ${
        JSON.stringify(opts.fisherSide)
      }`,
    );
  }
  const fb = opts.fisherBatch ?? 1;
  if (!Number.isInteger(fb) || fb < 1) {
    throw new OptionError(`compress: fisherBatch must be a positive integer, got ${JSON.stringify(fb)}`);
  }
  if (opts.soco !== undefined && opts.method !== "soco") {
    throw new OptionError(`compress: soco options apply to method "soco" only`);
  }
  if (opts.method === "soco") {
    checkSocoOptions(opts.soco ?? {});
    if (opts.linears || opts.kvCache || opts.force) {
      throw new OptionError(
        `compress: method "soco" chooses every linear's rank itself; drop linears/kvCache/force`,
      );
    }
  }
  if ((opts.fisherSide !== undefined || opts.fisherBatch !== undefined) && opts.method !== "fwsvd") {
    throw new OptionError(`compress: fisherSide and fisherBatch apply to method "fwsvd" only`);
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
  if ((opts.allocation ?? "uniform") !== "uniform" && (opts.method === "fwsvd" || opts.method === "soco")) {
    throw new OptionError(
      `compress: allocation "${opts.allocation}" applies to methods "svd", "asvd" and "svdllm", not "${opts.method}"`,
    );
  }
  if (opts.method !== "svd" && !opts.calibration?.text && !opts.calibration?.ids) {
    throw new OptionError(
      `compress: method "${opts.method}" needs calibration data (calibration.text or calibration.ids)`,
    );
  }
  if (opts.method !== "svd" && opts.calibration?.text !== undefined && !opts.calibration.ids) {
    checkText(opts.calibration.text, "compress: calibration.text");
  }
  const b = opts.batchSize ?? 8;
  if (!Number.isInteger(b) || b < 1) {
    throw new OptionError(`compress: batchSize must be a positive integer, got ${b}`);
  }
  for (const l of opts.linears ?? []) {
    if (!LINEAR_NAMES.includes(l)) throw new OptionError(`compress: unknown linear ${JSON.stringify(l)}`);
  }
  const s = opts.calibration?.samples;
  if (s !== undefined && opts.method !== "svd" && (!Number.isInteger(s) || s < 1 || s > MAX_SAMPLES)) {
    throw new OptionError(
      `compress: calibration.samples must be a whole number from 1 to ${MAX_SAMPLES}, got ${
        JSON.stringify(s)
      }`,
    );
  }
}

/** The calibration streams must fit in sane memory: checked before tokenising or allocating anything. */
function checkCalibrationSize(opts: CompressOptions, spec: LlamaSpec): void {
  const c = opts.calibration;
  if (opts.method === "svd" || !c) return;
  const samples = c.samples ?? 32, seqlen = c.seqlen ?? Math.min(256, spec.maxPositions);
  if (!Number.isInteger(seqlen) || seqlen < 1) return; // calibrationWindows names it
  if (seqlen > spec.maxPositions) {
    throw new OptionError(
      `compress: calibration seqlen ${seqlen} exceeds the model's context ${spec.maxPositions}`,
    );
  }
  const streams = opts.update || (opts.sequential ?? true) === false ? 2 : 1;
  const bytes = samples * seqlen * spec.hiddenSize * 4 * streams;
  if (bytes > MAX_STREAM_BYTES) {
    throw new OptionError(
      `compress: calibration of ${samples} × ${seqlen} tokens would hold ${
        (bytes / 2 ** 30).toFixed(1)
      } GiB of hidden states (at most ${
        MAX_STREAM_BYTES / 2 ** 30
      } GiB); use fewer samples or a shorter seqlen`,
    );
  }
}

/** Tokenise and cut the calibration windows (none for svd). */
function calibrate(
  model: ModelInput,
  spec: LlamaSpec,
  opts: CompressOptions,
): { windows?: Int32Array[]; calibration?: CompressReport["calibration"] } {
  if (opts.method === "svd") return {};
  const c = opts.calibration!;
  const seqlen = c.seqlen ?? Math.min(256, spec.maxPositions);
  const samples = c.samples ?? 32;
  let ids: ArrayLike<number>;
  if (c.ids) ids = c.ids;
  else {
    if (!model.tokenizer) throw new OptionError(`compress: calibration.text needs the model's tokenizer`);
    ids = model.tokenizer.encode(c.text!, { bos: true });
  }
  const seed = c.seed ?? 0, layout = c.layout ?? "random";
  const windows = calibrationWindows(ids, { samples, seqlen, seed, layout });
  for (const w of windows) {
    for (const id of w) {
      if (!(id >= 0 && id < spec.vocabSize)) {
        throw new OptionError(
          `compress: calibration token id ${id} is outside the vocabulary (${spec.vocabSize})`,
        );
      }
    }
  }
  return { windows, calibration: { samples, seqlen, tokens: ids.length, seed, layout } };
}

/** Ranks: known from shapes (uniform, KV cache), or chosen under one budget (see `allocateLinears`). */
async function allocateRanks(
  run: Run,
  shapes: LayerShape[],
  windows: Int32Array[] | undefined,
): Promise<{ ranks: Record<string, number | null>; sensitivity?: CompressReport["sensitivity"] }> {
  const { opts } = run;
  const ranks: Record<string, number | null> = {};
  const allocation = opts.allocation ?? "uniform";
  if (allocation !== "uniform") {
    return await run.clock.time("sensitivity", async () => {
      const res = await allocateLinears({ spec: run.spec, reader: run.reader }, windows, {
        allocation,
        method: opts.method as "svd" | "asvd" | "svdllm",
        kept: keptFraction(opts.ratio),
        alpha: opts.alpha,
        linears: run.linears,
        batchSize: run.batch,
        sensitivity: opts.sensitivity,
        onProgress: (e) => {
          // The allocation passes have no memory hooks of their own: each step drops a layer's candidates.
          run.memory.boundary();
          opts.signal?.throwIfAborted();
          run.emit({ stage: "sensitivity", ...e });
        },
      });
      Object.assign(ranks, res.ranks);
      const sensitivity = {
        seconds: res.seconds,
        fromCache: res.fromCache,
        densePpl: res.densePpl ?? NaN,
        achievedKept: res.achievedKept,
      };
      return { ranks, sensitivity };
    });
  }
  const kept = keptFraction(opts.ratio);
  for (const s of shapes) {
    ranks[s.name] = opts.kvCache
      ? kvRank(s.rows, kept)
      : rankFor(s.rows, s.cols, opts.ratio, { force: opts.force, layer: s.name });
  }
  return { ranks };
}

/** The `svd_llm` section of the output's config.json. */
function svdLlmSection(
  model: ModelInput,
  run: Run,
  r: {
    calibration?: CompressReport["calibration"];
    ranks: Record<string, number | null>;
    params: ParamSummary;
    layers: LayerReport[];
    fisher?: RunFisher;
    soco?: SocoPassResult;
  },
): SvdLlmConfig {
  const { opts } = run;
  return {
    version: PIPELINE_VERSION,
    method: opts.method,
    ratio: "removed" in opts.ratio
      ? { convention: "removed", value: opts.ratio.removed }
      : { convention: "kept", value: opts.ratio.kept },
    allocation: run.allocation,
    sequential: run.sequential,
    update: run.update,
    alpha: opts.method === "asvd" ? (opts.alpha ?? 0.5) : undefined,
    calibration: r.calibration,
    fisher: r.fisher && {
      side: r.fisher.side,
      batches: r.fisher.batches,
      batch_windows: opts.fisherBatch ?? 1,
      mean_loss: r.fisher.meanLoss,
    },
    soco: r.soco && {
      basis: r.soco.basis,
      steps: r.soco.settings.steps,
      lr: r.soco.settings.lr,
      batch: r.soco.settings.batch,
      kl_weight: r.soco.settings.klWeight,
      nll_weight: r.soco.settings.nllWeight,
      recoveries: r.soco.recoveries,
      budget: r.soco.budget.target,
      kept: r.soco.budget.kept,
    },
    ranks: r.ranks,
    achieved: { linears_removed: r.params.linears.removed, model_removed: r.params.model.removed },
    // What each factorisation measured, for `inspect` (absent entries: not measured by the method).
    layers: Object.fromEntries(r.layers.map((l) => [l.name, {
      energy_kept: l.energyKept,
      relative_loss: l.relativeLoss,
      shift: l.shift,
      update_shift: l.updateShift,
    }])),
    source: model.name,
    date: new Date().toISOString(),
  };
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
  memory: MemoryPolicy,
): Promise<[HiddenStates | undefined, HiddenStates | undefined]> {
  let streams: [HiddenStates | undefined, HiddenStates | undefined] = [undefined, undefined];
  let embedded = false;
  const embedFrom = (data: Float32Array) => {
    streams = embedStreams(spec, data, windows!, useOrig, useComp);
    embedded = true;
  };
  for (const name of names) {
    await copyTensor(writer, reader, name, name === EMBED && windows ? embedFrom : undefined);
    memory.dropped(4 * reader.info(name).shape.reduce((a, b) => a * b, 1)); // died with copyTensor's frame
  }
  if (windows && !embedded) embedFrom(await reader.read(EMBED));
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
