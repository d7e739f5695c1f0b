/**
 * The rank of every compressed linear of a `compress` run: from its shape and the ratio (uniform, KV cache),
 * or chosen under one parameter budget by an allocation pass (see `allocateLinears`). SoCo's learned ranks
 * replace these after its training (`model_pass.ts`).
 *
 * @module
 */
import type { LayerShape } from "../methods/asvd_sensitivity.ts";
import { kvRank } from "../methods/kvcache.ts";
import { keptFraction, rankFor } from "../methods/ratio.ts";
import type { CompressReport } from "./options.ts";
import type { Run } from "./run.ts";
import { allocateLinears } from "./sensitivity.ts";

/** Ranks: known from shapes (uniform, KV cache), or chosen under one budget (see `allocateLinears`). */
export async function allocateRanks(
  run: Run,
  shapes: LayerShape[],
  windows: Int32Array[] | undefined,
): Promise<{ ranks: Record<string, number | null>; sensitivity?: CompressReport["sensitivity"] }> {
  const { opts } = run;
  const ranks: Record<string, number | null> = {};
  const allocation = opts.allocation ?? "uniform";
  if (allocation !== "uniform") {
    return await run.clock.time("sensitivity", async () => {
      const res = await allocateLinears({ spec: run.spec, reader: run.reader }, windows, {
        allocation,
        method: opts.method as "svd" | "asvd" | "svdllm",
        kept: keptFraction(opts.ratio),
        alpha: opts.alpha,
        linears: run.linears,
        batchSize: run.batch,
        sensitivity: opts.sensitivity,
        onProgress: (e) => {
          // The allocation passes have no memory hooks of their own: each step drops a layer's candidates.
          run.memory.boundary();
          opts.signal?.throwIfAborted();
          run.emit({ stage: "sensitivity", ...e });
        },
      });
      Object.assign(ranks, res.ranks);
      const sensitivity = {
        seconds: res.seconds,
        fromCache: res.fromCache,
        densePpl: res.densePpl ?? NaN,
        achievedKept: res.achievedKept,
      };
      return { ranks, sensitivity };
    });
  }
  const kept = keptFraction(opts.ratio);
  for (const s of shapes) {
    ranks[s.name] = opts.kvCache
      ? kvRank(s.rows, kept)
      : rankFor(s.rows, s.cols, opts.ratio, { force: opts.force, layer: s.name });
  }
  return { ranks };
}
