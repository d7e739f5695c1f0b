/**
 * KL divergence of a model from a reference, KL(ref ‖ model), averaged over every position of the same
 * windows (the same cut as perplexity: consecutive windows of `window` tokens). The measure of how far a
 * compressed model's next-token distributions drift from the original's, independent of the text's own
 * entropy. Both models are streamed block by block.
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import {
  finalLogits,
  forwardHidden,
  loadHead,
  logSumExp,
  type ModelWeights,
  type ProgressEvent,
} from "../model/llama.ts";
import { defaultBatchTokens } from "./perplexity.ts";

/** Options of {@link klDivergence}. */
export interface KlOptions {
  /** Tokens per window. */
  window: number;
  /** Progress in block passes of both models (stage "kl"). */
  onProgress?: (e: ProgressEvent) => void;
  /** Most tokens run through a block at once. */
  batchTokens?: number;
}

/** What {@link klDivergence} measured. */
export interface KlResult {
  /** Mean KL(ref ‖ model) in nats per position. */
  meanKl: number;
  /** Largest KL at one position. */
  maxKl: number;
  /** Positions averaged over. */
  positions: number;
  /** Positions whose KL was not finite (included in the mean, which is then not finite). */
  nonFinite: number;
}

/**
 * Mean KL(ref ‖ model) over all positions of consecutive windows of `ids`. The two models must share the
 * vocabulary.
 */
export async function klDivergence(
  ref: ModelWeights,
  model: ModelWeights,
  ids: Int32Array,
  opts: KlOptions,
): Promise<KlResult> {
  const V = ref.spec.vocabSize;
  if (model.spec.vocabSize !== V) {
    throw new OptionError(`kl: vocabularies differ (${V} and ${model.spec.vocabSize})`);
  }
  const n = opts.window;
  if (!Number.isInteger(n) || n < 1) throw new OptionError(`kl: window must be a positive integer, got ${n}`);
  const windows: Int32Array[] = [];
  for (let s = 0; s < ids.length; s += n) windows.push(ids.subarray(s, Math.min(s + n, ids.length)));
  const budget = opts.batchTokens ?? Math.min(defaultBatchTokens(ref), defaultBatchTokens(model));
  const batches: Int32Array[][] = [];
  for (const w of windows) {
    const last = batches[batches.length - 1];
    if (last && last[0].length === w.length && (last.length + 1) * w.length <= budget) last.push(w);
    else batches.push([w]);
  }
  const [hr, hm] = [await loadHead(ref.reader, ref.spec), await loadHead(model.reader, model.spec)];
  const total = batches.length * (ref.spec.numLayers + model.spec.numLayers);
  let done = 0, sum = 0, max = 0, positions = 0, nonFinite = 0;
  const tick = () => opts.onProgress?.({ stage: "kl", done: ++done, total });
  for (const batch of batches) {
    const a = await forwardHidden(ref, batch, { onBlock: tick });
    const b = await forwardHidden(model, batch, { onBlock: tick });
    const d = a.cols, step = Math.max(1, Math.floor((1 << 21) / V));
    for (let r0 = 0; r0 < a.rows; r0 += step) {
      const rows = Math.min(step, a.rows - r0);
      const la = finalLogits(ref.spec, hr, { rows, cols: d, data: a.data.subarray(r0 * d, (r0 + rows) * d) });
      const lb = finalLogits(model.spec, hm, {
        rows,
        cols: d,
        data: b.data.subarray(r0 * b.cols, (r0 + rows) * b.cols),
      });
      for (let i = 0; i < rows; i++) {
        const za = logSumExp(la.data, i * V, V), zb = logSumExp(lb.data, i * V, V);
        let kl = 0;
        for (let j = 0; j < V; j++) {
          const lpa = la.data[i * V + j] - za;
          const p = Math.exp(lpa);
          if (p > 0) kl += p * (lpa - (lb.data[i * V + j] - zb));
        }
        if (!Number.isFinite(kl)) nonFinite++;
        else if (kl > max) max = kl;
        sum += kl;
        positions++;
      }
    }
  }
  return { meanKl: sum / positions, maxKl: max, positions, nonFinite };
}
