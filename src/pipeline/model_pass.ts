/**
 * The whole-model passes that come before the block loop of a `compress` run: FWSVD's Fisher pass (forward
 * and backward over the calibration windows) and SoCo's bases and training, each timed by the run's clock and
 * reported as its progress. Neither needs calibration streams in the block loop.
 *
 * @module
 */
import type { FisherSide } from "../methods/fwsvd.ts";
import { fisherInformation } from "./fwsvd.ts";
import type { Run } from "./run.ts";
import { socoPass, type SocoPassResult } from "./soco_pass.ts";

/** FWSVD's Fisher information of a run: the weighted side of every compressed linear, by prefix. */
export interface RunFisher {
  /** Side weighted. */
  side: FisherSide;
  /** Linear prefix → Fisher information per input feature ("input") or output row ("output"). */
  byPrefix: ReadonlyMap<string, Float64Array>;
  /** Batches averaged. */
  batches: number;
  /** Mean calibration loss over the batches, nats per token. */
  meanLoss: number;
}

/** FWSVD's one Fisher pass over the calibration windows (the whole model, forward and backward, per batch). */
export async function fisherPass(run: Run, windows: readonly Int32Array[]): Promise<RunFisher> {
  const { opts } = run;
  const side = opts.fisherSide ?? "input";
  const f = await run.clock.time(
    "fisher",
    () =>
      fisherInformation({ spec: run.spec, reader: run.reader }, windows, {
        batchWindows: opts.fisherBatch,
        linears: run.linears,
        signal: opts.signal,
        onProgress: (e) => {
          run.memory.boundary();
          run.emit({ stage: "fisher", done: e.done, total: e.total });
        },
      }),
  );
  return {
    side,
    byPrefix: side === "input" ? f.cols : f.rows,
    batches: f.batches,
    meanLoss: f.meanLoss,
  };
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
