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
