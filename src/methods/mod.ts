/**
 * Compression methods: one file per method, each `(W, stats, rank, opts) → { a, b, report }`, pure (no
 * files, no printing); ratio and rank arithmetic; ASVD's sensitivity-based allocation; KV-cache accounting.
 *
 * @module
 */
export * from "./ratio.ts";
export * from "./factors.ts";
export * from "./svd.ts";
export * from "./asvd.ts";
export * from "./svdllm.ts";
export * from "./asvd_sensitivity.ts";
export * from "./allocation.ts";
export * from "./kvcache.ts";
export * from "./soco.ts";
export * from "./soco_budget.ts";
export * from "./soco_train.ts";
// Types the exported functions name, re-exported so this entry point documents them (deno doc --lint).
export type { FloatArray, Matrix, Matrix64 } from "../linalg/matrix.ts";
export type { CholeskyResult } from "../linalg/cholesky.ts";
export type { ResidentCholesky } from "../linalg/cholesky_resident.ts";
export { LINEAR_NAMES, type LinearName } from "../model/names.ts";
