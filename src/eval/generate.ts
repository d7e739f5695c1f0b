/**
 * Greedy generation with a key/value cache, and next-token logits. All blocks are held in memory: meant for
 * small models (demos, tests, checking a compressed model still talks).
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import {
  embed,
  finalLogits,
  forwardBlockCached,
  forwardHidden,
  type LayerCache,
  type LlamaBlock,
  loadBlock,
  loadHead,
  type ModelWeights,
  newLayerCache,
} from "../model/llama.ts";

/** Options of {@link generate}. */
export interface GenerateOptions {
  /** Stop after emitting the EOS id (default true). */
  stopAtEos?: boolean;
  /** Called with each new token as it is chosen. */
  onToken?: (id: number) => void;
  /**
   * What the key/value cache holds: "full" keys and values (default), or "latent": the rank-r latents of
   * low-rank k/v projections (ASVD's KV-cache mode; same tokens, smaller cache).
   */
  kvCache?: "full" | "latent";
  /** Called once at the end with the floats the caches hold per token, summed over layers. */
  onCacheSize?: (floatsPerToken: number) => void;
}

function argmax(a: Float32Array, off: number, n: number): number {
  let best = 0, bv = -Infinity;
  for (let j = 0; j < n; j++) {
    if (a[off + j] > bv) {
      bv = a[off + j];
      best = j;
    }
  }
  return best;
}

/**
 * Greedy decoding: the prompt is run once, then one token at a time through the cached keys/values.
 * Returns the new tokens only (at most `maxNew`; fewer if EOS comes first).
 *
 * @example
 * ```ts ignore
 * const m = await loadModel("models/stories260K/stories260K.gguf");
 * const ids = await generate(m, m.tokenizer.encode("Once upon a time", { bos: true }), 20);
 * console.log(m.tokenizer.decode(ids));
 * ```
 */
export async function generate(
  model: ModelWeights,
  promptIds: Int32Array,
  maxNew: number,
  opts: GenerateOptions = {},
): Promise<Int32Array> {
  const { spec, reader } = model;
  if (promptIds.length === 0) {
    throw new OptionError("generate: the prompt must hold at least one token (e.g. BOS)");
  }
  const capacity = Math.min(spec.maxPositions, promptIds.length + maxNew);
  if (promptIds.length >= spec.maxPositions) {
    throw new OptionError(
      `generate: prompt of ${promptIds.length} tokens fills the context (${spec.maxPositions})`,
    );
  }
  const head = await loadHead(reader, spec);
  const blocks: LlamaBlock[] = [];
  for (let i = 0; i < spec.numLayers; i++) blocks.push(await loadBlock(reader, spec, i));
  const caches: LayerCache[] = blocks.map((b) => newLayerCache(spec, capacity, opts.kvCache ?? "full", b));
  const out: number[] = [];
  let input = promptIds;
  while (out.length < maxNew && caches[0].length + input.length <= capacity) {
    let x = embed(head, spec, [input]);
    for (let i = 0; i < blocks.length; i++) x = forwardBlockCached(spec, blocks[i], x, caches[i]);
    const last = { rows: 1, cols: x.cols, data: x.data.subarray((x.rows - 1) * x.cols) };
    const logits = finalLogits(spec, head, last);
    const next = argmax(logits.data, 0, spec.vocabSize);
    out.push(next);
    opts.onToken?.(next);
    if (next === spec.eosTokenId && opts.stopAtEos !== false) break;
    input = Int32Array.of(next);
  }
  opts.onCacheSize?.(caches.reduce((s, c) => s + c.kWidth + c.vWidth, 0));
  return Int32Array.from(out);
}

/** Logits (vocab) of the token after `ids`, by a full forward pass of the window (no cache). */
export async function nextTokenLogits(model: ModelWeights, ids: Int32Array): Promise<Float32Array> {
  const h = await forwardHidden(model, [ids]);
  const d = h.cols;
  return finalLogits(model.spec, await loadHead(model.reader, model.spec), {
    rows: 1,
    cols: d,
    data: h.data.subarray((h.rows - 1) * d),
  }).data;
}
