/**
 * Compression ratios and ranks, with both conventions spelled out so they cannot be confused:
 * `{ removed: r }` is SVD-LLM's compression ratio (fraction of a linear's parameters removed) and
 * `{ kept: p }` is ASVD's parameter ratio (fraction kept). A rank-k factorisation of an m×n weight stores
 * k·(m+n) values, so the rank for a kept fraction p is k = floor(m·n·p/(m+n)); it saves anything only while
 * k < m·n/(m+n).
 *
 * @module
 */
import { OptionError } from "../errors.ts";

/** A compression target in one unambiguous convention: fraction of parameters removed or kept. */
export type Ratio = { removed: number } | { kept: number };

/** Options of {@link rankFor}. */
export interface RankOptions {
  /** Accept a rank that saves nothing (k ≥ m·n/(m+n)); it is still capped at min(m, n). */
  force?: boolean;
  /** Name of the layer, for error messages. */
  layer?: string;
}

/**
 * The fraction of parameters kept, validated: the value must lie strictly inside (0, 1).
 * Throws OptionError naming the convention and the value otherwise, or when the object is neither form.
 */
export function keptFraction(ratio: Ratio): number {
  const r = ratio as Partial<{ removed: number; kept: number }>;
  const hasRemoved = r !== null && typeof r === "object" && "removed" in r;
  const hasKept = r !== null && typeof r === "object" && "kept" in r;
  if (hasRemoved === hasKept) {
    throw new OptionError(
      `ratio: give exactly one of { removed: r } (SVD-LLM, fraction removed) or { kept: p } (ASVD, fraction kept), got ${
        JSON.stringify(ratio)
      }`,
    );
  }
  const v = hasRemoved ? r.removed : r.kept;
  const key = hasRemoved ? "removed" : "kept";
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0 || v >= 1) {
    throw new OptionError(
      `ratio: ${key} must be a number strictly between 0 and 1, got ${
        typeof v === "string" ? JSON.stringify(v) : String(v)
      }`,
    );
  }
  // Computed as the SVD-LLM reference does (1 − r in float64), so ranks agree with it exactly.
  return hasRemoved ? 1 - v : v;
}

/** A short human label such as "20 % removed (SVD-LLM ratio 0.2)". */
export function describeRatio(ratio: Ratio): string {
  keptFraction(ratio);
  if ("removed" in ratio) return `${round(ratio.removed * 100)} % removed (SVD-LLM ratio ${ratio.removed})`;
  return `${round(ratio.kept * 100)} % kept (ASVD parameter ratio ${ratio.kept})`;
}

function round(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

/** The rank at which a factorisation of an m×n matrix stores as many values as the matrix: m·n/(m+n). */
export function breakEvenRank(m: number, n: number): number {
  return (m * n) / (m + n);
}

/** Parameters stored by a rank-k factorisation of an m×n matrix: A (m×k) plus B (k×n). */
export function lowRankParams(m: number, n: number, k: number): number {
  return k * (m + n);
}

/**
 * The rank formula, the one place it is written: a rank-k factorisation of an m×n weight keeping the fraction
 * p of its parameters has k = ⌊m·n·p/(m+n)⌋ (unchecked: may be 0 or beyond the break-even rank; see
 * {@link rankFor} for the validated form).
 */
export function keptRank(m: number, n: number, p: number): number {
  return Math.floor((m * n * p) / (m + n));
}

/**
 * Rank for an m×n (out×in) weight under `ratio`: k = floor(m·n·p/(m+n)) with p the kept fraction.
 * Throws OptionError if the rank is 0 (nothing left of the layer) or saves nothing (k ≥ m·n/(m+n)) unless
 * `force`; a forced rank is capped at min(m, n), where the factorisation is exact.
 */
export function rankFor(m: number, n: number, ratio: Ratio, opts: RankOptions = {}): number {
  const p = keptFraction(ratio);
  if (!Number.isInteger(m) || !Number.isInteger(n) || m <= 0 || n <= 0) {
    throw new OptionError(`rank: layer${at(opts.layer)} has invalid shape ${m}×${n}`);
  }
  const k = keptRank(m, n, p);
  return checkRank(m, n, k, opts, describeRatio(ratio));
}

/**
 * Validate an explicit rank for an m×n weight: an integer ≥ 1, below the break-even rank m·n/(m+n) unless
 * `force` (then at most min(m, n)). Returns the rank; throws OptionError naming the layer otherwise.
 */
export function checkRank(
  m: number,
  n: number,
  k: number,
  opts: RankOptions = {},
  why = "requested",
): number {
  const where = at(opts.layer);
  if (!Number.isInteger(k) || k < 1) {
    throw new OptionError(
      `rank: ${why} gives rank ${k} for the ${m}×${n} layer${where}: nothing would be left`,
    );
  }
  if (k >= breakEvenRank(m, n) && !opts.force) {
    throw new OptionError(
      `rank: ${why} gives rank ${k} for the ${m}×${n} layer${where}, which stores ${
        lowRankParams(m, n, k)
      } values ≥ the ${m * n} of the dense weight (break-even rank ${
        breakEvenRank(m, n).toFixed(2)
      }): no saving; pass force: true to factor anyway`,
    );
  }
  return Math.min(k, m, n);
}

function at(layer: string | undefined): string {
  return layer ? ` ${layer}` : "";
}

/** One linear layer's parameter accounting. */
export interface LayerParams {
  /** Tensor prefix, e.g. "model.layers.0.self_attn.q_proj". */
  name: string;
  /** Output features m. */
  rows: number;
  /** Input features n. */
  cols: number;
  /** Rank kept, or null when the layer stays dense. */
  rank: number | null;
  /** Values stored before: m·n. */
  before: number;
  /** Values stored after: k·(m+n), or m·n when dense. */
  after: number;
}

/** Parameter totals over the compressed linears and over the whole model. */
export interface ParamSummary {
  /** Per-layer accounting. */
  layers: LayerParams[];
  /** Over the linears listed: values before and after, and the fraction removed (1 − after/before). */
  linears: { before: number; after: number; removed: number };
  /** Over the whole model (linears + every other tensor: embeddings, norms, lm_head). */
  model: { before: number; after: number; removed: number };
}

/** Accounting of one layer. */
export function layerParams(name: string, rows: number, cols: number, rank: number | null): LayerParams {
  const before = rows * cols;
  return { name, rows, cols, rank, before, after: rank === null ? before : lowRankParams(rows, cols, rank) };
}

/**
 * Achieved parameter counts: `layers` are the block linears (compressed or not), `otherParams` the count of
 * every other value in the model (embeddings, norms, lm_head, biases).
 */
export function summarizeParams(layers: LayerParams[], otherParams: number): ParamSummary {
  let before = 0, after = 0;
  for (const l of layers) {
    before += l.before;
    after += l.after;
  }
  const mb = before + otherParams, ma = after + otherParams;
  return {
    layers,
    linears: { before, after, removed: before > 0 ? 1 - after / before : 0 },
    model: { before: mb, after: ma, removed: mb > 0 ? 1 - ma / mb : 0 },
  };
}
