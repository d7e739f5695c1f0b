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
