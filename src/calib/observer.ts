/**
 * The observer protocol, GPTQ style: the forward pass hands each linear layer's input batch to
 * `addBatch(x)` (`x: tokens×in`), and the observer keeps only a fixed-size statistic, never the activations.
 *
 * @module
 */
import { NumericError, ShapeError } from "../errors.ts";
import type { FloatArray, Matrix } from "../linalg/matrix.ts";

/** Accumulates a statistic of one linear layer's inputs. */
export interface Observer {
  /** The layer observed, named in errors. */
  readonly layer: string;
  /** Input features of the layer. */
  readonly cols: number;
  /** Tokens seen so far. */
  readonly tokens: number;
  /** Add one batch of inputs, `x: tokens×in`. */
  addBatch(x: Matrix<FloatArray>): void;
}

/**
 * Check a batch before it touches a statistic: `x.cols` must match the layer and every value must be finite.
 * Throws ShapeError or NumericError naming the layer, the row and the column of the first bad value.
 */
export function checkBatch(layer: string, cols: number, x: Matrix<FloatArray>): void {
  if (x.cols !== cols || x.data.length !== x.rows * x.cols) {
    throw new ShapeError(
      `observe ${layer}: activation batch is ${x.rows}×${x.cols}, the layer takes ${cols} input features`,
    );
  }
  const d = x.data;
  for (let i = 0; i < d.length; i++) {
    if (!Number.isFinite(d[i])) {
      throw new NumericError(
        `observe ${layer}: non-finite activation ${d[i]} at token ${Math.floor(i / cols)}, channel ${
          i % cols
        } (the model's forward pass produced NaN/Inf before this layer)`,
      );
    }
  }
}
