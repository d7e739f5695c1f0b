/**
 * GPTQ-style per-layer objects: create one for a linear layer, feed it the layer's inputs with `addBatch`,
 * then `compress` at a rank or a ratio. Each wraps the method's pure function and the observer it needs, so
 * a notebook or another pipeline can compress a single layer without the model machinery.
 *
 * @example
 * ```ts
 * import { svdllm } from "./layer.ts";
 * import { matrix } from "../linalg/matrix.ts";
 * const w = matrix(4, 3, Float32Array.from({ length: 12 }, (_, i) => Math.sin(i))); // out×in
 * const x = matrix(8, 3, Float32Array.from({ length: 24 }, (_, i) => Math.cos(i))); // tokens×in
 * const layer = svdllm(w);
 * layer.addBatch(x);
 * const { a, b, report } = layer.compress({ rank: 1 }); // a: 4×1, b: 1×3
 * console.log(report.predictedLoss);
 * ```
 *
 * @module
 */
import { AbsMeanObserver } from "../calib/abs_mean.ts";
import { GramObserver } from "../calib/gram.ts";
import { OptionError } from "../errors.ts";
import { assertFinite, type FloatArray, type Matrix } from "../linalg/matrix.ts";
import { type AsvdOptions, compressAsvd } from "./asvd.ts";
import type { Factors } from "./factors.ts";
import { rankFor, type Ratio } from "./ratio.ts";
import { compressSvd } from "./svd.ts";
import { compressSvdLlm, type SvdLlmOptions } from "./svdllm.ts";

/** What to keep: an explicit rank, or a ratio in one of the two explicit conventions. */
export type Target = { rank: number; force?: boolean } | { ratio: Ratio; force?: boolean };

/** A layer being compressed: observe its inputs, then factor it. */
export interface LayerCompressor {
  /** The weight, out×in. */
  readonly weight: Matrix<FloatArray>;
  /** Tokens observed so far. */
  readonly tokens: number;
  /** Observe one batch of the layer's inputs, `x: tokens×in` (no-op for plain SVD). */
  addBatch(x: Matrix<FloatArray>): void;
  /** Factor the weight: `a: out×rank`, `b: rank×in`, and the method's report. */
  compress(target: Target): Factors;
}

function rankOf(w: Matrix<FloatArray>, target: Target): number {
  if ("rank" in target) {
    if (!Number.isInteger(target.rank) || target.rank < 1 || target.rank > Math.min(w.rows, w.cols)) {
      throw new OptionError(
        `compress layer: rank must be an integer in [1, ${Math.min(w.rows, w.cols)}], got ${target.rank}`,
      );
    }
    return target.rank;
  }
  return rankFor(w.rows, w.cols, target.ratio, { force: target.force });
}

/** Plain truncated SVD of the weight: no data needed (`addBatch` is accepted and ignored). */
export function svdLayer(weight: Matrix<FloatArray>): LayerCompressor {
  assertFinite(weight, "svd layer: weight");
  return {
    weight,
    tokens: 0,
    addBatch() {},
    compress: (target) => compressSvd(weight, rankOf(weight, target)),
  };
}

/** A compressor over an observer: `addBatch` feeds it, `compress` refuses to run before any batch. */
function observed<O extends { readonly tokens: number; addBatch(x: Matrix<FloatArray>): void }>(
  weight: Matrix<FloatArray>,
  method: string,
  obs: O,
  factor: (obs: O, rank: number) => Factors,
): LayerCompressor {
  assertFinite(weight, `${method} layer: weight`);
  return {
    weight,
    get tokens() {
      return obs.tokens;
    },
    addBatch: (x) => obs.addBatch(x),
    compress(target) {
      if (obs.tokens === 0) {
        throw new OptionError(`${method} compress: no activations observed; call addBatch(x) first`);
      }
      return factor(obs, rankOf(weight, target));
    },
  };
}

/** ASVD: channels scaled by their mean |x|^α before the SVD (`opts.alpha`, default 0.5). */
export function asvd(weight: Matrix<FloatArray>, opts: AsvdOptions = {}): LayerCompressor {
  return observed(
    weight,
    "asvd",
    new AbsMeanObserver("asvd layer", weight.cols),
    (o, rank) => compressAsvd(weight, { absMean: o.mean(), absMax: o.max() }, rank, opts),
  );
}

/** SVD-LLM: truncation-aware whitening by the Cholesky factor of the inputs' Gram matrix. */
export function svdllm(weight: Matrix<FloatArray>, opts: SvdLlmOptions = {}): LayerCompressor {
  return observed(
    weight,
    "svdllm",
    new GramObserver("svdllm layer", weight.cols),
    (o, rank) => compressSvdLlm(weight, { gram: o.gram() }, rank, opts),
  );
}
