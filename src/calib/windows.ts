/**
 * Calibration windows: fixed-length slices of a tokenized calibration text.
 *
 * Two layouts. `"random"` (default) draws each window's start uniformly from a seeded generator, as both
 * reference implementations do (SVD-LLM and ASVD slice a random `seqlen` span out of the tokenized text for
 * every sample, so windows may overlap). `"consecutive"` takes non-overlapping windows from the start of the
 * text, which needs samples·seqlen tokens. No BOS is inserted: windows are plain slices of `ids` (the text's
 * single BOS, if the tokenizer added one, is in the first window only when that window starts at 0).
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import { createRng } from "../linalg/random.ts";

/** Options of {@link calibrationWindows}. */
export interface CalibrationWindowOptions {
  /** Number of windows. */
  samples: number;
  /** Tokens per window. */
  seqlen: number;
  /** Seed of the window starts for `"random"` (default 0). */
  seed?: number;
  /** `"random"` (default) or `"consecutive"`, see the module doc. */
  layout?: "random" | "consecutive";
}

/** A value as the user wrote it: strings quoted ("4" is not 4), numbers as they are (NaN, not null). */
const show = (v: unknown): string => (typeof v === "string" ? JSON.stringify(v) : String(v));

/**
 * Cut `samples` windows of `seqlen` token ids out of `ids`. Throws OptionError when the counts are not
 * positive integers, when the text is shorter than one window (naming both lengths), or, for
 * `"consecutive"`, when fewer than `samples` windows fit.
 *
 * @example
 * ```ts
 * import { calibrationWindows } from "./windows.ts";
 * const ids = Array.from({ length: 100 }, (_, i) => i);
 * const w = calibrationWindows(ids, { samples: 4, seqlen: 16, seed: 1 }); // 4 Int32Arrays of 16 ids
 * ```
 */
export function calibrationWindows(ids: ArrayLike<number>, opts: CalibrationWindowOptions): Int32Array[] {
  const { samples, seqlen } = opts;
  const layout = opts.layout ?? "random";
  for (const [k, v] of [["samples", samples], ["seqlen", seqlen]] as const) {
    if (!Number.isInteger(v) || v < 1) {
      throw new OptionError(`calibration windows: ${k} must be a positive integer, got ${show(v)}`);
    }
  }
  if (opts.seed !== undefined && !Number.isSafeInteger(opts.seed)) {
    throw new OptionError(`calibration windows: seed must be an integer, got ${show(opts.seed)}`);
  }
  if (layout !== "random" && layout !== "consecutive") {
    throw new OptionError(
      `calibration windows: layout must be "random" or "consecutive", got ${String(layout)}`,
    );
  }
  const n = ids.length;
  if (n < seqlen) {
    throw new OptionError(
      `calibration windows: the calibration text has ${n} tokens, shorter than one window of ${seqlen} tokens`,
    );
  }
  // Int32Array.from would turn NaN into 0 and 1.5 into 1: a silent, different calibration set
  for (let i = 0; i < n; i++) {
    if (!Number.isInteger(ids[i])) {
      throw new OptionError(`calibration windows: token id at position ${i} is ${ids[i]}, not an integer`);
    }
  }
  const all = Int32Array.from(ids);
  const out: Int32Array[] = [];
  if (layout === "consecutive") {
    const fit = Math.floor(n / seqlen);
    if (fit < samples) {
      throw new OptionError(
        `calibration windows: ${samples} consecutive windows of ${seqlen} tokens need ${
          samples * seqlen
        } tokens, the calibration text has ${n} (${fit} windows fit); use layout "random" or fewer samples`,
      );
    }
    for (let i = 0; i < samples; i++) out.push(all.slice(i * seqlen, (i + 1) * seqlen));
    return out;
  }
  const rng = createRng(opts.seed ?? 0);
  const starts = n - seqlen + 1;
  for (let i = 0; i < samples; i++) {
    const s = Math.floor(rng.next() * starts);
    out.push(all.slice(s, s + seqlen));
  }
  return out;
}
