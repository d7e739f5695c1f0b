/**
 * log Σ exp over a row of logits, stable (max subtracted) with float64 sums: one row in TypeScript, or many
 * rows at once through the wasm kernel (vectorised exp).
 *
 * @example
 * ```ts
 * import { logSumExp, rowsLogSumExp } from "./logsumexp.ts";
 * logSumExp(new Float32Array([0, 0]), 0, 2); // Math.LN2
 * rowsLogSumExp(new Float32Array([0, 0, 1, 1]), 2, 2); // [LN2, 1 + LN2]
 * ```
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { modelKernels } from "./model_kernels.ts";

/** log Σ exp(a[off..off+n)) in float64, stable; −∞ for an all −∞ row, NaN when any is NaN or +∞. */
export function logSumExp(a: Float32Array, off: number, n: number): number {
  let max = -Infinity;
  for (let j = 0; j < n; j++) if (a[off + j] > max) max = a[off + j];
  if (!Number.isFinite(max)) return max === -Infinity ? -Infinity : NaN;
  let s = 0;
  for (let j = 0; j < n; j++) s += Math.exp(a[off + j] - max);
  return max + Math.log(s);
}

/** log Σ exp of each row of a (rows×n, row-major): the wasm kernel when present, else {@link logSumExp}. */
export function rowsLogSumExp(a: Float32Array, rows: number, n: number): Float64Array {
  if (a.length < rows * n) {
    throw new ShapeError(`rowsLogSumExp: ${a.length} values cannot hold ${rows}×${n}`);
  }
  const out = new Float64Array(rows), rt = modelKernels();
  if (!rt) {
    for (let i = 0; i < rows; i++) out[i] = logSumExp(a, i * n, n);
    return out;
  }
  const stats = rt.scoped((s) => {
    const pa = s.putF32(a.subarray(0, rows * n)), ps = s.allocF64(2 * rows);
    rt.fn("slogsumexp_rows")(pa, rows, n, ps);
    return rt.getF64(ps, 2 * rows);
  });
  for (let i = 0; i < rows; i++) {
    const max = stats[2 * i];
    out[i] = Number.isFinite(max) ? max + Math.log(stats[2 * i + 1]) : max === -Infinity ? -Infinity : NaN;
  }
  return out;
}
