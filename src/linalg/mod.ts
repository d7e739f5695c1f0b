/**
 * The numerics core of @svd/llm: the matrix type, products (float32 and float64, WASM SIMD or TypeScript),
 * Gram accumulation, Cholesky with damping, triangular solves, QR, symmetric eigendecomposition, and the
 * exact and randomized truncated SVD. Every function is pure (except the `…Into` / `…Accumulate` ones,
 * which say what they write), documents its shapes and rejects non-finite input with a NumericError.
 *
 * @example
 * ```ts
 * import { matrix64, svd } from "./mod.ts";
 * const { s } = svd(matrix64(2, 2, new Float64Array([3, 0, 0, -4]))); // [4, 3]
 * ```
 *
 * @module
 */
export {
  assertFinite,
  type FloatArray,
  frobeniusNorm,
  type Matrix,
  matrix,
  type Matrix64,
  matrix64,
  toFloat32,
  toFloat64,
  transpose,
} from "./matrix.ts";
export { gemmInto, type GemmOptions, matmul, matmul64, type MatmulOptions } from "./gemm.ts";
export {
  type BackendChoice,
  closeLinalg,
  initLinalg,
  type LinalgGpuInfo,
  type LinalgInfo,
  linalgInfo,
  type LinalgOptions,
} from "./backend.ts";
export { gramAccumulate, type GramOptions } from "./gram.ts";
export { cholesky, type CholeskyOptions, type CholeskyResult } from "./cholesky.ts";
export { solveTriangular, type SolveTriangularOptions } from "./triangular.ts";
export { orthonormalityError, qr, type QrCompact, qrCompact, qrR, type QrResult, reconstruct } from "./qr.ts";
export { eigh, type EighResult } from "./eigh.ts";
export { svd, svdPart, type SvdPartOptions, type SvdPartResult, type SvdResult } from "./svd.ts";
export { svdTruncated, type SvdTruncatedOptions, truncate } from "./svd_truncated.ts";
export { matmulLowerInto } from "./trmm.ts";
export { createRng, randomNormal, type Rng } from "./random.ts";
export { type HostArray, ResidentMatrix, type ResidentPrecision } from "./resident.ts";
