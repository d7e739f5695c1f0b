/**
 * SoCo at model level: calibration windows → the spectral basis of every block linear (plain SVD, or
 * SVD-LLM's whitened basis from the original model's activations) → the scores trained on the model's own
 * next-token loss plus KL to the original model (the default; either can be weighted or dropped) through
 * the streaming backward pass (`lossAndGrad`) → the kept components written as a compressed model folder
 * (`svd_a`/`svd_b` per linear, ranks per matrix) that `loadModel` reads like any other.
 *
 * The target is the parameter count of the uniform-rank factorisation at the same ratio (what SVD-LLM
 * stores: Σ k·(m+n) with k = ⌊m·n·(1−r)/(m+n)⌋), so a SoCo model is never larger than the SVD-LLM model it is
 * compared with; SoCo spends those parameters where its learned scores say.
 *
 * Memory: the bases of all linears are held together (U and C = UᵀW in float64: r·(m+n) values each, about
 * 4× the float32 weights of the block linears for square ones), plus the training's peak, which is
 * `lossAndGrad`'s: one block's dense W'(s) (formed per call from the basis, never cached) and intermediates
 * plus the block-boundary checkpoints (layers × tokens × hidden). The weights themselves are streamed: each
 * block is read once, for its basis.
 *
 * @example
 * ```ts ignore
 * import { compressSoco } from "./soco.ts";
 * const report = await compressSoco("models/stories260K/stories260K.gguf", "out/stories-soco", {
 *   ratio: { removed: 0.4 },
 *   calibration: { ids, samples: 32, seqlen: 256 },
 *   steps: 100,
 * });
 * report.params.linears.removed; // ≥ 0.4
 * ```
 *
 * @module
 */
import { NumericError, OptionError } from "../errors.ts";
import { GramObserver } from "../calib/gram.ts";
import { calibrationWindows } from "../calib/windows.ts";
import { createSafetensorsStreamWriter } from "../io/safetensors_writer.ts";
import { openGguf } from "../io/gguf.ts";
import { cholesky, type CholeskyResult } from "../linalg/cholesky.ts";
import { createRng } from "../linalg/random.ts";
import { type GradModel, lossAndGrad } from "../model/backward.ts";
import { BLOCK_FIELD, type Linear, type LlamaBlock, loadBlock, loadHead } from "../model/llama.ts";
import { checkLayerCount, loadModel } from "../model/load.ts";
import { LINEAR_NAMES, type LinearName, linearPrefix, SVD_A, SVD_B } from "../model/names.ts";
import { checkedReader } from "../io/tensor_reader.ts";
import type { Factors } from "../methods/factors.ts";
import {
  describeRatio,
  layerParams,
  type ParamSummary,
  rankFor,
  type Ratio,
  summarizeParams,
} from "../methods/ratio.ts";
import {
  addScoreGradient,
  rankCap,
  type SocoBasisKind,
  type SpectralBasis,
  spectralFactors,
  spectralWeight,
  svdBasis,
  whitenedBasis,
} from "../methods/soco.ts";
import { type BudgetLinear, checkBudget } from "../methods/soco_budget.ts";
import {
  checkTrainOptions,
  type SocoProgress,
  type SocoState,
  stateFromJson,
  stateToJson,
  trainSpectrum,
} from "../methods/soco_train.ts";
import { type CalibrationOptions, linearShape, type ModelInput, PIPELINE_VERSION } from "./compress.ts";
import { folderSideFiles, outputConfig, planOutput, writeBlockTensors, writeSideFiles } from "./output.ts";
import { openFolderSink } from "./sink_folder.ts";
import { writeWhole } from "./sink.ts";
import { embedWindows, runBlock } from "./hidden.ts";
import { createPeakMemory } from "./memory.ts";

/** Options of {@link compressSoco}. */
export interface SocoOptions {
  /** Target: `{ removed: r }` (SVD-LLM) or `{ kept: p }`; the budget is the uniform ranks' parameter count. */
  ratio: Ratio;
  /** Calibration windows (default 32 × min(256, context), random starts, seed 0). */
  calibration: CalibrationOptions;
  /** The basis the spectrum is learned in (default "whitened": measured better, see the README). */
  basis?: SocoBasisKind;
  /** Training steps over the three stages (default 100). */
  steps?: number;
  /** Adam's learning rate on the scores (default 0.05). */
  lr?: number;
  /** Initial sparsity weight (default 1). */
  sparsity?: number;
  /** Calibration windows per step (default 4, at most the number of windows). */
  batch?: number;
  /**
   * Weight of a KL(original ‖ compressed) term, the paper's deviation from the original model (default 10: on
   * stories260K it regularises the fit to a small calibration set — 20 % removed: ppl 58.57 without, 39.98 at
   * weight 1, 36.75 at 10; 0 turns it off).
   */
  klWeight?: number;
  /** Weight of the next-token loss (default 1; 0 with `klWeight` > 0 trains on the original's outputs only). */
  nllWeight?: number;
  /**
   * A JSON checkpoint of the scores and the optimiser: resumed from when it exists (it must be of the same
   * run), rewritten every `checkpointEvery` steps and at the end.
   */
  checkpoint?: string;
  /** Steps between checkpoints (default 25). */
  checkpointEvery?: number;
  /** Replace an existing output folder. */
  overwrite?: boolean;
  /** Progress: the bases (per block), then every training step (loss, budget, steps/second), then writing. */
  onProgress?: (e: SocoPipelineProgress) => void;
  /** Stop early. */
  signal?: AbortSignal;
}

/** A progress event of {@link compressSoco}. */
export type SocoPipelineProgress =
  | { stage: "bases"; block: number; done: number; total: number }
  | { stage: "train"; train: SocoProgress }
  | { stage: "write"; done: number; total: number };

/** What {@link compressSoco} did. */
export interface SocoReport {
  /** Output folder. */
  output: string;
  /** Always "soco". */
  method: "soco";
  /** The basis used. */
  basis: SocoBasisKind;
  /** The ratio as given, and its label. */
  ratio: Ratio;
  /** Human label of the ratio. */
  ratioLabel: string;
  /** Target parameter count of the block linears (uniform ranks at the ratio) and what was kept. */
  budget: { target: number; kept: number };
  /** Rank kept per linear (tensor prefix). */
  ranks: Record<string, number>;
  /** Parameter counts. */
  params: ParamSummary;
  /** Per step: stage, loss, budget (kept over target). */
  history: { step: number; stage: string; loss: number; budget: number }[];
  /** Per linear: its shape, the basis's σ and the learned scores (0 where pruned), for plots. */
  spectra: { name: string; rows: number; cols: number; sigma: Float64Array; scores: Float64Array }[];
  /** Divergences recovered from (learning-rate halvings). */
  recoveries: number;
  /** Seconds: bases, training, writing, total. */
  seconds: { bases: number; train: number; write: number; total: number };
  /** Peak resident memory seen, bytes. */
  peakRssBytes: number;
}

/** Compress the model at `input` (folder or GGUF file) with SoCo into the folder `output`. */
export async function compressSoco(input: string, output: string, opts: SocoOptions): Promise<SocoReport> {
  check(opts);
  const model = await loadModel(input);
  try {
    return await compressSocoModel(model, output, opts, { inputPath: input });
  } finally {
    await model.close();
  }
}

function check(opts: SocoOptions): void {
  checkTrainOptions(opts);
  if (opts.basis !== undefined && opts.basis !== "svd" && opts.basis !== "whitened") {
    throw new OptionError(`soco: basis must be "svd" or "whitened", got ${JSON.stringify(opts.basis)}`);
  }
  const b = opts.batch;
  if (b !== undefined && !(Number.isInteger(b) && b >= 1)) {
    throw new OptionError(`soco: batch must be a whole number of windows ≥ 1, got ${b}`);
  }
  for (const key of ["klWeight", "nllWeight"] as const) {
    const v = opts[key];
    if (v !== undefined && !(typeof v === "number" && Number.isFinite(v) && v >= 0)) {
      throw new OptionError(`soco: ${key} must be a finite number ≥ 0, got ${v}`);
    }
  }
  if ((opts.nllWeight ?? 1) === 0 && !((opts.klWeight ?? 10) > 0)) {
    throw new OptionError(`soco: nllWeight 0 needs a klWeight > 0 (the objective would be empty)`);
  }
  if (!opts.calibration || (!opts.calibration.ids && opts.calibration.text === undefined)) {
    throw new OptionError(`soco: calibration text or ids are required (the scores are trained on them)`);
  }
}

/** The window order of step `step`: `batch` windows from seeded per-epoch permutations. */
function batchPicker(n: number, batch: number, seed: number): (step: number) => number[] {
  const perms = new Map<number, Int32Array>();
  const perm = (epoch: number) => {
    let p = perms.get(epoch);
    if (!p) {
      const rng = createRng((seed * 7919 + epoch) >>> 0);
      p = Int32Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = rng.nextU32() % (i + 1);
        [p[i], p[j]] = [p[j], p[i]];
      }
      perms.clear(); // only the current epoch is needed again
      perms.set(epoch, p);
    }
    return p;
  };
  return (step) => {
    const out: number[] = [];
    for (let j = 0; j < batch; j++) {
      const k = step * batch + j;
      out.push(perm(Math.floor(k / n))[k % n]);
    }
    return out;
  };
}

/** Input groups: linears reading the same input share one Gram matrix. */
const GROUP: Readonly<Record<LinearName, LinearName>> = {
  "self_attn.q_proj": "self_attn.q_proj",
  "self_attn.k_proj": "self_attn.q_proj",
  "self_attn.v_proj": "self_attn.q_proj",
  "self_attn.o_proj": "self_attn.o_proj",
  "mlp.gate_proj": "mlp.gate_proj",
  "mlp.up_proj": "mlp.gate_proj",
  "mlp.down_proj": "mlp.down_proj",
};

/** {@link compressSoco} on a model already opened (as `loadModel` returns it). */
export async function compressSocoModel(
  model: ModelInput,
  output: string,
  opts: SocoOptions,
  { inputPath }: { inputPath?: string } = {},
): Promise<SocoReport> {
  check(opts);
  const t0 = performance.now();
  const peak = createPeakMemory();
  const spec = model.spec;
  const reader = checkedReader(model.reader);
  checkLayerCount(reader, spec);
  const kind = opts.basis ?? "whitened";
  const { steps, lr } = checkTrainOptions(opts);
  // Budget first (cheap): the uniform ranks at the ratio, over every block linear.
  const names: string[] = [], linears: BudgetLinear[] = [];
  let target = 0;
  for (let i = 0; i < spec.numLayers; i++) {
    for (const l of LINEAR_NAMES) {
      const [m, n] = linearShape(spec, l);
      const k = rankFor(m, n, opts.ratio, { layer: linearPrefix(i, l) });
      target += k * (m + n);
      names.push(linearPrefix(i, l));
      linears.push({ cost: m + n, cap: rankCap(m, n) });
    }
  }
  checkBudget(linears, target);
  const gguf = inputPath !== undefined
    ? /\.gguf$/i.test(inputPath)
    : "general.architecture" in reader.metadata;
  const sink = await openFolderSink(output, {
    overwrite: opts.overwrite,
    inputs: inputPath ? [inputPath] : [],
    action: "soco",
  });
  try {
    // Calibration windows.
    const c = opts.calibration;
    const seqlen = c.seqlen ?? Math.min(256, spec.maxPositions);
    const samples = c.samples ?? 32, seed = c.seed ?? 0;
    if (seqlen > spec.maxPositions) {
      throw new OptionError(
        `soco: calibration seqlen ${seqlen} exceeds the model's context ${spec.maxPositions}`,
      );
    }
    let ids: ArrayLike<number>;
    if (c.ids) ids = c.ids;
    else {
      if (!model.tokenizer) throw new OptionError(`soco: calibration.text needs the model's tokenizer`);
      ids = model.tokenizer.encode(c.text!, { bos: true });
    }
    const windows = calibrationWindows(ids, { samples, seqlen, seed, layout: c.layout ?? "random" });
    for (const w of windows) {
      for (const id of w) {
        if (!(id >= 0 && id < spec.vocabSize)) {
          throw new OptionError(
            `soco: calibration token id ${id} is outside the vocabulary (${spec.vocabSize})`,
          );
        }
      }
    }

    // Bases, block by block on the original model's activations (whitened: their Gram matrices).
    const head = await loadHead(reader, spec);
    const bases: SpectralBasis[] = [];
    const kept: { inputNorm: Float32Array; postNorm: Float32Array; bias: Map<LinearName, Float32Array> }[] =
      [];
    const h = kind === "whitened" ? embedWindows(spec, head, windows) : undefined;
    const batchFwd = Math.max(1, Math.floor(1024 / seqlen));
    for (let i = 0; i < spec.numLayers; i++) {
      opts.signal?.throwIfAborted();
      const block = await loadBlock(reader, spec, i);
      const grams = new Map<LinearName, GramObserver>();
      if (h) {
        runBlock(spec, block, h, batchFwd, (lin, x) => {
          if (GROUP[lin] !== lin) return; // q/k/v and gate/up share one input
          let o = grams.get(lin);
          if (!o) {
            grams.set(lin, o = new GramObserver(linearPrefix(i, lin), x.cols, { precision: "float64" }));
          }
          o.addBatch(x);
        }, i < spec.numLayers - 1 ? "inplace" : "discard");
      }
      const chol = new Map<LinearName, CholeskyResult>();
      const bias = new Map<LinearName, Float32Array>();
      for (const l of LINEAR_NAMES) {
        const lin = block[BLOCK_FIELD[l]] as Linear;
        if (lin.kind !== "dense") {
          throw new OptionError(`soco: ${linearPrefix(i, l)} is already low-rank in the input`);
        }
        if (lin.bias) bias.set(l, lin.bias);
        if (!h) {
          bases.push(svdBasis(linearPrefix(i, l), lin.weight));
          continue;
        }
        let f = chol.get(GROUP[l]);
        if (!f) chol.set(GROUP[l], f = cholesky(grams.get(GROUP[l])!.gram(), { damping: "auto" }));
        bases.push(whitenedBasis(linearPrefix(i, l), lin.weight, { cholesky: f }));
      }
      kept.push({ inputNorm: block.inputNorm, postNorm: block.postNorm, bias });
      peak.sample();
      opts.onProgress?.({ stage: "bases", block: i, done: i + 1, total: spec.numLayers });
    }
    const tBases = performance.now();

    // Training on the model's own loss.
    const per = LINEAR_NAMES.length;
    let scores: readonly Float64Array[] = bases.map((b) => new Float64Array(b.rank).fill(1));
    const blockAt = (i: number): LlamaBlock => {
      const lin = (l: LinearName): Linear => {
        const j = i * per + LINEAR_NAMES.indexOf(l);
        return { kind: "dense", weight: spectralWeight(bases[j], scores[j]), bias: kept[i].bias.get(l) };
      };
      return {
        inputNorm: kept[i].inputNorm,
        q: lin("self_attn.q_proj"),
        k: lin("self_attn.k_proj"),
        v: lin("self_attn.v_proj"),
        o: lin("self_attn.o_proj"),
        postNorm: kept[i].postNorm,
        gate: lin("mlp.gate_proj"),
        up: lin("mlp.up_proj"),
        down: lin("mlp.down_proj"),
      };
    };
    const gm: GradModel = { spec, head, block: blockAt };
    const klWeight = opts.klWeight ?? 10;
    const reference: GradModel | undefined = klWeight > 0
      ? { spec, head, block: (i) => loadBlock(reader, spec, i) }
      : undefined;
    const batch = Math.min(opts.batch ?? 4, windows.length);
    const pick = batchPicker(windows.length, batch, seed);
    let resume: SocoState | undefined;
    if (opts.checkpoint) {
      const fs = await import("node:fs/promises");
      let text: string | undefined;
      try {
        text = await fs.readFile(opts.checkpoint, "utf8");
      } catch (e) {
        if ((e as { code?: string }).code !== "ENOENT") throw e;
      }
      if (text !== undefined) {
        resume = stateFromJson(
          text,
          bases.map((b) => b.rank),
          `checkpoint ${opts.checkpoint}`,
        );
      }
    }
    const saveCheckpoint = opts.checkpoint
      ? async (st: SocoState) => {
        const { writeFileAtomic } = await import("../io/atomic_write.ts");
        await writeFileAtomic(opts.checkpoint!, stateToJson(st), { overwrite: true });
      }
      : undefined;
    const trained = await trainSpectrum(async (s, grads, step) => {
      scores = s;
      const wins = pick(step).map((k) => windows[k]);
      const r = await lossAndGrad(gm, wins, {
        onLinearGrad: (layer, lin, x, dy) => {
          const j = layer * per + LINEAR_NAMES.indexOf(lin);
          addScoreGradient(bases[j], x, dy, grads[j]);
        },
        reference,
        klWeight: reference ? klWeight : undefined,
        nllWeight: opts.nllWeight,
        signal: opts.signal,
      });
      peak.sample();
      return r.loss;
    }, {
      linears,
      ranks: bases.map((b) => b.rank),
      budget: target,
      steps,
      lr,
      sparsity: opts.sparsity,
      resume,
      onCheckpoint: saveCheckpoint,
      checkpointEvery: opts.checkpointEvery,
      onProgress: (e) => opts.onProgress?.({ stage: "train", train: e }),
      signal: opts.signal,
    });
    const tTrain = performance.now();

    // Factors, and the model folder.
    const factors = new Map<string, Factors>();
    const ranks: Record<string, number> = {};
    bases.forEach((b, j) => {
      const s = trained.scores[j], keep = trained.keep[j];
      for (const i of keep) {
        if (!Number.isFinite(s[i])) {
          throw new NumericError(`soco: ${b.name} component ${i} has score ${s[i]}`);
        }
      }
      const f = spectralFactors(b, s, keep);
      ranks[b.name] = keep.length;
      factors.set(b.name, {
        ...f,
        report: {
          method: "soco",
          rank: keep.length,
          rows: b.rows,
          cols: b.cols,
          singularValues: b.sigma,
          energyKept: NaN,
          seconds: 0,
        },
      });
    });
    // The folder, through compress's output steps (GGUF q/k rows back to the Hugging Face layout).
    const plan = planOutput(reader, spec, ranks, { factorDtype: "F32", gguf });
    const writer = await createSafetensorsStreamWriter(await sink.file("model.safetensors"), plan.plan, {
      metadata: { format: "pt", svd_llm_method: "soco" },
      name: `${output}/model.safetensors`,
    });
    try {
      for (const name of plan.outside) await writer.write(name, await reader.read(name));
      for (let i = 0; i < spec.numLayers; i++) {
        const f = new Map<LinearName, Factors>();
        for (const l of LINEAR_NAMES) f.set(l, factors.get(linearPrefix(i, l))!);
        await writeBlockTensors(writer, reader, spec, i, plan.blocks[i], f, spec.ropeStyle === "interleaved");
        opts.onProgress?.({ stage: "write", done: i + 1, total: spec.numLayers });
      }
      await writer.close();
    } catch (e) {
      await writer.abort();
      throw e;
    }
    const shapes = names.map((name, j) => ({ name, rows: bases[j].rows, cols: bases[j].cols }));
    const params = summarizeParams(
      shapes.map((s) => layerParams(s.name, s.rows, s.cols, ranks[s.name])),
      reader.tensors()
        .filter((t) =>
          (!gguf || /^(model\.|lm_head\.)/.test(t.name)) && !(t.name.replace(/\.weight$/, "") in ranks)
        )
        .reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0),
    );
    const config = outputConfig(model.config, spec, gguf);
    config.svd_llm = {
      version: PIPELINE_VERSION,
      method: "soco",
      basis: kind,
      ratio: "removed" in opts.ratio
        ? { convention: "removed", value: opts.ratio.removed }
        : { convention: "kept", value: opts.ratio.kept },
      allocation: "learned",
      calibration: { samples, seqlen, tokens: ids.length, seed, layout: c.layout ?? "random" },
      soco: {
        steps,
        lr,
        batch,
        kl_weight: klWeight,
        nll_weight: opts.nllWeight ?? 1,
        recoveries: trained.state.recoveries,
        budget: target,
        kept: trained.params,
      },
      ranks,
      achieved: { linears_removed: params.linears.removed, model_removed: params.model.removed },
      source: model.name,
      date: new Date().toISOString(),
    };
    await writeWhole(sink, "config.json", JSON.stringify(config, null, 2) + "\n");
    if (inputPath && gguf) {
      const g = await openGguf(inputPath);
      try {
        await writeSideFiles(sink, { gguf: g.kv });
      } finally {
        await g.close();
      }
    } else if (inputPath) await writeSideFiles(sink, { files: folderSideFiles(inputPath) });
    await sink.commit();
    const tEnd = performance.now();
    return {
      output,
      method: "soco",
      basis: kind,
      ratio: opts.ratio,
      ratioLabel: describeRatio(opts.ratio),
      budget: { target, kept: trained.params },
      ranks,
      params,
      history: trained.history,
      spectra: bases.map((b, j) => ({
        name: b.name,
        rows: b.rows,
        cols: b.cols,
        sigma: b.sigma,
        scores: trained.scores[j],
      })),
      recoveries: trained.state.recoveries,
      seconds: {
        bases: (tBases - t0) / 1000,
        train: (tTrain - tBases) / 1000,
        write: (tEnd - tTrain) / 1000,
        total: (tEnd - t0) / 1000,
      },
      peakRssBytes: peak.peak(),
    };
  } catch (e) {
    await sink.abort();
    throw e;
  } finally {
    peak.stop();
  }
}
