/**
 * Perplexity in the papers' protocol, streamed block by block: the text is tokenized once (the caller puts one
 * BOS first), cut into consecutive non-overlapping windows of `window` tokens, each window evaluated on its
 * own from position 0 with no BOS re-inserted; a last partial window of at least 2 tokens counts. The mean NLL
 * is over every predicted position (a window of n tokens predicts n−1). No window is ever skipped: positions
 * whose NLL is not finite are counted and make the mean non-finite.
 *
 * Windows are batched so that each block is read once per batch, not once per window.
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import { forwardHidden, loadHead, type ModelWeights, type ProgressEvent, tokenNll } from "../model/llama.ts";

/** Options of {@link perplexity}. */
export interface PerplexityOptions {
  /** Tokens per window (the model's context for the papers' numbers). */
  window: number;
  /** Called as blocks are run: stage "perplexity", done/total in block passes. */
  onProgress?: (e: ProgressEvent) => void;
  /** Most tokens run through a block at once (default: about 64 MB of activations). */
  batchTokens?: number;
  /**
   * Leave out a last window shorter than `window` (default false: it counts when it has ≥ 2 tokens). The
   * SVD-LLM and ASVD reference code evaluates `numel // window` full windows only; set this to compare with
   * their tables.
   */
  dropPartial?: boolean;
}

/** What {@link perplexity} measured. */
export interface PerplexityResult {
  /** Tokens evaluated (ids.length minus a dropped last window). */
  tokens: number;
  /** Predicted positions the mean is over. */
  predicted: number;
  /** Mean negative log-likelihood per predicted token (natural log). */
  meanNll: number;
  /** exp(meanNll). */
  ppl: number;
  /** Windows evaluated. */
  windows: number;
  /** Predicted positions whose NLL was NaN or ±Inf. */
  nonFinite: number;
  /** Mean NLL of each window. */
  perWindow: Float64Array;
}

/** Options of {@link windowNll}. */
export interface WindowNllOptions {
  /** Progress in block passes, under this stage name. */
  onProgress?: (e: ProgressEvent) => void;
  /** Stage name for progress events (default "nll"). */
  stage?: string;
  /** Most tokens run through a block at once. */
  batchTokens?: number;
}

/** Default batch size in tokens: keep the largest activation (tokens×(2f + 4d) floats) near 64 MB. */
export function defaultBatchTokens(model: ModelWeights): number {
  const s = model.spec;
  return Math.max(1, Math.floor((16 << 20) / (2 * s.intermediateSize + 4 * s.hiddenSize)));
}

/**
 * Per-position NLL of arbitrary windows: window w is run from position 0 on `inputs[w]` and position t is scored
 * against `targets[w][t]` (a negative target: not scored, NaN). Inputs and targets of a window have equal
 * length. This is the building block of {@link perplexity} and of other protocols (such as a per-window-BOS
 * layout: input [BOS, w0..w(n−2)], targets [w0..w(n−1)]).
 */
export async function windowNll(
  model: ModelWeights,
  inputs: readonly Int32Array[],
  targets: readonly Int32Array[],
  opts: WindowNllOptions = {},
): Promise<Float64Array[]> {
  if (inputs.length !== targets.length) {
    throw new OptionError(`windowNll: ${inputs.length} inputs, ${targets.length} targets`);
  }
  for (let w = 0; w < inputs.length; w++) {
    if (inputs[w].length !== targets[w].length) {
      throw new OptionError(
        `windowNll: window ${w} has ${inputs[w].length} inputs and ${targets[w].length} targets`,
      );
    }
  }
  const budget = opts.batchTokens ?? defaultBatchTokens(model);
  // batches of equal-length windows, in order
  const batches: number[][] = [];
  for (let w = 0; w < inputs.length; w++) {
    const last = batches[batches.length - 1];
    const len = inputs[w].length;
    if (last && inputs[last[0]].length === len && (last.length + 1) * len <= budget) last.push(w);
    else batches.push([w]);
  }
  const head = await loadHead(model.reader, model.spec);
  const total = batches.length * model.spec.numLayers;
  let done = 0;
  const out: Float64Array[] = new Array(inputs.length);
  opts.onProgress?.({ stage: opts.stage ?? "nll", done, total });
  for (const batch of batches) {
    const seq = inputs[batch[0]].length;
    const h = await forwardHidden(model, batch.map((w) => inputs[w]), {
      onBlock: () => opts.onProgress?.({ stage: opts.stage ?? "nll", done: ++done, total }),
    });
    const tg = new Int32Array(batch.length * seq);
    batch.forEach((w, b) => tg.set(targets[w], b * seq));
    const nll = tokenNll(model.spec, head, h, tg);
    batch.forEach((w, b) => (out[w] = nll.slice(b * seq, (b + 1) * seq)));
  }
  return out;
}

/**
 * Perplexity of `tokenIds` (tokenized once, one BOS first, added by the caller; an Int32Array or any array of
 * integers) in consecutive windows of `window` tokens.
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "../model/load.ts";
 * import { perplexity } from "./perplexity.ts";
 * const m = await loadModel("models/stories260K/stories260K.gguf");
 * const ids = m.tokenizer.encode(text, { bos: true });
 * const r = await perplexity(m, ids, { window: 512 }); // { tokens: 5148, ppl: 5.3885, ... }
 * ```
 */
export async function perplexity(
  model: ModelWeights,
  tokenIds: Int32Array | ArrayLike<number>,
  opts: PerplexityOptions,
): Promise<PerplexityResult> {
  const ids = asTokenIds(tokenIds, "perplexity");
  const n = opts.window;
  if (!Number.isInteger(n) || n < 2) {
    throw new OptionError(`perplexity: window must be an integer ≥ 2, got ${n}`);
  }
  if (n > model.spec.maxPositions) {
    throw new OptionError(
      `perplexity: window ${n} exceeds the model's context (${model.spec.maxPositions} positions)`,
    );
  }
  const inputs: Int32Array[] = [], targets: Int32Array[] = [];
  for (let s = 0; s < ids.length; s += n) {
    const w = ids.subarray(s, Math.min(s + n, ids.length));
    if (w.length < 2 || (opts.dropPartial && w.length < n)) break;
    const t = new Int32Array(w.length).fill(-1);
    t.set(w.subarray(1));
    inputs.push(w);
    targets.push(t);
  }
  if (inputs.length === 0) {
    throw new OptionError(
      `perplexity: need at least ${opts.dropPartial ? n : 2} tokens, got ${ids.length}`,
    );
  }
  const nll = await windowNll(model, inputs, targets, {
    onProgress: opts.onProgress,
    stage: "perplexity",
    batchTokens: opts.batchTokens,
  });
  let sum = 0, count = 0, nonFinite = 0, tokens = 0;
  const perWindow = new Float64Array(inputs.length);
  nll.forEach((v, w) => {
    let ws = 0;
    for (let t = 0; t < v.length - 1; t++) {
      if (!Number.isFinite(v[t])) nonFinite++;
      ws += v[t];
    }
    perWindow[w] = ws / (v.length - 1);
    sum += ws;
    count += v.length - 1;
    tokens += v.length;
  });
  const meanNll = sum / count;
  return {
    tokens,
    predicted: count,
    meanNll,
    ppl: Math.exp(meanNll),
    windows: inputs.length,
    nonFinite,
    perWindow,
  };
}

/** `ids` as an Int32Array (itself when it is one); OptionError naming `action` on a value that is no integer. */
function asTokenIds(ids: Int32Array | ArrayLike<number>, action: string): Int32Array {
  if (ids instanceof Int32Array) return ids;
  const out = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i];
    if (!Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31) {
      throw new OptionError(`${action}: token id ${JSON.stringify(v)} at position ${i} is not an integer`);
    }
    out[i] = v;
  }
  return out;
}
