/**
 * The checks of `compress`'s options, before anything is opened or allocated: each refuses one bad option
 * with a one-line OptionError naming the option, the value and the problem. The calibration size is checked
 * once the model's spec is known, before any token is read.
 *
 * @example
 * ```ts
 * import { validate } from "./validate.ts";
 * try {
 *   validate({ method: "svd", ratio: { removed: 0.2 }, batchSize: 0 });
 * } catch (e) {
 *   console.log((e as Error).message); // compress: batchSize must be a positive integer, got 0
 * }
 * ```
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import { checkText } from "../calib/text.ts";
import { keptFraction } from "../methods/ratio.ts";
import { LINEAR_NAMES } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import { type CompressOptions, type CompressOutput, MAX_SAMPLES, MAX_STREAM_BYTES } from "./options.ts";
import { WEIGHTINGS } from "./fwsvd.ts";
import { checkSocoOptions } from "./soco_pass.ts";
import type { CompressMethod } from "./svd_llm_config.ts";

/** The methods `compress` runs. */
export const METHODS: readonly CompressMethod[] = ["svd", "asvd", "svdllm", "fwsvd", "soco"];

/** Refuse an output that is neither a non-empty path nor a sink. */
export function checkOutput(output: CompressOutput): void {
  if (typeof output === "string" ? output.trim() === "" : typeof output?.file !== "function") {
    throw new OptionError(
      `compress: the output must be a folder path or an output sink, got ${JSON.stringify(output)}`,
    );
  }
}

/**
 * Refuse options that are malformed or that do not go together (an option of another method, an allocation
 * the method has no use for, a method without the calibration it needs), before the model is opened.
 */
export function validate(opts: CompressOptions): void {
  if (!opts || !METHODS.includes(opts.method)) {
    throw new OptionError(
      `compress: method must be "svd", "asvd", "svdllm", "fwsvd" or "soco", got ${
        JSON.stringify(opts?.method)
      }`,
    );
  }
  if (opts.fisherSide !== undefined && !WEIGHTINGS.includes(opts.fisherSide)) {
    throw new OptionError(
      `compress: fisherSide must be "kfac", "both", "input" or "output", got ${
        JSON.stringify(opts.fisherSide)
      }`,
    );
  }
  const fb = opts.fisherBatch ?? 1;
  if (!Number.isInteger(fb) || fb < 1) {
    throw new OptionError(`compress: fisherBatch must be a positive integer, got ${JSON.stringify(fb)}`);
  }
  if (opts.soco !== undefined && opts.method !== "soco") {
    throw new OptionError(`compress: soco options apply to method "soco" only`);
  }
  if (opts.method === "soco") {
    checkSocoOptions(opts.soco ?? {});
    if (opts.linears || opts.kvCache || opts.force) {
      throw new OptionError(
        `compress: method "soco" chooses every linear's rank itself; drop linears/kvCache/force`,
      );
    }
  }
  if ((opts.fisherSide !== undefined || opts.fisherBatch !== undefined) && opts.method !== "fwsvd") {
    throw new OptionError(`compress: fisherSide and fisherBatch apply to method "fwsvd" only`);
  }
  keptFraction(opts.ratio);
  if (opts.update && opts.method !== "svdllm") {
    throw new OptionError(`compress: update applies to method "svdllm" only, not "${opts.method}"`);
  }
  if (opts.kvCache && (opts.linears || (opts.allocation ?? "uniform") !== "uniform")) {
    throw new OptionError(`compress: kvCache chooses the linears and ranks itself; drop linears/allocation`);
  }
  if (
    opts.allocation !== undefined && !["uniform", "sensitivity", "sweep", "global"].includes(opts.allocation)
  ) {
    throw new OptionError(
      `compress: allocation must be "uniform", "sensitivity", "sweep" or "global", got ${
        JSON.stringify(opts.allocation)
      }`,
    );
  }
  if (opts.dtype !== undefined && !["F32", "F16", "BF16"].includes(opts.dtype)) {
    throw new OptionError(
      `compress: dtype must be "F32", "F16" or "BF16", got ${JSON.stringify(opts.dtype)}`,
    );
  }
  if ((opts.allocation === "sensitivity" || opts.allocation === "sweep") && opts.method !== "asvd") {
    throw new OptionError(`compress: allocation "${opts.allocation}" applies to method "asvd" only`);
  }
  if ((opts.allocation ?? "uniform") !== "uniform" && (opts.method === "fwsvd" || opts.method === "soco")) {
    throw new OptionError(
      `compress: allocation "${opts.allocation}" applies to methods "svd", "asvd" and "svdllm", not "${opts.method}"`,
    );
  }
  if (opts.method !== "svd" && !opts.calibration?.text && !opts.calibration?.ids) {
    throw new OptionError(
      `compress: method "${opts.method}" needs calibration data (calibration.text or calibration.ids)`,
    );
  }
  if (opts.method !== "svd" && opts.calibration?.text !== undefined && !opts.calibration.ids) {
    checkText(opts.calibration.text, "compress: calibration.text");
  }
  const b = opts.batchSize ?? 8;
  if (!Number.isInteger(b) || b < 1) {
    throw new OptionError(`compress: batchSize must be a positive integer, got ${b}`);
  }
  for (const l of opts.linears ?? []) {
    if (!LINEAR_NAMES.includes(l)) throw new OptionError(`compress: unknown linear ${JSON.stringify(l)}`);
  }
  const s = opts.calibration?.samples;
  if (s !== undefined && opts.method !== "svd" && (!Number.isInteger(s) || s < 1 || s > MAX_SAMPLES)) {
    throw new OptionError(
      `compress: calibration.samples must be a whole number from 1 to ${MAX_SAMPLES}, got ${
        JSON.stringify(s)
      }`,
    );
  }
}

/** The calibration streams must fit in sane memory: checked before tokenising or allocating anything. */
export function checkCalibrationSize(opts: CompressOptions, spec: LlamaSpec): void {
  const c = opts.calibration;
  if (opts.method === "svd" || !c) return;
  const samples = c.samples ?? 32, seqlen = c.seqlen ?? Math.min(256, spec.maxPositions);
  if (!Number.isInteger(seqlen) || seqlen < 1) return; // calibrationWindows names it
  if (seqlen > spec.maxPositions) {
    throw new OptionError(
      `compress: calibration seqlen ${seqlen} exceeds the model's context ${spec.maxPositions}`,
    );
  }
  const streams = opts.update || (opts.sequential ?? true) === false ? 2 : 1;
  const bytes = samples * seqlen * spec.hiddenSize * 4 * streams;
  if (bytes > MAX_STREAM_BYTES) {
    throw new OptionError(
      `compress: calibration of ${samples} × ${seqlen} tokens would hold ${
        (bytes / 2 ** 30).toFixed(1)
      } GiB of hidden states (at most ${
        MAX_STREAM_BYTES / 2 ** 30
      } GiB); use fewer samples or a shorter seqlen`,
    );
  }
}
