/**
 * SoCo at model level, through the compress driver: calibration windows → the spectral basis of every block
 * linear → the scores trained on the model's own next-token loss → the kept components written as a
 * compressed model folder (`svd_a`/`svd_b` per linear, ranks per matrix) that `loadModel` reads like any
 * other.
 *
 * One job per file: this module is the public entry only — SoCo's options in one object, turned into the
 * driver's (`compress(…, { method: "soco" })`, which writes the folder through its one output side), and the
 * driver's report turned back into SoCo's ({@link SocoReport}: the pass's result plus the written model's
 * figures). Everything SoCo computes — bases, start, training, held-out guard, factors — is the pass the
 * driver runs, `soco_pass.ts`; the bases' storage is `soco_bases.ts`.
 *
 * @example
 * ```ts ignore
 * import { compressSoco } from "./soco.ts";
 * const report = await compressSoco("models/stories260K/stories260K.gguf", "out/stories-soco", {
 *   ratio: { removed: 0.4 },
 *   calibration: { ids, samples: 32, seqlen: 256 },
 *   steps: 100,
 * });
 * report.params.linears.removed; // ≥ 0.4
 * ```
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import type { ParamSummary, Ratio } from "../methods/ratio.ts";
import {
  type CalibrationOptions,
  compress,
  compressModel,
  type CompressOptions,
  type CompressReport,
  type ModelInput,
} from "./compress.ts";
import {
  checkSocoOptions,
  type SocoPassProgress,
  type SocoPassResult,
  type SocoRunOptions,
} from "./soco_pass.ts";

export type { SocoRunOptions } from "./soco_pass.ts";

/** Options of {@link compressSoco}. */
export interface SocoOptions extends SocoRunOptions {
  /** Target: `{ removed: r }` (SVD-LLM) or `{ kept: p }`; the budget is the uniform ranks' parameter count. */
  ratio: Ratio;
  /** Calibration windows (default 32 × min(256, context), random starts, seed 0). */
  calibration: CalibrationOptions;
  /** Replace an existing output folder. */
  overwrite?: boolean;
  /** Progress: the bases (per block), then every training step (loss, budget, steps/second), then writing. */
  onProgress?: (e: SocoPipelineProgress) => void;
  /** Stop early. */
  signal?: AbortSignal;
}

/** A progress event of {@link compressSoco}. */
export type SocoPipelineProgress = SocoPassProgress | { stage: "write"; done: number; total: number };

/** What {@link compressSoco} did: the pass's own findings (see `SocoPassResult`) and the written model's. */
export interface SocoReport extends Omit<SocoPassResult, "factors" | "seconds"> {
  /** Output folder. */
  output: string;
  /** Always "soco". */
  method: "soco";
  /** The ratio as given. */
  ratio: Ratio;
  /** Human label of the ratio. */
  ratioLabel: string;
  /** Parameter counts. */
  params: ParamSummary;
  /** Seconds: bases, training, the held-out guard, writing (and the rest of the driver's work), total. */
  seconds: { bases: number; train: number; validate: number; write: number; total: number };
  /** Peak resident memory seen, bytes. */
  peakRssBytes: number;
}

/** Compress the model at `input` (folder or GGUF file) with SoCo into the folder `output`. */
export async function compressSoco(input: string, output: string, opts: SocoOptions): Promise<SocoReport> {
  return socoReport(await compress(input, output, driverOptions(opts)));
}

/** {@link compressSoco} on a model already opened (as `loadModel` returns it). */
export async function compressSocoModel(
  model: ModelInput,
  output: string,
  opts: SocoOptions,
  { inputPath }: { inputPath?: string } = {},
): Promise<SocoReport> {
  return socoReport(await compressModel(model, output, driverOptions(opts), { inputPath }));
}

/** The driver's options for a SoCo run. */
function driverOptions(opts: SocoOptions): CompressOptions {
  if (!opts || typeof opts !== "object") throw new OptionError("soco: options are required");
  const { ratio, calibration: given, overwrite, onProgress, signal, ...soco } = opts;
  if (!given || (!given.ids && given.text === undefined)) {
    throw new OptionError(`soco: calibration text or ids are required (the scores are trained on them)`);
  }
  checkSocoOptions(soco); // before any work
  return {
    method: "soco",
    ratio,
    calibration: given, // compress holds the text's last `holdout` fraction out for the guard
    soco,
    overwrite,
    signal,
    onSoco: onProgress,
    onProgress: (e) => {
      if (e.stage === "write" && e.block !== undefined) {
        onProgress?.({ stage: "write", done: e.done, total: e.total });
      }
    },
  };
}

function socoReport(r: CompressReport): SocoReport {
  const { seconds, ...pass } = r.soco!;
  return {
    ...pass,
    output: r.output,
    method: "soco",
    ratio: r.ratio,
    ratioLabel: r.ratioLabel,
    params: r.params,
    seconds: {
      ...seconds,
      write: Math.max(0, r.seconds - seconds.bases - seconds.train - seconds.validate),
      total: r.seconds,
    },
    peakRssBytes: r.peakRssBytes,
  };
}
