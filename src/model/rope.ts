/**
 * Rotary position embeddings (RoPE) in both conventions, and the q/k row permutation that converts between
 * them: Hugging Face checkpoints rotate the pairs (x[i], x[i + d/2]) of each head ("halves", `rotate_half`);
 * Meta's original code and llama.cpp rotate (x[2i], x[2i+1]) ("interleaved"), and llama.cpp's converter
 * permutes the rows of q_proj and k_proj so that the same model computes the same thing in either layout.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import type { Matrix } from "../linalg/matrix.ts";

/** cos/sin of every (position, pair) for one head width: both positions×(headDim/2), row-major. */
export interface RopeTables {
  /** Number of positions covered (0..positions-1). */
  readonly positions: number;
  /** headDim / 2. */
  readonly pairs: number;
  /** cos(p·freq_i) at [p·pairs + i] (freq_i = θ^(−2i/headDim) unless rescaled). */
  readonly cos: Float32Array;
  /** sin(p·freq_i) at [p·pairs + i]. */
  readonly sin: Float32Array;
}

/**
 * How a checkpoint stretches RoPE beyond its training context (Hugging Face `rope_scaling`): "linear" divides
 * every frequency by `factor`; "llama3" (Llama 3.1/3.2) divides only the low frequencies, keeps the high ones
 * and interpolates smoothly between (wavelength bands set by the original context and the two band factors).
 */
export type RopeScaling =
  | { readonly type: "linear"; readonly factor: number }
  | {
    readonly type: "llama3";
    readonly factor: number;
    readonly lowFreqFactor: number;
    readonly highFreqFactor: number;
    readonly originalMaxPositions: number;
  };

/** The rotation frequency of each pair i: θ^(−2i/headDim), rescaled as `scaling` says (float64). */
export function ropeFrequencies(headDim: number, theta: number, scaling?: RopeScaling): Float64Array {
  const pairs = headDim / 2, f = new Float64Array(pairs);
  for (let i = 0; i < pairs; i++) {
    const base = Math.pow(theta, (-2 * i) / headDim);
    if (!scaling) f[i] = base;
    else if (scaling.type === "linear") f[i] = base / scaling.factor;
    else {
      const { factor, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositions: ctx } = scaling;
      const wavelen = (2 * Math.PI) / base;
      if (wavelen < ctx / hi) f[i] = base; // high frequencies: untouched
      else if (wavelen > ctx / lo) f[i] = base / factor; // low frequencies: interpolated
      else {
        const smooth = (ctx / wavelen - lo) / (hi - lo);
        f[i] = (1 - smooth) * (base / factor) + smooth * base;
      }
    }
  }
  return f;
}

/** Tables for positions 0..positions-1 (angles computed in float64, stored float32). */
export function ropeTables(
  positions: number,
  headDim: number,
  theta: number,
  scaling?: RopeScaling,
): RopeTables {
  const pairs = headDim / 2, freqs = ropeFrequencies(headDim, theta, scaling);
  const cos = new Float32Array(positions * pairs), sin = new Float32Array(positions * pairs);
  for (let i = 0; i < pairs; i++) {
    for (let p = 0; p < positions; p++) {
      cos[p * pairs + i] = Math.cos(p * freqs[i]);
      sin[p * pairs + i] = Math.sin(p * freqs[i]);
    }
  }
  return { positions, pairs, cos, sin };
}

const tableCache = new Map<string, RopeTables>();

/** Positions a cached table set is first built for: a short prompt and its decoding steps share one build. */
const MIN_CACHED_POSITIONS = 64;

/**
 * Tables covering at least positions 0..positions-1, from a cache keyed by (headDim, θ, scaling). They are
 * sized by the positions asked for, never by the model's maximum context (a config may declare 2^31 positions
 * for a model run on 256): a larger request rebuilds them at max(positions, twice the old size), so
 * token-by-token decoding rebuilds them O(log n) times. The values are those of {@link ropeTables} whatever
 * the size.
 */
export function cachedRopeTables(
  positions: number,
  headDim: number,
  theta: number,
  scaling?: RopeScaling,
): RopeTables {
  if (!Number.isSafeInteger(positions) || positions < 0) {
    throw new ShapeError(`rope: ${positions} positions is not a non-negative integer`);
  }
  const key = `${headDim}/${theta}/${JSON.stringify(scaling ?? null)}`;
  let t = tableCache.get(key);
  if (!t || t.positions < positions) {
    const size = Math.max(positions, 2 * (t?.positions ?? 0), MIN_CACHED_POSITIONS);
    t = ropeTables(size, headDim, theta, scaling);
    tableCache.set(key, t);
  }
  return t;
}

/**
 * Rotate, in place, every head of `x` (tokens×(heads·headDim)); row t sits at position `positionOf(t)`.
 *
 * @param style "halves" pairs (i, i + headDim/2); "interleaved" pairs (2i, 2i+1)
 */
export function applyRope(
  x: Matrix,
  heads: number,
  headDim: number,
  tables: RopeTables,
  style: "halves" | "interleaved",
  positionOf: (row: number) => number,
): void {
  if (x.cols !== heads * headDim) {
    throw new ShapeError(`rope: ${x.cols} columns, expected ${heads}×${headDim}`);
  }
  const pairs = headDim / 2, d = x.data, { cos, sin } = tables;
  // element offsets of the two members of pair i, relative to the head start
  const lo = new Int32Array(pairs), hi = new Int32Array(pairs);
  for (let i = 0; i < pairs; i++) {
    lo[i] = style === "halves" ? i : 2 * i;
    hi[i] = style === "halves" ? i + pairs : 2 * i + 1;
  }
  for (let t = 0; t < x.rows; t++) {
    const p = positionOf(t);
    if (p >= tables.positions) {
      throw new ShapeError(`rope: position ${p} beyond the tables (${tables.positions})`);
    }
    const tb = p * pairs;
    for (let h = 0; h < heads; h++) {
      const base = t * x.cols + h * headDim;
      for (let i = 0; i < pairs; i++) {
        const a = d[base + lo[i]], b = d[base + hi[i]], c = cos[tb + i], s = sin[tb + i];
        d[base + lo[i]] = a * c - b * s;
        d[base + hi[i]] = b * c + a * s;
      }
    }
  }
}

/**
 * Reorder the rows of a q or k projection (out×in with out = heads·headDim) from the "halves" layout to the
 * "interleaved" one, as llama.cpp's converter does: new row 2i+j of a head is old row j·headDim/2 + i.
 * With `inverse`, undo it. Applied to the output rows only, so biases permute the same way (pass cols = 1).
 */
export function permuteQK(w: Matrix, heads: number, inverse = false): Matrix {
  if (w.rows % heads !== 0) throw new ShapeError(`permuteQK: ${w.rows} rows not divisible by ${heads} heads`);
  const hd = w.rows / heads, half = hd / 2;
  if (hd % 2 !== 0) throw new ShapeError(`permuteQK: head width ${hd} must be even`);
  const out = new Float32Array(w.data.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const inter = h * hd + 2 * i + j, halves = h * hd + j * half + i;
        const [dst, src] = inverse ? [halves, inter] : [inter, halves];
        out.set(w.data.subarray(src * w.cols, (src + 1) * w.cols), dst * w.cols);
      }
    }
  }
  return { rows: w.rows, cols: w.cols, data: out };
}
