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
import { ResidentGram } from "../linalg/gram_resident.ts";
import { cholesky, CHOLESKY_PANEL, type CholeskyOptions, type CholeskyResult } from "../linalg/cholesky.ts";
import { choleskyResident, type ResidentCholesky } from "../linalg/cholesky_resident.ts";
import { activeBackend } from "../linalg/backend.ts";
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
  /** G on the host; null while it is resident in wasm memory. */
  #g: Matrix64 | null = null;
  /** G in wasm memory (float32-blocks on the wasm backend) until {@link GramObserver.gram} is called. */
  #resident: ResidentGram | null = null;
  #tokens = 0;
  #consumed = false;
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
    // The default precision keeps G in wasm memory between batches (see gram_resident.ts: no host copy of G
    // while the calibration pass runs); otherwise, or without the wasm backend, G lives on the host.
    if (this.#precision === "float32-blocks") this.#resident = ResidentGram.create(cols);
    if (!this.#resident) this.#g = matrix64(cols, cols);
  }

  /** Tokens seen. */
  get tokens(): number {
    return this.#tokens;
  }

  /** Add a batch `x: tokens×in`; throws NumericError naming the layer on NaN/Inf. */
  addBatch(x: Matrix<FloatArray>): void {
    this.#live("addBatch");
    checkBatch(this.layer, this.cols, x);
    if (x.rows === 0) return;
    const total = this.#tokens + x.rows;
    // Rescale the mean so far, then add the batch with weight 1/total: G stays the mean over all tokens.
    const r = this.#resident;
    if (r && x.data instanceof Float32Array && activeBackend() === "wasm") {
      r.accumulate(x as Matrix<Float32Array>, 1 / total, this.#tokens / total);
      this.#tokens = total;
      return;
    }
    gramAccumulate(this.#host(), x, 1 / total, {
      precision: this.#precision,
      keep: this.#tokens / total,
      checkedFinite: true, // by checkBatch above
    });
    this.#tokens = total;
  }

  /**
   * The mean Gram matrix (in×in); the observer's own storage, not a copy (from the first call on, when G was
   * resident in wasm memory: it is copied out once and the wasm region freed).
   */
  gram(): Matrix64 {
    this.#live("gram");
    return this.#host();
  }

  #live(what: string): void {
    if (this.#consumed) {
      throw new Error(`GramObserver ${this.layer}: ${what} after cholesky() consumed the statistics`);
    }
  }

  /**
   * The Cholesky factorisation of the mean Gram matrix, for a caller with no further use for the statistics
   * (the observer is emptied: later calls throw). Where G is resident in wasm memory and larger than one
   * panel it is factored there and the factor stays there ({@link ResidentCholesky}: no host copy of G or L,
   * see cholesky_resident.ts); otherwise `cholesky(gram(), { inPlace: true })`. Same values either way.
   */
  cholesky(opts: CholeskyOptions = {}): CholeskyResult | ResidentCholesky {
    if (this.#consumed) throw new Error(`GramObserver ${this.layer}: the statistics were already factored`);
    this.#consumed = true;
    const r = this.#resident;
    if (r && this.cols > CHOLESKY_PANEL && activeBackend() === "wasm") {
      this.#resident = null;
      return choleskyResident(r, opts);
    }
    const g = this.#host();
    this.#g = null;
    return cholesky(g, { ...opts, inPlace: true });
  }

  /** G on the host, taken out of wasm memory first if resident there. */
  #host(): Matrix64 {
    if (this.#resident) {
      this.#g = this.#resident.take();
      this.#resident = null;
    }
    return this.#g!;
  }
}
