/**
 * ASVD's activation statistic: per input channel j, the mean of |x_j| over calibration tokens (reference
 * `abs_mean`), and the maximum |x_j| (`abs_max`, an alternative scaling).
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import type { FloatArray, Matrix } from "../linalg/matrix.ts";
import { checkBatch, type Observer } from "./observer.ts";

/**
 * Mean and max of |x| per input channel, accumulated in float64.
 *
 * @example
 * ```ts
 * import { AbsMeanObserver } from "./abs_mean.ts";
 * import { matrix } from "../linalg/matrix.ts";
 * const o = new AbsMeanObserver("q_proj", 2);
 * o.addBatch(matrix(2, 2, new Float32Array([1, -2, -3, 4]))); // tokens×in
 * o.mean(); // [2, 3]
 * o.max(); // [3, 4]
 * ```
 */
export class AbsMeanObserver implements Observer {
  /** Layer name, for errors. */
  readonly layer: string;
  /** Input features. */
  readonly cols: number;
  #sum: Float64Array;
  #max: Float64Array;
  #tokens = 0;

  /**
   * Observe the inputs of one layer.
   * @param layer name used in errors
   * @param cols the layer's input features
   */
  constructor(layer: string, cols: number) {
    if (!Number.isInteger(cols) || cols < 1) throw new ShapeError(`observe ${layer}: invalid width ${cols}`);
    this.layer = layer;
    this.cols = cols;
    this.#sum = new Float64Array(cols);
    this.#max = new Float64Array(cols);
  }

  /** Tokens seen. */
  get tokens(): number {
    return this.#tokens;
  }

  /** Add a batch `x: tokens×in`; throws NumericError naming the layer on NaN/Inf. */
  addBatch(x: Matrix<FloatArray>): void {
    checkBatch(this.layer, this.cols, x);
    const n = this.cols, d = x.data, s = this.#sum, mx = this.#max;
    for (let t = 0; t < x.rows; t++) {
      const o = t * n;
      for (let j = 0; j < n; j++) {
        const v = Math.abs(d[o + j]);
        s[j] += v;
        if (v > mx[j]) mx[j] = v;
      }
    }
    this.#tokens += x.rows;
  }

  /** Mean |x_j| over all tokens seen (zeros before any batch). */
  mean(): Float64Array {
    const t = this.#tokens;
    return this.#sum.map((v) => (t > 0 ? v / t : 0));
  }

  /** Max |x_j| over all tokens seen. */
  max(): Float64Array {
    return this.#max.slice();
  }
}
