/**
 * What truncating each linear costs, measured on the layer itself instead of through the whole model: one
 * streamed pass over the calibration windows (the original model's activations, block by block, as ASVD's
 * sweep uses them) records every linear's inputs as a mean Gram matrix G and per-channel mean |x|, and turns
 * them at once into per-component losses — the exact mean squared output error each dropped component adds:
 *
 * - svd: c_j = σ_j²·v_jᵀ G v_j (W = U Σ Vᵀ), or σ_j² (the weight's own error) without calibration windows;
 * - asvd: c_j = σ_j²·ṽ_jᵀ G ṽ_j, ṽ_j = S⁻¹ v_j (W·S = U Σ Vᵀ);
 * - svdllm: c_j = σ_j(W L)², the eigenvalues of W G Wᵀ (SVD-LLM's loss is exactly this tail).
 *
 * Only these r numbers per linear are kept (for tinylm-brown 42 × ≤ 256 floats); the block, its statistics
 * and the spectra are dropped before the next block is read, so memory stays near one block plus the
 * calibration stream — less than the compression pass that follows. The losses become loss curves for
 * {@link allocateRanks} (`methods/allocation.ts`): ranks are then chosen across all linears under one budget.
 *
 * @module
 */
import { AbsMeanObserver } from "../calib/abs_mean.ts";
import { GramObserver } from "../calib/gram.ts";
import { NumericError, OptionError } from "../errors.ts";
import type { TensorReader } from "../io/tensor_reader.ts";
import type { Matrix, Matrix64 } from "../linalg/matrix.ts";
import { svdPart } from "../linalg/svd.ts";
import type { LossCurve } from "../methods/allocation.ts";
import { asvdComponentLosses, asvdSpectrum } from "../methods/asvd.ts";
import { asvdFisherLosses, OutputFisherObserver } from "../methods/asvd_fisher.ts";
import { lossAndGrad } from "../model/backward.ts";
import { whitenedComponentLosses } from "../methods/svdllm.ts";
import { BLOCK_FIELD, type Linear, loadBlock, loadHead } from "../model/llama.ts";
import { LINEAR_NAMES, type LinearName, linearPrefix } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import { INPUT_GROUP } from "./block_step.ts";
import { embedWindows, runBlock } from "./hidden.ts";
import { findMemoryTrimmer } from "./memory.ts";

/** Options of {@link truncationLosses}. */
export interface TruncationLossOptions {
  /** Whose truncation: plain SVD, ASVD (with `alpha`) or SVD-LLM's whitened one. */
  method: "svd" | "asvd" | "svdllm";
  /** ASVD α (default 0.5). */
  alpha?: number;
  /** Linears to measure (default all seven). */
  linears?: readonly LinearName[];
  /** Windows per forward batch (default 8). */
  batchSize?: number;
  /** Progress: linears done out of all. */
  onProgress?: (e: { layer?: string; done: number; total: number }) => void;
}

/** One linear's per-component losses. */
export interface LinearLosses {
  /** Tensor prefix, e.g. "model.layers.0.mlp.up_proj". */
  name: string;
  /** Output features m. */
  rows: number;
  /** Input features n. */
  cols: number;
  /**
   * c_j, the mean squared output error per token that dropping component j adds, in the method's order of
   * truncation (length min(m, n)); their sum is the layer's mean output energy tr(W G Wᵀ).
   */
  components: Float64Array;
}

/** The linear that first sees each input in a block's forward pass (the linears reading it share its statistics). */
const FIRST_OF_INPUT: ReadonlySet<LinearName> = new Set(
  LINEAR_NAMES.filter((l, i) => LINEAR_NAMES.findIndex((m) => INPUT_GROUP[m] === INPUT_GROUP[l]) === i),
);

/**
 * Per-component truncation losses of every listed linear of the model, from one streamed pass over `windows`
 * (≥ 1 window of ≥ 2 tokens, equal lengths). Throws OptionError on bad windows or an already low-rank linear,
 * NumericError on non-finite activations.
 */
export async function truncationLosses(
  model: { spec: LlamaSpec; reader: TensorReader },
  windows: readonly Int32Array[] | undefined,
  opts: TruncationLossOptions,
): Promise<LinearLosses[]> {
  if (!windows && opts.method === "svd") return weightLosses(model, opts.linears ?? LINEAR_NAMES);
  const alpha = opts.method === "svd" ? 0 : opts.alpha ?? 0.5;
  const out: LinearLosses[] = [];
  await observeLinears(model, windows, opts, opts.method !== "svdllm", (name, w, stats) => {
    const components = opts.method === "svdllm"
      ? whitenedComponentLosses(w, stats.gram)
      : asvdComponentLosses(w, { absMean: stats.absMean! }, stats.gram, { alpha });
    out.push({ name, rows: w.rows, cols: w.cols, components });
  });
  return out;
}

/** One linear's input statistics from the streamed pass. */
interface InputStats {
  /** Mean Gram of the inputs, in×in. */
  gram: Matrix64;
  /** Mean |x_j| per input channel, when asked. */
  absMean?: Float64Array;
}

/**
 * The streamed calibration pass shared by the loss estimates: block by block over the original model's
 * activations, each input's mean Gram (and mean |x|) once per block, then `visit` for every listed linear
 * before the next block is read. Progress is reported after each visit.
 */
async function observeLinears(
  model: { spec: LlamaSpec; reader: TensorReader },
  windows: readonly Int32Array[] | undefined,
  opts: {
    linears?: readonly LinearName[];
    batchSize?: number;
    onProgress?: TruncationLossOptions["onProgress"];
  },
  absMean: boolean,
  visit: (name: string, w: Matrix, stats: InputStats) => void,
): Promise<void> {
  const { spec, reader } = model;
  if (!windows || windows.length < 1 || windows[0].length < 2) {
    throw new OptionError(`truncation losses: needs at least one calibration window of 2 tokens or more`);
  }
  const linears = opts.linears ?? LINEAR_NAMES;
  const batch = opts.batchSize ?? 8;
  let h = embedWindows(spec, (await loadHead(reader, spec)).embed, windows);
  let done = 0;
  for (let i = 0; i < spec.numLayers; i++) {
    const block = await loadBlock(reader, spec, i);
    const abs = new Map<string, AbsMeanObserver>(), gram = new Map<string, GramObserver>();
    const wanted = new Set(linears.map((l) => INPUT_GROUP[l]));
    h = runBlock(spec, block, h, batch, (linear: LinearName, x: Matrix) => {
      const g = INPUT_GROUP[linear];
      // q/k/v (gate/up) see the same input: observe it once, at the first of them.
      if (!wanted.has(g) || !FIRST_OF_INPUT.has(linear)) return;
      let o = gram.get(g);
      if (!o) {
        gram.set(g, o = new GramObserver(linearPrefix(i, linear), x.cols));
        if (absMean) abs.set(g, new AbsMeanObserver(linearPrefix(i, linear), x.cols));
      }
      o.addBatch(x);
      abs.get(g)?.addBatch(x);
    }, i < spec.numLayers - 1 ? "inplace" : "discard");
    const grams = new Map<string, Matrix64>();
    for (const l of linears) {
      const lin = block[BLOCK_FIELD[l]] as Linear;
      const name = linearPrefix(i, l);
      if (lin.kind !== "dense") throw new OptionError(`truncation losses: ${name} is already low-rank`);
      const g = INPUT_GROUP[l];
      if (!grams.has(g)) grams.set(g, gram.get(g)!.gram());
      visit(name, lin.weight, { gram: grams.get(g)!, absMean: abs.get(g)?.mean() });
      // After every linear: a caller collecting garbage on progress (compress does) frees its spectra now.
      opts.onProgress?.({ layer: name, done: ++done, total: spec.numLayers * linears.length });
    }
  }
}

/** Options of {@link fisherLosses}. */
export interface FisherLossOptions {
  /** ASVD α (default 0.5). */
  alpha?: number;
  /** Linears to measure (default all seven). */
  linears?: readonly LinearName[];
  /** Windows per forward batch of the statistics pass (default 8). */
  batchSize?: number;
  /** How many of the windows the gradient pass uses (default {@link FISHER_WINDOWS}). */
  gradSamples?: number;
  /** Windows per backward pass (default 1: its memory grows with it). */
  gradWindows?: number;
  /** Checked between backward passes. */
  signal?: AbortSignal;
  /** Progress: blocks of the gradient pass done, then linears done (the caller's memory hooks run here). */
  onProgress?: (e: { layer?: string; done: number; total: number }) => void;
}

/**
 * Windows of the gradient pass by default. On tinylm-brown (32 × 256 calibration windows, 25 % removed) 4
 * windows gave ppl 120.60 in 23.1 CPU-s for the whole run, 8 windows 120.66 in 32.4 CPU-s (7 of 42 ranks
 * differ between them, by a few each).
 */
export const FISHER_WINDOWS = 4;

/**
 * ASVD's per-component truncation losses in the model's own units: the calibration NLL (nats per token) that
 * dropping each component is estimated to add, to second order (see `methods/asvd_fisher.ts`). First the
 * gradient pass: backward passes over the first `gradSamples` windows, `gradWindows` at a time, keeping per
 * linear only the Fisher diagonal of its output channels; then the streamed statistics pass of
 * {@link truncationLosses} (ASVD's scale, the inputs' Gram, one spectrum per linear, dropped before the next
 * block). Throws like {@link truncationLosses}, OptionError on bad gradient options, NumericError when a
 * backward pass's loss is not finite.
 */
export async function fisherLosses(
  model: { spec: LlamaSpec; reader: TensorReader },
  windows: readonly Int32Array[] | undefined,
  opts: FisherLossOptions = {},
): Promise<LinearLosses[]> {
  const { spec, reader } = model;
  const per = opts.gradWindows ?? 1, samples = opts.gradSamples ?? FISHER_WINDOWS;
  for (const [k, v] of [["gradWindows", per], ["gradSamples", samples]] as const) {
    if (!Number.isInteger(v) || v < 1) {
      throw new OptionError(`fisher losses: ${k} must be a positive integer, got ${v}`);
    }
  }
  if (!windows || windows.length < 1 || windows[0].length < 2) {
    throw new OptionError(`fisher losses: needs at least one calibration window of 2 tokens or more`);
  }
  const alpha = opts.alpha ?? 0.5;
  const linears = new Set(opts.linears ?? LINEAR_NAMES);
  const used = windows.slice(0, samples), passes = Math.ceil(used.length / per);
  // Progress (and so the caller's memory hooks) after every block the gradient pass fetches (forward, then
  // backward): left to pile up, the passes' temporaries raised tinylm-brown's peak from 160 to 215 MiB
  // (203 MiB with hooks in the backward half only); the collections cost 10 CPU-s with 8 windows (35 against
  // 25), about half that with the default 4.
  const steps = passes * 2 * spec.numLayers, total = steps + spec.numLayers * linears.size;
  const fisher = new Map<string, OutputFisherObserver>();
  {
    const head = await loadHead(reader, spec);
    let step = 0;
    const grad = {
      spec,
      head,
      block: (i: number) => {
        if (step % (2 * spec.numLayers) !== 0) opts.onProgress?.({ done: step, total });
        step++;
        return loadBlock(reader, spec, i);
      },
    };
    for (let b = 0; b < passes; b++) {
      opts.signal?.throwIfAborted();
      const batch = used.slice(b * per, (b + 1) * per);
      const predicted = batch.length * (batch[0].length - 1);
      const r = await lossAndGrad(grad, batch, {
        signal: opts.signal,
        onLinearGrad: (layer, lin, _x, dy) => {
          if (!linears.has(lin)) return;
          const name = linearPrefix(layer, lin);
          let o = fisher.get(name);
          if (!o) fisher.set(name, o = new OutputFisherObserver(name, dy.cols));
          o.addBatch(dy, predicted);
        },
      });
      if (!Number.isFinite(r.loss)) {
        throw new NumericError(`fisher losses: the calibration loss of windows ${b * per}… is ${r.loss}`);
      }
      opts.onProgress?.({ done: step, total });
    }
  }
  // Hand the freed pages back (malloc_trim and the wasm pool's free pages; Deno on Linux, a no-op elsewhere)
  // after the gradient pass, after each linear of the statistics pass (its spectrum's temporaries) and at
  // the end. The compression run's own policy never trims on blocks this small, so without these the stage's
  // heap holes stayed resident under the compression pass: on tinylm-brown the whole run peaked at 160.8 MiB
  // in the compression pass (144.5 after uniform ranks); with them the stage ends at ~115 MiB, below where
  // the compression pass begins, and the run peaks at 150–153 MiB in the compression pass.
  const trim = findMemoryTrimmer();
  trim?.(); // the last pass's progress above ran the caller's collection, so the trim finds the holes
  const out: LinearLosses[] = [];
  const progress = (e: { layer?: string; done: number }) => {
    opts.onProgress?.({ ...e, done: steps + e.done, total });
    trim?.();
  };
  // Two windows per forward batch: the statistics pass's temporaries set the stage's peak.
  const batchSize = Math.min(opts.batchSize ?? 8, 2);
  await observeLinears(
    model,
    windows,
    { ...opts, batchSize, onProgress: progress },
    true,
    (name, w, stats) => {
      const sp = asvdSpectrum(w, { absMean: stats.absMean! }, { alpha });
      const components = asvdFisherLosses(sp, stats.gram, fisher.get(name)!.diagonal());
      out.push({ name, rows: w.rows, cols: w.cols, components });
    },
  );
  // The pass's calibration stream (8 MiB on tinylm-brown) is garbage only now: one more progress event runs
  // the caller's collection before the compression pass allocates its own stream, then the trim.
  opts.onProgress?.({ done: total, total });
  trim?.();
  return out;
}

/** Plain SVD without calibration data: c_j = σ_j(W)², the Frobenius error of each dropped component. */
async function weightLosses(
  model: { spec: LlamaSpec; reader: TensorReader },
  linears: readonly LinearName[],
): Promise<LinearLosses[]> {
  const out: LinearLosses[] = [];
  for (let i = 0; i < model.spec.numLayers; i++) {
    const block = await loadBlock(model.reader, model.spec, i);
    for (const l of linears) {
      const lin = block[BLOCK_FIELD[l]] as Linear, name = linearPrefix(i, l);
      if (lin.kind !== "dense") throw new OptionError(`truncation losses: ${name} is already low-rank`);
      const { s } = svdPart(lin.weight);
      out.push({ name, rows: lin.weight.rows, cols: lin.weight.cols, components: s.map((v) => v * v) });
    }
  }
  return out;
}

/**
 * Loss curves for {@link allocateRanks} from per-component losses: the loss at rank k is the tail
 * Σ_{j ≥ k} c_j, divided by the layer's output energy Σ_j c_j when `relative` (the fraction of the layer's
 * output lost, comparable across layers of different scales).
 */
export function lossCurves(losses: readonly LinearLosses[], { relative = false } = {}): LossCurve[] {
  return losses.map((l) => {
    const c = l.components, loss = new Float64Array(c.length);
    let total = 0;
    for (const v of c) total += v;
    const norm = relative && total > 0 ? total : 1;
    let t = 0;
    for (let k = c.length - 1; k >= 0; k--) {
      loss[k] = t / norm; // rank k + 1 drops components k + 1 …
      t += c[k];
    }
    return { name: l.name, rows: l.rows, cols: l.cols, loss };
  });
}

/**
 * Loss curves in the model's own units: each linear's relative output-error curve (see {@link lossCurves})
 * scaled so that at one measured rank it equals the calibration NLL that rank added to the whole model
 * (`measured[name] = { rank, nll }`, nll = log(ppl / dense ppl), e.g. from a one-ratio sensitivity sweep).
 * The layer's own output error says how the loss grows with the rank; one end-to-end point says how much
 * the model cares about this layer. A measured increase at or below 0 (noise on an insensitive layer) is
 * floored at `floor` times the median of the positive gains, so no layer looks free to cut to rank 1.
 * Throws OptionError when a linear has no measurement.
 */
export function calibratedCurves(
  losses: readonly LinearLosses[],
  measured: Readonly<Record<string, { rank: number; nll: number }>>,
  { floor = 0.1 } = {},
): LossCurve[] {
  const rel = lossCurves(losses, { relative: true });
  const gains = rel.map((c) => {
    const m = measured[c.name];
    if (!m) throw new OptionError(`calibrated losses: no end-to-end measurement for ${c.name}`);
    const at = c.loss[Math.min(m.rank, c.loss.length) - 1];
    return at > 0 && m.nll > 0 ? m.nll / at : 0;
  });
  const positive = gains.filter((g) => g > 0).sort((a, b) => a - b);
  const least = positive.length ? floor * positive[positive.length >> 1] : 1;
  return rel.map((c, i) => ({ ...c, loss: Float64Array.from(c.loss, (v) => v * Math.max(gains[i], least)) }));
}
