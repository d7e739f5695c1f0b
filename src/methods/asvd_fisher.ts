/**
 * What dropping each component of ASVD's factorisation costs the *model's loss*, not the layer's output: a
 * second-order (empirical Fisher, OBS-style) estimate. With W·S = U Σ Vᵀ, W = Σ_j σ_j u_j ṽ_jᵀ where
 * ṽ_j = S⁻¹ v_j; dropping component j changes W by ΔW_j = −σ_j u_j ṽ_jᵀ, and on a batch whose mean loss has
 * gradient dy_t at the layer's output for token t (N predicted tokens, so token t's own gradient is N·dy_t)
 *
 *   ΔL_j ≈ ½ · N · Σ_t (dy_tᵀ ΔW_j x_t)² = ½ · N · σ_j² · Σ_t (u_jᵀ dy_t)² (ṽ_jᵀ x_t)².
 *
 * Factored as K-FAC does (dy independent of x) and with only the diagonal of the output side kept:
 *
 *   ΔL_j ≈ ½ · σ_j² · (Σ_o d_o u_jo²) · (ṽ_jᵀ G ṽ_j),   d_o = E[N·Σ_t dy_to²] over batches, G = E[x xᵀ],
 *
 * i.e. the layer's own output error σ_j² ṽ_jᵀ G ṽ_j, with each output channel weighted by how much the loss
 * responds to it. d needs one float per output channel, so the gradient pass (`lossAndGrad`) can run before
 * the streamed statistics pass and nothing per linear is held between them. On tinylm-brown at 25 % removed
 * this diagonal form allocates as well as the exact Σ_t form and the full out×out K-FAC form (ppl 120.64,
 * 120.63, 120.52 against the full sensitivity sweep's 120.60), and keeps block 0's MLP dense as the sweep
 * does; the plain output error, blind to the loss, compresses block 0's down_proj (122.25).
 *
 * @example
 * ```ts
 * import { OutputFisherObserver } from "./asvd_fisher.ts";
 * const d = new OutputFisherObserver("demo", 2);
 * // One token's gradient (0.5, 0) of a mean over 2 predicted tokens: N·dy² = 2·0.25.
 * d.addBatch({ rows: 1, cols: 2, data: new Float32Array([0.5, 0]) }, 2);
 * console.log(Array.from(d.diagonal())); // [0.5, 0]
 * ```
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import type { Matrix, Matrix64 } from "../linalg/matrix.ts";
import { type AsvdSpectrum, asvdSpectrumLosses } from "./asvd.ts";

/** Accumulates d_o = mean over batches of N·Σ_t dy_to², per output channel of one linear. */
export class OutputFisherObserver {
  /** Layer name, for errors. */
  readonly layer: string;
  /** Output channels. */
  readonly cols: number;
  #sum: Float64Array;
  #batches = 0;

  /** Observe the output gradients of a linear with `cols` output channels. */
  constructor(layer: string, cols: number) {
    if (!Number.isInteger(cols) || cols < 1) {
      throw new ShapeError(`output fisher of ${layer}: invalid width ${cols}`);
    }
    this.layer = layer;
    this.cols = cols;
    this.#sum = new Float64Array(cols);
  }

  /**
   * One batch: dy (T×out), the gradient of the batch's mean loss at the linear's output, over `predicted`
   * tokens. Throws ShapeError on a wrong width.
   */
  addBatch(dy: Matrix, predicted: number): void {
    if (dy.cols !== this.cols) {
      throw new ShapeError(
        `output fisher of ${this.layer}: dy has ${dy.cols} columns, expected ${this.cols}`,
      );
    }
    const s = this.#sum, n = this.cols;
    for (let t = 0; t < dy.rows; t++) {
      for (let o = 0; o < n; o++) {
        const v = dy.data[t * n + o];
        s[o] += predicted * v * v;
      }
    }
    this.#batches++;
  }

  /** d_o, the mean over the batches seen (zeros before any). */
  diagonal(): Float64Array {
    const nb = Math.max(1, this.#batches);
    return Float64Array.from(this.#sum, (v) => v / nb);
  }
}

/**
 * ΔL_j ≈ ½ σ_j² (Σ_o d_o u_jo²)(ṽ_jᵀ G ṽ_j) for every component j of `sp` (which needs all its vectors on
 * both sides), with `g` the inputs' mean Gram (in×in) and `d` the output channels' Fisher diagonal (out).
 * Throws ShapeError on mismatched sizes.
 */
export function asvdFisherLosses(sp: AsvdSpectrum, g: Matrix64, d: Float64Array): Float64Array {
  const m = sp.u.rows, r = sp.s.length;
  if (d.length !== m || sp.u.cols !== r) {
    throw new ShapeError(
      `asvd fisher losses: U is ${m}×${sp.u.cols} for ${r} values, the Fisher diagonal has ${d.length} channels`,
    );
  }
  const c = asvdSpectrumLosses(sp, g); // σ_j² ṽ_jᵀ G ṽ_j
  const weight = new Float64Array(r);
  for (let o = 0; o < m; o++) {
    const row = o * r;
    for (let j = 0; j < r; j++) weight[j] += d[o] * sp.u.data[row + j] ** 2;
  }
  for (let j = 0; j < r; j++) c[j] *= 0.5 * weight[j];
  return c;
}
