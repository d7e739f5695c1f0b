/**
 * The whole-model passes that come before the block loop of a `compress` run: FWSVD's Fisher pass (forward
 * and backward over the calibration windows) and SoCo's bases and training, each timed by the run's clock and
 * reported as its progress. Neither needs calibration streams in the block loop.
 *
 * @module
 */
import type { Factors } from "../methods/factors.ts";
import type { FwsvdWeighting } from "../methods/fwsvd.ts";
import { fwsvdFactors } from "./fwsvd.ts";
import { openSpillStore } from "./spill.ts";
import type { Run } from "./run.ts";
import { socoPass, type SocoPassResult } from "./soco_pass.ts";

/** FWSVD's pass of a run: every compressed linear's factors, and how the Fisher was measured. */
export interface RunFisher {
  /** How the Fisher information weighted each linear. */
  side: FwsvdWeighting;
  /**
   * Linear prefix → its factors (the block loop only writes them; each asked for once, in block order: they
   * are read back from a temporary file where `node:fs` exists, which closes after the last).
   */
  factors: { get(prefix: string): Factors | undefined };
  /** Batches averaged (per block, when sequential). */
  batches: number;
  /** Mean calibration loss over the batches, nats per token. */
  meanLoss: number;
}

/**
 * FWSVD's Fisher pass and factors (the whole model, forward and backward; with K-FAC and `sequential`, then a
 * forward pass over the compressed prefix for the input factors). The factors are spilled as they are made
 * (see `spill.ts`), so that the pass's memory stays near one block's whatever the model's depth.
 */
export async function fisherPass(
  run: Run,
  windows: readonly Int32Array[],
  ranks: Record<string, number | null>,
): Promise<RunFisher> {
  const { opts } = run;
  const side = opts.fisherSide ?? "kfac";
  // The factors go to a temporary file as they are made and come back one at a time when the block loop
  // writes them: memory holds one block's, not the whole compressed model.
  const store = await openSpillStore({ what: "fwsvd factors" });
  const made = new Map<string, Omit<Factors, "a" | "b"> & { a: [number, number]; b: [number, number] }>();
  let f: Awaited<ReturnType<typeof fwsvdFactors>>;
  try {
    f = await run.clock.time(
      "fisher",
      () =>
        fwsvdFactors({ spec: run.spec, reader: run.reader }, windows, {
          ranks,
          side,
          // K-FAC's input factors follow the compressed prefix as SVD-LLM's whitening does; the diagonal sides
          // come from the dense model (their sequential form costs a backward pass per block).
          sequential: run.sequential && side === "kfac" ? "inputs" : false,
          batchWindows: opts.fisherBatch,
          linears: run.linears,
          signal: opts.signal,
          keep: false,
          onFactor: (prefix, { a, b, ...rest }) => {
            store.put(`${prefix} a`, a.data);
            store.put(`${prefix} b`, b.data);
            made.set(prefix, { ...rest, a: [a.rows, a.cols], b: [b.rows, b.cols] });
          },
          onProgress: (e) => {
            run.memory.boundary();
            run.emit({ stage: "fisher", done: e.done, total: e.total });
          },
        }),
    );
  } catch (e) {
    await store.close();
    throw e;
  }
  let left = made.size;
  const factors = {
    get(prefix: string): Factors | undefined {
      const m = made.get(prefix);
      if (!m) return undefined;
      const read = (part: "a" | "b") => ({
        rows: m[part][0],
        cols: m[part][1],
        data: store.get(`${prefix} ${part}`) as Float32Array,
      });
      const out = { ...m, a: read("a"), b: read("b") };
      if (--left === 0) store.close();
      return out;
    },
  };
  return { side, factors, batches: f.fisher.batches, meanLoss: f.fisher.meanLoss };
}

/** SoCo's pass on the run's model and windows (the guard on `validation`), its events reported as "soco" progress. */
export async function socoRun(
  run: Run,
  windows: readonly Int32Array[],
  seed: number,
  validation?: readonly Int32Array[],
): Promise<SocoPassResult> {
  const { opts } = run;
  const o = opts.soco ?? {};
  const steps = o.steps ?? 100;
  return await run.clock.time(
    "soco",
    () =>
      socoPass({ spec: run.spec, reader: run.reader }, windows, opts.ratio, {
        ...o,
        validation: o.validation ?? validation,
        seed,
        signal: opts.signal,
        sample: () => run.memory.sample(),
        memory: run.memory,
        onProgress: (e) => {
          opts.onSoco?.(e);
          if (e.stage === "bases") run.emit({ stage: "soco", block: e.block, done: e.done, total: e.total });
          else run.emit({ stage: "soco", done: e.train.step, total: steps });
        },
      }),
  );
}
