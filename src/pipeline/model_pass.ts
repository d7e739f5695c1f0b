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
import type { Run } from "./run.ts";
import { socoPass, type SocoPassResult } from "./soco_pass.ts";

/** FWSVD's pass of a run: every compressed linear's factors, and how the Fisher was measured. */
export interface RunFisher {
  /** How the Fisher information weighted each linear. */
  side: FwsvdWeighting;
  /** Linear prefix → its factors (the block loop only writes them). */
  factors: ReadonlyMap<string, Factors>;
  /** Batches averaged (per block, when sequential). */
  batches: number;
  /** Mean calibration loss over the batches, nats per token. */
  meanLoss: number;
}

/**
 * FWSVD's Fisher pass and factors (the whole model, forward and backward, per batch; with K-FAC and
 * `sequential`, then a forward pass over the compressed prefix for the input factors).
 */
export async function fisherPass(
  run: Run,
  windows: readonly Int32Array[],
  ranks: Record<string, number | null>,
): Promise<RunFisher> {
  const { opts } = run;
  const side = opts.fisherSide ?? "kfac";
  const f = await run.clock.time(
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
        onProgress: (e) => {
          run.memory.boundary();
          run.emit({ stage: "fisher", done: e.done, total: e.total });
        },
      }),
  );
  return { side, factors: f.factors, batches: f.fisher.batches, meanLoss: f.fisher.meanLoss };
}

/** SoCo's pass on the run's model and windows, its events reported as "soco" progress. */
export async function socoRun(
  run: Run,
  windows: readonly Int32Array[],
  seed: number,
): Promise<SocoPassResult> {
  const { opts } = run;
  const o = opts.soco ?? {};
  const steps = o.steps ?? 100;
  return await run.clock.time(
    "soco",
    () =>
      socoPass({ spec: run.spec, reader: run.reader }, windows, opts.ratio, {
        ...o,
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
