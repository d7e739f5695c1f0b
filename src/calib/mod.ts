/**
 * Calibration: windows of calibration text and observers of linear-layer inputs.
 *
 * @module
 */
export * from "./windows.ts";
export * from "./observer.ts";
export * from "./abs_mean.ts";
export * from "./gram.ts";
export * from "./text.ts";
// Types the exported functions name, re-exported so this entry point documents them (deno doc --lint).
export type { FloatArray, Matrix, Matrix64 } from "../linalg/matrix.ts";
export type { CholeskyOptions, CholeskyResult } from "../linalg/cholesky.ts";
export type { ResidentCholesky } from "../linalg/cholesky_resident.ts";
