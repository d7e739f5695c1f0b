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
import { OptionError } from "../errors.ts";
import type { TensorReader } from "../io/tensor_reader.ts";
import type { Matrix } from "../linalg/matrix.ts";
import { svdPart } from "../linalg/svd.ts";
import type { LossCurve } from "../methods/allocation.ts";
import { asvdComponentLosses } from "../methods/asvd.ts";
import { whitenedComponentLosses } from "../methods/svdllm.ts";
import { BLOCK_FIELD, type Linear, loadBlock, loadHead } from "../model/llama.ts";
import { LINEAR_NAMES, type LinearName, linearPrefix } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import { embedWindows, runBlock } from "./hidden.ts";

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

/** Linears reading the same input share its statistics. */
const INPUT: Readonly<Record<LinearName, string>> = {
  "self_attn.q_proj": "attn",
  "self_attn.k_proj": "attn",
  "self_attn.v_proj": "attn",
  "self_attn.o_proj": "o",
  "mlp.gate_proj": "mlp",
  "mlp.up_proj": "mlp",
  "mlp.down_proj": "down",
};

/** The linear that first sees each input in a block's forward pass. */
const FIRST_OF_INPUT: ReadonlySet<LinearName> = new Set<LinearName>([
  "self_attn.q_proj",
  "self_attn.o_proj",
  "mlp.gate_proj",
  "mlp.down_proj",
]);

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
  const { spec, reader } = model;
  if (!windows && opts.method === "svd") return weightLosses(model, opts.linears ?? LINEAR_NAMES);
  if (!windows || windows.length < 1 || windows[0].length < 2) {
    throw new OptionError(`truncation losses: needs at least one calibration window of 2 tokens or more`);
  }
  const linears = opts.linears ?? LINEAR_NAMES;
  const batch = opts.batchSize ?? 8;
  const alpha = opts.method === "svd" ? 0 : opts.alpha ?? 0.5;
  let h = embedWindows(spec, (await loadHead(reader, spec)).embed, windows);
  const out: LinearLosses[] = [];
  for (let i = 0; i < spec.numLayers; i++) {
    const block = await loadBlock(reader, spec, i);
    const abs = new Map<string, AbsMeanObserver>(), gram = new Map<string, GramObserver>();
    const wanted = new Set(linears.map((l) => INPUT[l]));
    h = runBlock(spec, block, h, batch, (linear: LinearName, x: Matrix) => {
      const g = INPUT[linear];
      // q/k/v (gate/up) see the same input: observe it once, at the first of them.
      if (!wanted.has(g) || !FIRST_OF_INPUT.has(linear)) return;
      let o = gram.get(g);
      if (!o) {
        gram.set(g, o = new GramObserver(linearPrefix(i, linear), x.cols));
        if (opts.method !== "svdllm") abs.set(g, new AbsMeanObserver(linearPrefix(i, linear), x.cols));
      }
      o.addBatch(x);
      abs.get(g)?.addBatch(x);
    }, i < spec.numLayers - 1 ? "inplace" : "discard");
    for (const l of linears) {
      const lin = block[BLOCK_FIELD[l]] as Linear;
      const name = linearPrefix(i, l);
      if (lin.kind !== "dense") throw new OptionError(`truncation losses: ${name} is already low-rank`);
      const g = gram.get(INPUT[l])!.gram();
      const components = opts.method === "svdllm"
        ? whitenedComponentLosses(lin.weight, g)
        : asvdComponentLosses(lin.weight, { absMean: abs.get(INPUT[l])!.mean() }, g, { alpha });
      out.push({ name, rows: lin.weight.rows, cols: lin.weight.cols, components });
      // After every linear: a caller collecting garbage on progress (compress does) frees its spectra now.
      opts.onProgress?.({ layer: name, done: out.length, total: spec.numLayers * linears.length });
    }
  }
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
