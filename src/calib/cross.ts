/**
 * Cross statistic for SVD-LLM's update toward the original model: for the same calibration tokens seen by
 * the original model (x) and by the compressed prefix (x'), the running mean M = (1/T)·Σ_t x_t x'_tᵀ
 * (in×in, float64). With the original layer's outputs y = W x as targets, the least-squares cross term is
 * (1/T)·Σ y x'ᵀ = W·M.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { matmul64 } from "../linalg/gemm.ts";
import { type FloatArray, type Matrix, type Matrix64, matrix64, toFloat64 } from "../linalg/matrix.ts";
import { checkBatch } from "./observer.ts";

/**
 * Running mean of x·x'ᵀ over paired batches `x, xNew: tokens×in` (the same tokens, two models).
 *
 * @example
 * ```ts
 * import { CrossGramObserver } from "./cross.ts";
 * import { matrix } from "../linalg/matrix.ts";
 * const o = new CrossGramObserver("o_proj", 2);
 * o.addPair(matrix(1, 2, new Float32Array([1, 2])), matrix(1, 2, new Float32Array([3, 4])));
 * o.cross().data; // [3, 4, 6, 8]
 * ```
 */
export class CrossGramObserver {
  /** Layer name, for errors. */
  readonly layer: string;
  /** Input features. */
  readonly cols: number;
  #m: Matrix64;
  #tokens = 0;

  /** @param layer name used in errors  @param cols the layer's input features */
  constructor(layer: string, cols: number) {
    if (!Number.isInteger(cols) || cols < 1) throw new ShapeError(`observe ${layer}: invalid width ${cols}`);
    this.layer = layer;
    this.cols = cols;
    this.#m = matrix64(cols, cols);
  }

  /** Tokens seen. */
  get tokens(): number {
    return this.#tokens;
  }

  /** Add paired batches (same rows = same tokens); throws on NaN/Inf or mismatched shapes. */
  addPair(x: Matrix<FloatArray>, xNew: Matrix<FloatArray>): void {
    checkBatch(this.layer, this.cols, x);
    checkBatch(this.layer, this.cols, xNew);
    if (x.rows !== xNew.rows) {
      throw new ShapeError(`observe ${this.layer}: paired batches have ${x.rows} and ${xNew.rows} tokens`);
    }
    if (x.rows === 0) return;
    const total = this.#tokens + x.rows;
    const keep = this.#tokens / total, add = 1 / total;
    const p = matmul64(toFloat64(x), toFloat64(xNew), { transA: true }); // in×in = Σ x x'ᵀ over the batch
    const m = this.#m.data;
    for (let i = 0; i < m.length; i++) m[i] = m[i] * keep + p.data[i] * add;
    this.#tokens = total;
  }

  /** M = (1/T)·Σ x x'ᵀ (in×in); the observer's own storage. */
  cross(): Matrix64 {
    return this.#m;
  }
}
