/**
 * SVD-LLM's activation statistic: the Gram matrix of a layer's inputs, kept as a running mean
 * G = (1/T)·Σ_t x_t x_tᵀ (in×in, float64). The reference sums instead; the mean has the same Cholesky
 * factor up to the scalar √T, so the factorisation and truncation are unchanged, but its entries stay O(x²)
 * however many tokens are seen, which keeps damping thresholds meaningful.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { gramAccumulate, type GramOptions } from "../linalg/gram.ts";
import { type FloatArray, type Matrix, type Matrix64, matrix64 } from "../linalg/matrix.ts";
import { checkBatch, type Observer } from "./observer.ts";

/**
 * Running mean of XᵀX for inputs `x: tokens×in`.
 *
 * @example
 * ```ts
 * import { GramObserver } from "./gram.ts";
 * import { matrix } from "../linalg/matrix.ts";
 * const o = new GramObserver("down_proj", 2);
 * o.addBatch(matrix(2, 2, new Float32Array([1, 0, 0, 2])));
 * o.gram().data; // [0.5, 0, 0, 2]
 * ```
 */
export class GramObserver implements Observer {
  /** Layer name, for errors. */
  readonly layer: string;
  /** Input features. */
  readonly cols: number;
  #g: Matrix64;
  #tokens = 0;
  #precision: GramOptions["precision"];

  /**
   * Observe the inputs of one layer.
   * @param layer name used in errors
   * @param cols the layer's input features
   * @param opts `precision` of the per-batch products (default "float32-blocks": float32 sums over 256 tokens
   *   accumulated in float64, at least as accurate as SVD-LLM's reference; "float64" for exact sums)
   */
  constructor(layer: string, cols: number, opts: GramOptions = {}) {
    this.#precision = opts.precision ?? "float32-blocks";
    if (!Number.isInteger(cols) || cols < 1) throw new ShapeError(`observe ${layer}: invalid width ${cols}`);
    this.layer = layer;
    this.cols = cols;
    this.#g = matrix64(cols, cols);
  }

  /** Tokens seen. */
  get tokens(): number {
    return this.#tokens;
  }

  /** Add a batch `x: tokens×in`; throws NumericError naming the layer on NaN/Inf. */
  addBatch(x: Matrix<FloatArray>): void {
    checkBatch(this.layer, this.cols, x);
    if (x.rows === 0) return;
    const total = this.#tokens + x.rows;
    // Rescale the mean so far, then add the batch with weight 1/total: G stays the mean over all tokens.
    gramAccumulate(this.#g, x, 1 / total, {
      precision: this.#precision,
      keep: this.#tokens / total,
      checkedFinite: true, // by checkBatch above
    });
    this.#tokens = total;
  }

  /** The mean Gram matrix (in×in); the observer's own storage, not a copy. */
  gram(): Matrix64 {
    return this.#g;
  }
}
