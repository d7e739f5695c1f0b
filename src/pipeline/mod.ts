/**
 * The compression pipeline: `compress()` (model in, compressed folder out, streamed block by block),
 * `merge()` (factors back to dense weights), `inspectModel()`, the output sinks (folder, memory, streams), and
 * the ASVD sensitivity sweep.
 *
 * @module
 */
export * from "./compress.ts";
export * from "./merge.ts";
export * from "./sensitivity.ts";
export * from "./inspect.ts";
export * from "./sink.ts";
export * from "./svd_llm_config.ts";
export { openModelSource, sideFilesOf } from "./source.ts";
export { openOutputDir, type OutputDir, type OutputDirOptions } from "./output_dir.ts";
export * from "./truncation_losses.ts";
