/**
 * C = A·L for a lower triangular L in float64 (BLAS dtrmm, right side, lower): SVD-LLM's whitened weight
 * W·L. Column block j of the product only meets rows ≥ j of L, so the blocks are DGEMMs over shrinking inner
 * dimensions: about (1 + 1/B)/2 of a full product's flops with B blocks (56 % with the 8 used here).
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { activeBackend, activePool } from "./backend.ts";
import { gemmInto } from "./gemm.ts";
import type { Matrix64 } from "./matrix.ts";
import type { Job } from "./threads/pool.ts";
import { THREAD_MIN_WORK } from "./wasm/gemm_wasm.ts";
import { wasmRuntime } from "./wasm/runtime.ts";

/** Column blocks of L (each at least 32 columns wide). */
const BLOCKS = 8;

/**
 * C ← A·L, `a: rows×n`, `l: n×n` lower triangular with zeros stored above the diagonal (the diagonal blocks
 * are read whole), `c: rows×n`; returns c. With the WASM backend, rows are split over the worker threads when
 * there are some. Throws ShapeError on mismatched shapes.
 *
 * @example
 * ```ts
 * import { matmulLowerInto } from "./trmm.ts";
 * import { matrix64 } from "./matrix.ts";
 * const l = matrix64(2, 2, new Float64Array([1, 0, 2, 3]));
 * const c = matmulLowerInto(matrix64(1, 2, new Float64Array([1, 1])), l, matrix64(1, 2)); // [3, 3]
 * ```
 */
export function matmulLowerInto(a: Matrix64, l: Matrix64, c: Matrix64): Matrix64 {
  const rows = a.rows, n = a.cols;
  if (l.rows !== n || l.cols !== n || c.rows !== rows || c.cols !== n) {
    throw new ShapeError(
      `matmulLowerInto: A ${rows}×${n}, L ${l.rows}×${l.cols}, C ${c.rows}×${c.cols}: need L ${n}×${n}, C ${rows}×${n}`,
    );
  }
  const rt = wasmRuntime();
  if (!rt || activeBackend() !== "wasm" || !rt.has("dgemm") || n < 64 || rows === 0) {
    return gemmInto(a, l, c);
  }
  const pool = activePool();
  const nb = Math.max(32, Math.ceil(n / BLOCKS / 8) * 8);
  rt.scoped((s) => {
    const pa = s.putF64(a.data), pl = s.putF64(l.data), pc = s.allocF64(rows * n);
    const workLen: number = rt.fn("dgemm_work_size")();
    const threads = pool && rows * n * n / 2 >= THREAD_MIN_WORK
      ? Math.min(pool.size, Math.ceil(rows / 4))
      : 1;
    const step = Math.ceil(rows / threads / 4) * 4;
    const works = Array.from({ length: threads }, () => s.allocF64(workLen));
    const dgemm = rt.fn("dgemm");
    for (let j0 = 0; j0 < n; j0 += nb) {
      const w = Math.min(nb, n - j0), k = n - j0;
      // C[:, j0:j0+w] = A[:, j0:n]·L[j0:n, j0:j0+w] (rows of L above j0 are zero in these columns).
      const jobs: Job[] = [];
      for (let r0 = 0, t = 0; r0 < rows; r0 += step, t++) {
        const rr = Math.min(step, rows - r0);
        jobs.push({
          fn: "dgemm",
          args: [
            0,
            0,
            rr,
            w,
            k,
            1,
            pa + 8 * (r0 * n + j0),
            n,
            pl + 8 * (j0 * n + j0),
            n,
            0,
            pc + 8 * (r0 * n + j0),
            n,
            works[t],
          ],
        });
      }
      if (jobs.length > 1 && pool) pool.run(jobs);
      else for (const j of jobs) dgemm(...j.args);
    }
    c.data.set(rt.f64(pc, rows * n));
  });
  return c;
}
