/**
 * `compareMethods`: compress one model with each method at the same target, reload each result, and measure
 * its perplexity — the comparison the demo, the example and the notebooks all make, in one function.
 *
 * @example
 * ```ts ignore
 * import { compareMethods } from "./compare.ts";
 * const rows = await compareMethods("models/stories260K/stories260K.gguf", {
 *   ratio: { removed: 0.2 },
 *   calibration: { text, samples: 16, seqlen: 128 },
 *   evalIds, // token ids the perplexity is measured on
 *   window: 512,
 * });
 * for (const r of rows) console.log(r.method, r.ppl, r.report.params.model.removed);
 * ```
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import type { ProgressEvent } from "../model/llama.ts";
import { type LoadedModel, loadModel } from "../model/load.ts";
import {
  compress,
  type CompressMethod,
  type CompressOptions,
  type CompressReport,
  type ModelSource,
} from "../pipeline/compress.ts";
import { perplexity } from "./perplexity.ts";

/** One method of a comparison: its name, or its name with options of its own (e.g. `update: true`). */
export type MethodChoice = CompressMethod | (Partial<CompressOptions> & { method: CompressMethod });

/** Options of {@link compareMethods}: the compression options every method shares, and the evaluation. */
export interface CompareOptions extends Omit<CompressOptions, "method" | "overwrite"> {
  /** The methods, in order (default svd, asvd, svdllm). */
  methods?: readonly MethodChoice[];
  /** Token ids the perplexity is measured on (one BOS first, as `tokenizer.encode(text, { bos: true })`). */
  evalIds: ArrayLike<number>;
  /** Perplexity window, tokens. */
  window: number;
  /** Evaluation progress. */
  onEvalProgress?: (e: ProgressEvent) => void;
  /** Called with each reloaded compressed model before it is closed (e.g. to generate a sample). */
  onModel?: (model: LoadedModel, method: CompressMethod) => unknown;
}

/** One row of a comparison. */
export interface MethodComparison {
  /** The method. */
  method: CompressMethod;
  /** Perplexity of the compressed model, reloaded from its output. */
  ppl: number;
  /** What `compress` reported. */
  report: CompressReport;
}

/**
 * Compress `input` with each method into a temporary folder, reload it with `loadModel`, measure its
 * perplexity on `opts.evalIds`, and remove it. Needs a file system (Deno, Bun, Node).
 */
export async function compareMethods(input: ModelSource, opts: CompareOptions): Promise<MethodComparison[]> {
  const { methods = ["svd", "asvd", "svdllm"], evalIds, window, onEvalProgress, onModel, ...shared } = opts;
  if (!evalIds || evalIds.length < 2) {
    throw new OptionError(`compareMethods: evalIds needs at least 2 tokens`);
  }
  const { mkdtemp, rm } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = await mkdtemp(join(tmpdir(), "svd-llm-compare-"));
  try {
    const rows: MethodComparison[] = [];
    for (const [i, choice] of methods.entries()) {
      const own = typeof choice === "string" ? { method: choice } : choice;
      const out = join(dir, `${i}-${own.method}`);
      const report = await compress(input, out, { ...shared, ...own });
      const m = await loadModel(out);
      try {
        const { ppl } = await perplexity(m, evalIds, { window, onProgress: onEvalProgress });
        await onModel?.(m, own.method);
        rows.push({ method: own.method, ppl, report });
      } finally {
        await m.close();
        await rm(out, { recursive: true, force: true });
      }
    }
    return rows;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
