/**
 * ASVD's KV-cache mode: compress only k_proj and v_proj, and cache the rank-k latent B·x of each token
 * instead of its full keys and values. K is rebuilt as A·latent when attending; RoPE must then be applied to
 * the rebuilt K (not to the latent), since rotation does not commute with A.
 *
 * Here the ratio means the fraction of the cache kept: a k/v projection with kv = kvHeads·headDim outputs
 * gets rank k = floor(kv·kept), whatever that does to the parameter count (a cache-saving rank may store
 * more weights than the dense projection; that is not refused in this mode).
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import type { LinearName } from "../model/names.ts";
import { linearPrefix } from "../model/names.ts";

/** The linears compressed in KV-cache mode. */
export const KV_LINEARS: readonly LinearName[] = Object.freeze(
  ["self_attn.k_proj", "self_attn.v_proj"] as const,
);

/** Rank of a k or v projection with `kvDim` outputs keeping the fraction `kept` of its cache. */
export function kvRank(kvDim: number, kept: number): number {
  if (!(kept > 0 && kept < 1)) {
    throw new OptionError(`kv cache: kept fraction must be in (0, 1), got ${kept}`);
  }
  const k = Math.floor(kvDim * kept);
  if (k < 1) throw new OptionError(`kv cache: keeping ${kept} of ${kvDim} values per token leaves rank 0`);
  return k;
}

/** Cache accounting of one block. */
export interface KvCacheLayer {
  /** Block index. */
  block: number;
  /** Values cached per token without compression: 2·kvDim (K and V). */
  fullValues: number;
  /** Values cached per token with latents: rank(k) + rank(v) (a dense projection caches kvDim). */
  latentValues: number;
}

/** Cache size per token, before and after. */
export interface KvCacheReport {
  /** Per block. */
  layers: KvCacheLayer[];
  /** Bytes per cached value (2 for fp16 caches). */
  bytesPerValue: number;
  /** Bytes per token over all blocks, full K/V. */
  fullBytesPerToken: number;
  /** Bytes per token over all blocks, latents. */
  latentBytesPerToken: number;
  /** Fraction of the cache saved: 1 − latent/full. */
  saved: number;
}

/**
 * Bytes of KV cache per token, full versus latent, for the `ranks` chosen (keyed by tensor prefix, e.g.
 * "model.layers.0.self_attn.k_proj"; null or absent = dense).
 */
export function kvCacheSavings(
  spec: { numLayers: number; numKvHeads: number; headDim: number },
  ranks: Readonly<Record<string, number | null>>,
  bytesPerValue = 2,
): KvCacheReport {
  const kvDim = spec.numKvHeads * spec.headDim;
  const layers: KvCacheLayer[] = [];
  let full = 0, latent = 0;
  for (let i = 0; i < spec.numLayers; i++) {
    const rk = ranks[linearPrefix(i, "self_attn.k_proj")] ?? null;
    const rv = ranks[linearPrefix(i, "self_attn.v_proj")] ?? null;
    const l = { block: i, fullValues: 2 * kvDim, latentValues: (rk ?? kvDim) + (rv ?? kvDim) };
    layers.push(l);
    full += l.fullValues;
    latent += l.latentValues;
  }
  return {
    layers,
    bytesPerValue,
    fullBytesPerToken: full * bytesPerValue,
    latentBytesPerToken: latent * bytesPerValue,
    saved: full > 0 ? 1 - latent / full : 0,
  };
}
