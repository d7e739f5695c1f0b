/**
 * The matrix type every room shares: a row-major typed array with its shape.
 * Float32 for weights and activations, Float64 where accuracy needs it (Gram, Cholesky, SVD internals).
 *
 * @module
 */
import { NumericError, ShapeError } from "../errors.ts";

/** A float typed array: float32 storage or float64 accuracy. */
export type FloatArray = Float32Array | Float64Array;

/** A dense row-major matrix: element (i, j) is `data[i * cols + j]`. */
export interface Matrix<T extends FloatArray = Float32Array> {
  /** Number of rows. */
  readonly rows: number;
  /** Number of columns. */
  readonly cols: number;
  /** Row-major values, length rows × cols. */
  readonly data: T;
}

/** A float64 matrix. */
export type Matrix64 = Matrix<Float64Array>;

/** Make a float32 matrix, zero-filled or wrapping `data` (not copied). */
export function matrix(rows: number, cols: number, data?: Float32Array): Matrix {
  return wrap(rows, cols, data ?? new Float32Array(rows * cols));
}

/** Make a float64 matrix, zero-filled or wrapping `data` (not copied). */
export function matrix64(rows: number, cols: number, data?: Float64Array): Matrix64 {
  return wrap(rows, cols, data ?? new Float64Array(rows * cols));
}

function wrap<T extends FloatArray>(rows: number, cols: number, data: T): Matrix<T> {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new ShapeError(`matrix: invalid shape ${rows}×${cols}`);
  }
  if (data.length !== rows * cols) {
    throw new ShapeError(`matrix: ${rows}×${cols} needs ${rows * cols} values, got ${data.length}`);
  }
  return { rows, cols, data };
}

/** Copy a matrix into float64. */
export function toFloat64(m: Matrix<FloatArray>): Matrix64 {
  return { rows: m.rows, cols: m.cols, data: Float64Array.from(m.data) };
}

/** Copy a matrix into float32. */
export function toFloat32(m: Matrix<FloatArray>): Matrix {
  return { rows: m.rows, cols: m.cols, data: Float32Array.from(m.data) };
}

/** The transpose, as a new matrix of the same element type. */
export function transpose<T extends FloatArray>(m: Matrix<T>): Matrix<T> {
  const { rows, cols, data } = m;
  const out = new (data.constructor as { new (n: number): T })(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) out[j * rows + i] = data[i * cols + j];
  }
  return { rows: cols, cols: rows, data: out };
}

/** Frobenius norm, accumulated in float64. */
export function frobeniusNorm(m: Matrix<FloatArray>): number {
  let s = 0;
  for (let i = 0; i < m.data.length; i++) s += m.data[i] * m.data[i];
  return Math.sqrt(s);
}

/** Throw a {@link NumericError} naming `what` and the first bad index if any value is NaN or ±Inf. */
export function assertFinite(m: Matrix<FloatArray> | FloatArray, what: string): void {
  const data = "data" in m ? m.data : m;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      const where = "data" in m ? ` at (${Math.floor(i / m.cols)}, ${i % m.cols})` : ` at index ${i}`;
      throw new NumericError(`${what}: non-finite value ${data[i]}${where}`);
    }
  }
}
