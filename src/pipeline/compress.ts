/**
 * `compress()`: read a model block by block, observe each block's linear inputs on calibration data,
 * factor its seven linears with the chosen method, run the compressed block to get the next block's inputs,
 * stream the block's tensors to the output, drop it. Only one block's weights, its observers and the
 * calibration hidden states are in memory at a time (the ASVD sensitivity sweep, when asked for, holds the
 * model). The driver below is the whole run; one file per concern beside it: the options and report types
 * (`options.ts`) and their checks (`validate.ts`), the run's fixed choices (`run.ts`), the calibration
 * windows and streams (`calibration.ts`), the ranks (`ranks.ts`), the whole-model passes of FWSVD and SoCo
 * (`model_pass.ts`), the block step (`block_step.ts`), the output side (`output.ts`, `sink.ts`), the
 * config's `svd_llm` record (`report.ts`), the memory policy (`memory_policy.ts`) and the phase clock
 * (`phases.ts`).
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
import { createSafetensorsStreamWriter } from "../io/safetensors_writer.ts";
import type { Factors } from "../methods/factors.ts";
import type { LayerShape } from "../methods/asvd_sensitivity.ts";
import { kvCacheSavings } from "../methods/kvcache.ts";
import { describeRatio, layerParams, summarizeParams } from "../methods/ratio.ts";
import { linearShape } from "../model/linear_shape.ts";
import { type BlockStepContext, compressBlock, type LayerReport } from "./block_step.ts";
import { calibrate, copyAndEmbed } from "./calibration.ts";
import type { HiddenStates } from "./hidden.ts";
import { fisherPass, type RunFisher, socoRun } from "./model_pass.ts";
import type { CompressOptions, CompressOutput, CompressReport, ModelInput } from "./options.ts";
import { outputConfig, planOutput, writeBlockTensors, writeConfig, writeSideFiles } from "./output.ts";
import { allocateRanks } from "./ranks.ts";
import { otherParams, svdLlmSection } from "./report.ts";
import { layerShapes, type Run, startRun } from "./run.ts";
import { cpuSeconds } from "./phases.ts";
import { type ModelOrigin, type ModelSource, openModelSource, sideFilesOf } from "./source.ts";
import type { OutputSink } from "./sink.ts";
import { checkOutput, validate } from "./validate.ts";

export { linearShape } from "../model/linear_shape.ts";
export type { ModelOrigin, ModelSource } from "./source.ts";
export type { LayerReport } from "./block_step.ts";
export type { CompressPhases } from "./phases.ts";
export { type CompressMethod, PIPELINE_VERSION } from "./svd_llm_config.ts";
export {
  BATCH_TOKENS,
  type CalibrationOptions,
  type CompressOptions,
  type CompressOutput,
  type CompressProgress,
  type CompressReport,
  MAX_SAMPLES,
  MAX_STREAM_BYTES,
  type ModelInput,
} from "./options.ts";

/**
 * Compress the model at `input` (a Hugging Face folder or a GGUF file, by path or URL; a GGUF file as a Blob
 * or bytes; a Hugging Face folder given as its Files; a tar of one — see {@link ModelSource}) into `output` (a folder path, or an {@link OutputSink}). Throws OptionError for bad options
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
  const t0 = performance.now(), c0 = cpuSeconds();
  const run = await startRun(model, opts, origin);
  const sink = await openSink(output, opts, origin); // a bad destination is refused before any expensive work
  try {
    const { windows, validation, calibration } = calibrate(model, run.spec, opts);
    const shapes = layerShapes(run.spec, run.linears);
    const { ranks, sensitivity } = await allocateRanks(run, shapes, windows);
    // FWSVD: one Fisher pass (forward and backward) over the windows; SoCo: its bases and training, whose
    // scores choose the ranks. Neither needs calibration streams in the block loop.
    const fisher = opts.method === "fwsvd" ? await fisherPass(run, windows!, ranks) : undefined;
    const soco = opts.method === "soco"
      ? await socoRun(run, windows!, calibration!.seed, validation)
      : undefined;
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
      cpuSeconds: c0 === undefined ? undefined : cpuSeconds()! - c0,
      cpuPhases: run.clock.cpu,
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
  pass: { fisher?: RunFisher; learned?: { get(prefix: string): Factors | undefined } } = {},
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

/** What every block step shares: the run's choices, the streams, the progress of the linears, the writer. */
function blockContext(
  run: Run,
  ranks: Readonly<Record<string, number | null>>,
  shapes: readonly LayerShape[],
  orig: HiddenStates | undefined,
  comp: HiddenStates | undefined,
  pass: { fisher?: RunFisher; learned?: { get(prefix: string): Factors | undefined } },
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
