/**
 * Plain SVD compression: W = U Σ Vᵀ, keep the top k singular triplets, A = U_k Σ_k^½, B = Σ_k^½ V_kᵀ.
 * Weight-only (no calibration data); it minimises ‖W − AB‖_F, not the error on real activations, and is the
 * baseline every other method must beat.
 *
 * @module
 */
import type { FloatArray, Matrix } from "../linalg/matrix.ts";
import { svdPart } from "../linalg/svd.ts";
import {
  checkWeight,
  type Factors,
  leftFactor,
  rightFactor64,
  since,
  tailEnergy,
  toF32Checked,
} from "./factors.ts";

/**
 * Rank-k truncated SVD of `w: out×in`. Returns `a: out×k`, `b: k×in`. Throws ShapeError/NumericError on a bad
 * shape, rank or non-finite weight.
 *
 * @example
 * ```ts ignore
 * import { compressSvd } from "./svd.ts";
 * const { a, b, report } = compressSvd(w, 16); // w ≈ a·b, report.energyKept
 * ```
 */
export function compressSvd(w: Matrix<FloatArray>, rank: number): Factors {
  const t0 = performance.now();
  checkWeight(w, rank, "svd compress");
  // Only the k leading vectors of each side are formed: the rest would be cut away.
  const { u, s, vt } = svdPart(w, { left: rank, right: rank });
  const a = leftFactor(u!, s, rank);
  const b = toF32Checked(rightFactor64(vt!, s, rank), "svd compress");
  const { tail, total } = tailEnergy(s, rank);
  return {
    a,
    b,
    report: {
      method: "svd",
      rank,
      rows: w.rows,
      cols: w.cols,
      singularValues: s,
      energyKept: total > 0 ? 1 - tail / total : 1,
      seconds: since(t0),
    },
  };
}
