/**
 * One step of the compression driver, GPTQ style: for block `i`, **observe** its linears' inputs on the
 * calibration stream, **factor** each linear with the method, **propagate** the stream through the compressed
 * (or dense) block to the next block's inputs, and hand the factors to the output side. Everything of the
 * block (weights, observers, factors) lives in this step's frame and is garbage once it returns.
 *
 * Calibration streams: `comp` is fed the compressed prefix's outputs (sequential calibration, and SVD-LLM's
 * update refit), `orig` the original model's (the ASVD reference, and SVD-LLM's whitening with `update`).
 *
 * @module
 */
import { NumericError, OptionError } from "../errors.ts";
import { AbsMeanObserver } from "../calib/abs_mean.ts";
import { GramObserver } from "../calib/gram.ts";
import type { TensorReader } from "../io/tensor_reader.ts";
import type { CholeskyResult } from "../linalg/cholesky.ts";
import type { ResidentCholesky } from "../linalg/cholesky_resident.ts";
import type { Matrix } from "../linalg/matrix.ts";
import { compressAsvd } from "../methods/asvd.ts";
import type { Factors, MethodReport } from "../methods/factors.ts";
import { type LayerParams, layerParams } from "../methods/ratio.ts";
import { compressSvd } from "../methods/svd.ts";
import { compressSvdLlm, crossFromLayer, type SvdLlmStats, updateA } from "../methods/svdllm.ts";
import {
  BLOCK_FIELD,
  BlockScratch,
  type Linear,
  type LinearObserver,
  type LlamaBlock,
  loadBlock,
} from "../model/llama.ts";
import { LINEAR_NAMES, type LinearName, linearPrefix } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import { type HiddenStates, runBlock } from "./hidden.ts";

export type { HiddenStates };
import { COLLECT_BYTES, type MemoryPolicy } from "./memory_policy.ts";
import type { PhaseClock } from "./phases.ts";
import type { CompressMethod } from "./svd_llm_config.ts";

/** One compressed linear in the report: its parameter accounting and what the method measured. */
export interface LayerReport extends LayerParams {
  /** Fraction of Σσ² kept (of W, W·S or W·L). */
  energyKept?: number;
  /** SVD-LLM: predicted relative layer loss ‖(W − AB)Xᵀ‖/‖WXᵀ‖ on the calibration inputs. */
  relativeLoss?: number;
  /** SVD-LLM: Cholesky shift added to the Gram matrix. */
  shift?: number;
  /** SVD-LLM update: shift added to B P Bᵀ. */
  updateShift?: number;
  /** Seconds spent factoring. */
  seconds: number;
}

/** Linears that read the same input share one observer. */
export const INPUT_GROUP: Readonly<Record<LinearName, string>> = {
  "self_attn.q_proj": "attn",
  "self_attn.k_proj": "attn",
  "self_attn.v_proj": "attn",
  "self_attn.o_proj": "o",
  "mlp.gate_proj": "mlp",
  "mlp.up_proj": "mlp",
  "mlp.down_proj": "down",
};

/** Everything a block step needs: the run's fixed choices, its streams, and its hooks. */
export interface BlockStepContext {
  /** Architecture. */
  spec: LlamaSpec;
  /** Weights (checked for non-finite values as read). */
  reader: TensorReader;
  /** Method. */
  method: CompressMethod;
  /** Linears compressed, in the model's order (the report's order). */
  linears: readonly LinearName[];
  /** Factoring order: the widest input first, so the largest statistics are dropped first. */
  factorOrder: readonly LinearName[];
  /** Rank of each linear prefix (null: left dense). */
  ranks: Readonly<Record<string, number | null>>;
  /** ASVD α. */
  alpha?: number;
  /** SVD-LLM Cholesky damping. */
  damping?: "none" | "auto" | number;
  /** SoCo and FWSVD: the factors their model-level pass made, by linear prefix (the step only writes them). */
  learned?: { get(prefix: string): Factors | undefined };
  /** SVD-LLM update of A on the compressed prefix's activations. */
  update: boolean;
  /** Feed the statistics from the compressed prefix's outputs. */
  sequential: boolean;
  /** Windows per forward batch. */
  batch: number;
  /** Original-model stream (advanced in place), when used. */
  orig?: HiddenStates;
  /** Compressed-prefix stream (advanced in place), when used. */
  comp?: HiddenStates;
  /** Phase timing. */
  clock: PhaseClock;
  /** Memory hooks. */
  memory: MemoryPolicy;
  /** Checked between linears and between batches. */
  signal?: AbortSignal;
  /** A linear of block `i` was factored (for progress). */
  onLinear(i: number, prefix: string): void;
  /** Write block `i`'s tensors with these factors. */
  write(i: number, factored: ReadonlyMap<LinearName, Factors>): Promise<void>;
}

/**
 * Compress block `i`: observe, factor, propagate, write. Returns the reports of its linears, in model order.
 * Call `memory.afterBlock` once this has returned: only then is nothing of the block reachable.
 */
export async function compressBlock(ctx: BlockStepContext, i: number): Promise<LayerReport[]> {
  const { spec, method, update, orig, comp, clock, memory } = ctx;
  const block = await clock.time("read", () => loadBlock(ctx.reader, spec, i));
  const wanted = new Set(ctx.linears.filter((l) => ctx.ranks[linearPrefix(i, l)] !== null));

  // Observe: statistics of this block's linear inputs.
  const groups = new Map<string, AbsMeanObserver | GramObserver>();
  const updateGroups = new Map<string, AbsMeanObserver | GramObserver>();
  let nextOrig: HiddenStates | undefined;
  const statsStream = update ? orig : ctx.sequential ? comp : orig;
  if (statsStream || (update && comp)) {
    clock.time("calibrate", () => {
      if (statsStream) {
        // On the original stream this pass is also its advance (in place); on the compressed stream its output
        // is not needed (the compressed block advances that one). After the last block the original stream is
        // not read again: observe only (no down_proj product).
        const advance = statsStream === orig && i < spec.numLayers - 1;
        const obs = observer(groups, method === "svdllm", wanted, i);
        runBatches(ctx, block, statsStream, obs, advance ? "inplace" : "discard", true);
        if (statsStream === orig) nextOrig = orig;
      }
      if (update && comp) {
        runBatches(ctx, block, comp, observer(updateGroups, true, wanted, i), "discard", true);
      }
    });
  }

  // Factor each linear. One Cholesky per shared input (q/k/v, gate/up); each group's statistics are dropped
  // after its last linear, so at most one Gram matrix and its factor are alive while a big linear is factored.
  const factored = new Map<LinearName, Factors & { updateShift?: number }>();
  const choleskyOf = new Map<string, CholeskyResult | ResidentCholesky>();
  const reports = new Map<LinearName, LayerReport>();
  for (const name of ctx.factorOrder) {
    const prefix = linearPrefix(i, name);
    const rank = ctx.ranks[prefix];
    if (rank === null || rank === undefined) continue;
    ctx.signal?.throwIfAborted();
    const lin = block[BLOCK_FIELD[name]] as Linear;
    if (lin.kind !== "dense") throw new OptionError(`compress: ${prefix} is already low-rank in the input`);
    const w = lin.weight;
    const g = INPUT_GROUP[name];
    const last = name === lastOf(ctx.factorOrder, wanted, g);
    const f = named(
      `${prefix}.weight (${ctx.reader.name})`,
      () =>
        clock.time("factor", (): Factors & { updateShift?: number } => {
          if (method === "svd") return compressSvd(w, rank);
          if (method === "soco" || method === "fwsvd") return ctx.learned!.get(prefix)!;
          if (method === "asvd") {
            const o = groups.get(g) as AbsMeanObserver;
            return compressAsvd(w, { absMean: o.mean(), absMax: o.max() }, rank, { alpha: ctx.alpha });
          }
          // The group's last linear owns its statistics: they leave the maps first, so the Gram matrix and its
          // factor can be collected during the factorisation (`release`).
          const stats = svdllmStats(groups, choleskyOf, g, last, ctx.damping);
          const s = compressSvdLlm(w, stats, rank, {
            damping: ctx.damping,
            collect: () => memory.dropped(COLLECT_BYTES),
          });
          if (!update) return s;
          const p = (updateGroups.get(g) as GramObserver).gram();
          const u = updateA(s.b, { gram: p, cross: crossFromLayer(w, p) });
          return { ...s, a: u.a, updateShift: u.shift };
        }),
    );
    factored.set(name, f);
    // Without an original stream the dense weight has no further use: drop it now, so that the block never
    // holds a linear twice (dense and factored) while its later linears are factored.
    if (!orig) setLinear(block, name, { kind: "lowrank", a: f.a, b: f.b, bias: lin.bias });
    if (last) {
      groups.delete(g);
      updateGroups.delete(g);
      choleskyOf.delete(g);
    }
    reports.set(name, reportOf(prefix, f.report, f.updateShift));
    memory.afterLinear(w.rows, w.cols);
    ctx.onLinear(i, prefix);
  }
  groups.clear();
  updateGroups.clear();

  // Propagate: the compressed block gives the next block's inputs. (Built inline, never held by a local. The
  // last block's output is never read: no pass. Its factors are finite, checked when formed.)
  clock.time("propagate", () => {
    if (comp && i < spec.numLayers - 1) {
      runBatches(ctx, lowRankBlock(block, factored), comp, undefined, "inplace", false);
      assertFiniteStream(comp, i);
    }
    if (orig && !nextOrig) runBatches(ctx, block, orig, undefined, "inplace", false);
    memory.sample();
  });

  await clock.time("write", () => ctx.write(i, factored));
  factored.clear(); // the factors are on disk; the caller's memory.afterBlock collects the rest of the block
  return ctx.linears.filter((l) => reports.has(l)).map((l) => reports.get(l)!);
}

/** An observer feeding `target`'s group statistics; q/k/v and gate/up share one input, counted once. */
function observer(
  target: Map<string, AbsMeanObserver | GramObserver>,
  gram: boolean,
  wanted: Set<LinearName>,
  i: number,
): LinearObserver {
  return (linear: LinearName, x: Matrix) => {
    if (!wanted.has(linear)) return;
    const g = INPUT_GROUP[linear];
    if (linear !== firstOf(wanted, g)) return;
    let o = target.get(g);
    if (!o) {
      const name = linearPrefix(i, linear); // errors name the (first) layer fed
      o = gram ? new GramObserver(name, x.cols) : new AbsMeanObserver(name, x.cols);
      target.set(g, o);
    }
    o.addBatch(x);
  };
}

/**
 * {@link runBlock} over the stream `h` in place (or for its observer only), `batch` windows at a time, all
 * batches sharing one scratch for their temporaries (norms, projections, attention, MLP activations: tens of
 * MB for 1024 tokens), so a pass leaves one set of them, collected once at its end, instead of a set per
 * batch (collecting after every batch cost a quarter of the run time).
 */
function runBatches(
  ctx: BlockStepContext,
  block: LlamaBlock,
  h: HiddenStates,
  observe: LinearObserver | undefined,
  output: "inplace" | "discard",
  observed: boolean,
): void {
  // The scratch lives in passWithScratch's frame only: a local here would still be a root during the
  // collection below, and the pass's ~50 MiB of temporaries (d 1024, 1024 tokens) would stay resident through
  // the factorisations that follow (measured: they were the difference between 346 and 294 MiB).
  ctx.memory.afterPass(passWithScratch(ctx, block, h, observe, output), observed);
}

/** One pass over its own scratch, batch by batch (checking the signal between them); returns the scratch's bytes. */
function passWithScratch(
  ctx: BlockStepContext,
  block: LlamaBlock,
  h: HiddenStates,
  observe: LinearObserver | undefined,
  output: "inplace" | "discard",
): number {
  const scratch = new BlockScratch();
  const d = h.x.cols, rowsPer = h.seq;
  for (let s0 = 0; s0 < h.samples; s0 += ctx.batch) {
    ctx.signal?.throwIfAborted();
    const nb = Math.min(ctx.batch, h.samples - s0);
    const part = h.x.data.subarray(s0 * rowsPer * d, (s0 + nb) * rowsPer * d);
    const sub = { x: { rows: nb * rowsPer, cols: d, data: part }, samples: nb, seq: h.seq };
    runBlock(ctx.spec, block, sub, nb, observe, output, scratch); // "inplace" writes over h's rows
  }
  return scratch.bytes;
}

function setLinear(block: LlamaBlock, name: LinearName, lin: Linear): void {
  (block as unknown as Record<string, Linear>)[BLOCK_FIELD[name]] = lin;
}

/** `block` with the factored linears replaced by their low-rank pairs. */
function lowRankBlock(block: LlamaBlock, factored: Map<LinearName, Factors>): LlamaBlock {
  const out: LlamaBlock = { ...block };
  for (const [name, f] of factored) {
    const lin = block[BLOCK_FIELD[name]] as Linear;
    setLinear(out, name, { kind: "lowrank", a: f.a, b: f.b, bias: lin.bias });
  }
  return out;
}

/**
 * SVD-LLM statistics of input group `g`: the group's Cholesky factor (computed once, from its observer's Gram
 * matrix). For the group's `last` linear the observer and the factor leave the maps, and the stats object
 * is their only holder (`release: true`), so `compressSvdLlm` can let them be collected early.
 */
function svdllmStats(
  groups: Map<string, AbsMeanObserver | GramObserver>,
  choleskyOf: Map<string, CholeskyResult | ResidentCholesky>,
  g: string,
  last: boolean,
  damping: BlockStepContext["damping"],
): SvdLlmStats {
  let chol = choleskyOf.get(g);
  if (!chol) {
    // The Gram matrix has no use after its factorisation: the factor takes its place (one in×in float64
    // matrix per group instead of two; for down_proj's input, the largest, tens of MB), in wasm memory where
    // the observer accumulated it (no host copy of either: see linalg/cholesky_resident.ts).
    chol = (groups.get(g) as GramObserver).cholesky({ damping: damping ?? "auto" });
  }
  if (last) {
    groups.delete(g);
    choleskyOf.delete(g);
    return { cholesky: chol, release: true };
  }
  choleskyOf.set(g, chol);
  return { cholesky: chol };
}

/** The last linear of `order` (the factoring order) that is wanted and reads the inputs of `group`. */
function lastOf(
  order: readonly LinearName[],
  wanted: Set<LinearName>,
  group: string,
): LinearName | undefined {
  let last: LinearName | undefined;
  for (const l of order) if (wanted.has(l) && INPUT_GROUP[l] === group) last = l;
  return last;
}

/** The first linear, in model order, that is wanted and reads the inputs of `group`. */
function firstOf(wanted: Set<LinearName>, group: string): LinearName | undefined {
  for (const l of LINEAR_NAMES) if (wanted.has(l) && INPUT_GROUP[l] === group) return l;
  return undefined;
}

function assertFiniteStream(h: HiddenStates, block: number): void {
  const d = h.x.data;
  for (let i = 0; i < d.length; i++) {
    if (!Number.isFinite(d[i])) {
      throw new NumericError(
        `compress: the compressed block ${block} produced a non-finite activation at token ${
          Math.floor(i / h.x.cols)
        } (check the input weights and the calibration data)`,
      );
    }
  }
}

function reportOf(name: string, r: MethodReport, updateShift?: number): LayerReport {
  const p = layerParams(name, r.rows, r.cols, r.rank);
  return {
    name,
    rows: r.rows,
    cols: r.cols,
    rank: r.rank,
    before: p.before,
    after: p.after,
    energyKept: r.energyKept,
    relativeLoss: r.relativeLoss,
    shift: r.shift,
    updateShift,
    seconds: r.seconds,
  };
}

/**
 * Run `f`; a NumericError it throws (an SVD that did not converge, a Gram matrix damping could not repair) is
 * rethrown with `label` (the tensor and its file) in front, so the user knows which layer of which model.
 */
export function named<T>(label: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (!(e instanceof NumericError) || e.message.startsWith(label)) throw e;
    const err = new NumericError(`${label}: ${e.message}`);
    err.cause = e;
    throw err;
  }
}
