/**
 * ASVD's sensitivity sweep: for every linear and each parameter ratio p of a grid, replace that one layer by
 * its ASVD factors and measure the calibration perplexity. The expensive step of ASVD, so no work is done
 * twice: the blocks before the replaced layer do not change, so their output on the calibration windows is
 * computed once per block and reused; the SVD of W·S is computed once per layer and truncated to every p;
 * inside the replaced block, the dense pass's intermediates (one {@link traceBlock} per window batch) are
 * shared by all 7 × |p| variants, each of which recomputes only from its replaced linear on
 * ({@link forwardBlockFrom}: replacing down_proj costs one low-rank product, not a block). What remains, the
 * later blocks and the lm_head for every variant, is exactly the perplexity asked for. Results go to a JSON
 * cache keyed by a hash of the weights, the windows and the settings, written after every block, so an
 * interrupted sweep resumes where it stopped. The sweep holds the model's blocks in memory.
 *
 * @module
 */
import { AbsMeanObserver } from "../calib/abs_mean.ts";
import { OptionError } from "../errors.ts";
import { writeFileAtomic } from "../io/atomic_write.ts";
import type { TensorReader } from "../io/tensor_reader.ts";
import type { Matrix } from "../linalg/matrix.ts";
import { asvdFactors, asvdSpectrum } from "../methods/asvd.ts";
import { allocateRanks, type LossCurve } from "../methods/allocation.ts";
import {
  allocateBySensitivity,
  type LayerShape,
  SENSITIVITY_RATIOS,
  type SensitivityTable,
  sweepCurves,
} from "../methods/asvd_sensitivity.ts";
import { keptRank } from "../methods/ratio.ts";
import {
  BLOCK_FIELD,
  BlockScratch,
  forwardBlockFrom,
  forwardBlockInPlace,
  type Linear,
  linearIn,
  linearOut,
  type LlamaBlock,
  type LlamaHead,
  loadBlock,
  loadHead,
  tokenNll,
  traceBlock,
} from "../model/llama.ts";
import { LINEAR_NAMES, type LinearName, linearPrefix } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import { embedWindows, type HiddenStates, runBlock } from "./hidden.ts";
import { findGarbageCollector } from "./memory.ts";
import { calibratedCurves, fisherLosses, lossCurves, truncationLosses } from "./truncation_losses.ts";

/** Options of {@link sensitivitySweep}. */
export interface SensitivityOptions {
  /** Parameter ratios to try (default 0.4…0.9). */
  ratios?: readonly number[];
  /** ASVD α (default 0.5). */
  alpha?: number;
  /** Linears to sweep (default all seven). */
  linears?: readonly LinearName[];
  /** Windows per forward batch (default 8). */
  batchSize?: number;
  /** JSON cache file: read if its key matches, rewritten after every layer. */
  cacheFile?: string;
  /** Progress: layers swept out of all. */
  onProgress?: (e: { layer?: string; done: number; total: number; etaSeconds?: number }) => void;
}

/** Result of {@link sensitivitySweep}. */
export interface SensitivityResult {
  /** table[layer][String(p)] = calibration perplexity with only that layer compressed at p. */
  table: SensitivityTable;
  /** Calibration perplexity of the dense model. */
  densePpl: number;
  /** Everything came from the cache. */
  fromCache: boolean;
  /** Wall time, seconds. */
  seconds: number;
  /** The cache key (hex). */
  key: string;
}

interface CacheFile {
  version: 1;
  key: string;
  settings: Record<string, unknown>;
  densePpl: number;
  table: SensitivityTable;
}

/** Targets of windows laid out as rows: position t predicts token t+1 of its window; the last predicts none. */
function targetsOf(windows: readonly Int32Array[], seq: number): Int32Array {
  const targets = new Int32Array(windows.length * seq);
  for (let s = 0; s < windows.length; s++) {
    for (let t = 0; t < seq; t++) targets[s * seq + t] = t + 1 < seq ? windows[s][t + 1] : -1;
  }
  return targets;
}

/** A running NLL sum over predicted positions, in window order. */
interface NllSum {
  sum: number;
  count: number;
  /** False once a predicted position's NLL was not finite. */
  finite: boolean;
}

function addNll(acc: NllSum, nll: Float64Array, targets: Int32Array): void {
  for (let i = 0; i < nll.length; i++) {
    if (targets[i] < 0) continue;
    if (!Number.isFinite(nll[i])) acc.finite = false;
    acc.sum += nll[i];
    acc.count++;
  }
}

/** exp(mean NLL); a model whose NLL was not finite somewhere is the most sensitive: Infinity, never hidden. */
function pplOf(acc: NllSum): number {
  return acc.finite ? Math.exp(acc.sum / acc.count) : Infinity;
}

/** Mean NLL → perplexity over the windows: position t predicts token t+1 of its window. */
function perplexityOf(
  spec: LlamaSpec,
  head: LlamaHead,
  h: HiddenStates,
  windows: readonly Int32Array[],
): number {
  const targets = targetsOf(windows, h.seq);
  const acc: NllSum = { sum: 0, count: 0, finite: true };
  addNll(acc, tokenNll(spec, head, h.x, targets), targets);
  return pplOf(acc);
}

async function sha256Hex(parts: (Uint8Array | string)[]): Promise<string> {
  const { createHash } = await import("node:crypto");
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

function bytesOf(a: Float32Array | Int32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * Run (or resume, or read from cache) the sweep on `windows` (≥ 1 window of ≥ 2 tokens, equal lengths).
 * Throws OptionError on bad ratios or windows.
 */
export async function sensitivitySweep(
  model: { spec: LlamaSpec; reader: TensorReader },
  windows: readonly Int32Array[],
  opts: SensitivityOptions = {},
): Promise<SensitivityResult> {
  const t0 = performance.now();
  const { spec, reader } = model;
  const ratios = [...(opts.ratios ?? SENSITIVITY_RATIOS)];
  for (const p of ratios) {
    if (!(p > 0 && p < 1)) throw new OptionError(`sensitivity sweep: ratios must be in (0, 1), got ${p}`);
  }
  if (windows.length < 1 || windows[0].length < 2) {
    throw new OptionError(`sensitivity sweep: needs at least one calibration window of 2 tokens or more`);
  }
  const linears = opts.linears ?? LINEAR_NAMES;
  const batch = opts.batchSize ?? 8;
  const alpha = opts.alpha ?? 0.5;

  // The whole model in memory for the sweep; its hash keys the cache.
  const head = await loadHead(reader, spec);
  const blocks: LlamaBlock[] = [];
  for (let i = 0; i < spec.numLayers; i++) blocks.push(await loadBlock(reader, spec, i));
  const settings = {
    alpha,
    ratios,
    linears,
    samples: windows.length,
    seqlen: windows[0].length,
    scaling: "abs_mean",
  };
  const parts: (Uint8Array | string)[] = [JSON.stringify(settings)];
  for (const w of windows) parts.push(bytesOf(w));
  parts.push(bytesOf(head.embed.data), bytesOf(head.norm), bytesOf(head.lmHead.data));
  for (const b of blocks) {
    parts.push(bytesOf(b.inputNorm), bytesOf(b.postNorm));
    for (const l of LINEAR_NAMES) {
      const lin = b[BLOCK_FIELD[l]] as Linear;
      if (lin.kind === "dense") parts.push(bytesOf(lin.weight.data));
      else parts.push(bytesOf(lin.a.data), bytesOf(lin.b.data));
    }
  }
  const key = await sha256Hex(parts);

  let cache: CacheFile = { version: 1, key, settings, densePpl: NaN, table: {} };
  if (opts.cacheFile) {
    const { readFile } = await import("node:fs/promises");
    try {
      const c = JSON.parse(await readFile(opts.cacheFile, "utf8")) as CacheFile;
      if (c.version === 1 && c.key === key) cache = c;
    } catch {
      // no cache yet, or unreadable: start afresh
    }
  }
  const save = async () => {
    if (opts.cacheFile) {
      await writeFileAtomic(opts.cacheFile, JSON.stringify(cache, null, 1) + "\n", { overwrite: true });
    }
  };

  const total = spec.numLayers * linears.length;
  const done = () =>
    Object.keys(cache.table).filter((k) => Object.keys(cache.table[k]).length === ratios.length).length;
  const startDone = done();
  const fromCache = startDone === total && Number.isFinite(cache.densePpl);
  if (fromCache) {
    return {
      table: cache.table,
      densePpl: cache.densePpl,
      fromCache,
      seconds: (performance.now() - t0) / 1000,
      key,
    };
  }

  let h = embedWindows(spec, head, windows);
  // Dense perplexity (also checks the forward is finite before hours of work).
  if (!Number.isFinite(cache.densePpl)) {
    let x = h;
    for (const b of blocks) x = runBlock(spec, b, x, batch, undefined, x === h ? "new" : "inplace");
    cache.densePpl = perplexityOf(spec, head, x, windows);
    await save();
  }
  const tSweep = performance.now();
  let swept = 0;
  const seq = h.seq, d = h.x.cols;
  const scratch = new BlockScratch();
  const gc = await findGarbageCollector();
  for (let i = 0; i < spec.numLayers; i++) {
    const todo = linears.filter((l) =>
      Object.keys(cache.table[linearPrefix(i, l)] ?? {}).length !== ratios.length
    );
    if (todo.length === 0) {
      h = runBlock(spec, blocks[i], h, batch);
      continue;
    }
    // ASVD statistics of this block's inputs (original activations), and its dense output.
    const obs = new Map<LinearName, AbsMeanObserver>();
    const next = runBlock(spec, blocks[i], h, batch, (linear: LinearName, x: Matrix) => {
      if (!todo.includes(linear)) return;
      let o = obs.get(linear);
      if (!o) obs.set(linear, o = new AbsMeanObserver(linearPrefix(i, linear), x.cols));
      o.addBatch(x);
    });
    // Every (linear, ratio) variant of the block: one SVD of W·S per linear, truncated to each rank.
    const variants: { linear: LinearName; p: number; block: LlamaBlock; nll: NllSum }[] = [];
    for (const l of todo) {
      const lin = blocks[i][BLOCK_FIELD[l]] as Linear;
      if (lin.kind !== "dense") {
        throw new OptionError(`sensitivity sweep: ${linearPrefix(i, l)} is already low-rank`);
      }
      const sp = asvdSpectrum(lin.weight, { absMean: obs.get(l)!.mean() }, { alpha });
      for (const p of ratios) {
        const m = lin.weight.rows, n = lin.weight.cols;
        const rank = Math.max(1, Math.min(keptRank(m, n, p), m, n));
        const { a, b } = asvdFactors(sp, rank);
        const block: LlamaBlock = {
          ...blocks[i],
          [BLOCK_FIELD[l]]: { kind: "lowrank", a, b, bias: lin.bias },
        };
        variants.push({ linear: l, p, block, nll: { sum: 0, count: 0, finite: true } });
      }
    }
    obs.clear();
    // Window batch by window batch: the dense block's intermediates once, then each variant from its
    // replaced linear on (what precedes it in the block is unchanged), through the later blocks to the NLL.
    for (let s0 = 0; s0 < h.samples; s0 += batch) {
      const nb = Math.min(batch, h.samples - s0), layout = { batch: nb, seq };
      const x = { rows: nb * seq, cols: d, data: h.x.data.subarray(s0 * seq * d, (s0 + nb) * seq * d) };
      const trace = traceBlock(spec, blocks[i], x, layout);
      const targets = targetsOf(windows.slice(s0, s0 + nb), seq);
      for (const vt of variants) {
        // The later blocks run in place over the variant's own output, their temporaries in one scratch
        // (bit-for-bit forwardBlock's values): no per-variant garbage beyond that output.
        const y = forwardBlockFrom(spec, vt.block, x, layout, trace, vt.linear);
        for (let j = i + 1; j < spec.numLayers; j++) {
          forwardBlockInPlace(spec, blocks[j], y, layout, undefined, scratch);
        }
        addNll(vt.nll, tokenNll(spec, head, y, targets), targets);
      }
    }
    for (const l of todo) {
      const row: Record<string, number> = {};
      for (const vt of variants) if (vt.linear === l) row[String(vt.p)] = pplOf(vt.nll);
      cache.table[linearPrefix(i, l)] = row;
    }
    variants.length = 0;
    gc?.(); // the block's variants and traces, before the next block's
    await save();
    for (const l of todo) {
      swept++;
      const el = (performance.now() - tSweep) / 1000;
      const left = total - startDone - swept;
      opts.onProgress?.({
        layer: linearPrefix(i, l),
        done: startDone + swept,
        total,
        etaSeconds: (el / swept) * left,
      });
    }
    h = next;
  }
  return {
    table: cache.table,
    densePpl: cache.densePpl,
    fromCache: false,
    seconds: (performance.now() - t0) / 1000,
    key,
  };
}

/** How ranks are chosen across the linears: see {@link allocateLinears}. */
export type AllocationMode = "uniform" | "sensitivity" | "sweep" | "global";

/** Options of {@link allocateLinears}. */
export interface AllocateLinearsOptions {
  /** "sensitivity" (ASVD: fast, loss-aware), "sweep" (ASVD: the paper's full sweep) or "global" (any method). */
  allocation: Exclude<AllocationMode, "uniform">;
  /** The method whose truncation is allocated. */
  method: "svd" | "asvd" | "svdllm";
  /** Fraction of the linears' parameters to keep, in (0, 1). */
  kept: number;
  /** ASVD α (default 0.5). */
  alpha?: number;
  /** Linears to compress (default all seven). */
  linears?: readonly LinearName[];
  /** Windows per forward batch (default 8). */
  batchSize?: number;
  /**
   * Sweeps: cache file and ratio grid of the full sweep, and how many of the windows it uses (default all).
   * `ratio` turns "sensitivity" into its calibrated variant: output-error curves scaled by a one-ratio sweep
   * at that ratio on `samples` windows (default 8); slower, and not better on tinylm-brown or stories260K.
   */
  sensitivity?: {
    cacheFile?: string;
    ratios?: readonly number[];
    samples?: number;
    ratio?: number;
    /**
     * "sensitivity"'s estimate of what each component costs: "fisher" (default: the calibration loss's
     * second-order increase, from one backward pass; see {@link fisherLosses}) or "output" (the layer's own
     * output error, one forward pass; faster, worse on tinylm-brown: 122.25 against 120.66 at 25 % removed).
     */
    proxy?: "fisher" | "output";
  };
  /** Checked between the backward passes of the "fisher" estimate. */
  signal?: AbortSignal;
  /** Progress of the sweep or of the losses' pass. */
  onProgress?: (e: { layer?: string; done: number; total: number; etaSeconds?: number }) => void;
}

/** Result of {@link allocateLinears}. */
export interface LinearAllocation {
  /** Per linear (tensor prefix): the rank, or null to stay dense. */
  ranks: Record<string, number | null>;
  /** Fraction of the linears' parameters kept: at most the target, within one rank step of it. */
  achievedKept: number;
  /** Dense calibration perplexity, when a sweep measured it. */
  densePpl?: number;
  /** A full sweep came from its cache. */
  fromCache: boolean;
  /** Wall seconds. */
  seconds: number;
}

/**
 * Choose every linear's rank under one budget (`kept` of the linears' parameters), landing within one rank
 * step of it:
 * - "sweep": ASVD's sensitivity sweep (every linear at every ratio of the grid, calibration perplexity of the
 *   whole model) and the paper's cut on that grid, then what the cut leaves of the budget filled rank by rank
 *   along the perplexities interpolated between the grid's ranks;
 * - "sensitivity" (ASVD, fast): every component's estimated increase of the calibration NLL, to second order
 *   from one gradient pass and one streamed statistics pass ({@link fisherLosses}), least total increase
 *   under the budget; with `sensitivity.proxy: "output"` the output error below instead;
 * - "global": the method's own exact per-component truncation losses on the calibration inputs (ASVD: its
 *   output error; SVD-LLM: the σ² tail of W·L; SVD without calibration: σ² of W), as fractions of each
 *   linear's output energy, least total loss within each kind of linear (q_proj, …, down_proj), each kind
 *   keeping the target share;
 * - "sensitivity" with `sensitivity.ratio`: the calibrated variant (see {@link calibratedCurves}).
 * `windows` may be undefined for "global" with plain SVD (weight-space losses). Throws OptionError on a
 * target no allocation reaches.
 */
export async function allocateLinears(
  model: { spec: LlamaSpec; reader: TensorReader },
  windows: readonly Int32Array[] | undefined,
  opts: AllocateLinearsOptions,
): Promise<LinearAllocation> {
  const t0 = performance.now();
  const { spec } = model;
  const linears = opts.linears ?? LINEAR_NAMES;
  const sw = opts.sensitivity ?? {};
  const shapes: LayerShape[] = [];
  const blockShapes = await loadBlock(model.reader, spec, 0);
  for (let i = 0; i < spec.numLayers; i++) {
    for (const l of linears) {
      const lin = blockShapes[BLOCK_FIELD[l]] as Linear;
      shapes.push({ name: linearPrefix(i, l), rows: linearOut(lin), cols: linearIn(lin) });
    }
  }
  const sweepOpts = { alpha: opts.alpha, linears, batchSize: opts.batchSize, onProgress: opts.onProgress };
  let curves: LossCurve[], rule: "threshold" | "marginal" = "threshold";
  let groupOf: ((name: string) => string) | undefined;
  let start: Record<string, number | null> | undefined;
  let densePpl: number | undefined, fromCache = false;
  if (opts.allocation !== "global" && opts.method !== "asvd") {
    throw new OptionError(`allocation "${opts.allocation}" applies to method "asvd" only; use "global"`);
  }
  if (opts.allocation === "sweep") {
    const res = await sensitivitySweep(model, windows!.slice(0, sw.samples ?? windows!.length), {
      ...sweepOpts,
      ratios: sw.ratios,
      cacheFile: sw.cacheFile,
    });
    curves = sweepCurves(res.table, shapes, res.densePpl);
    // The paper's cut on its ratio grid, then the budget it leaves filled rank by rank along the
    // interpolated curves. (The threshold rule on the interpolated curves alone did worse on tinylm-brown at
    // 25 % removed: ppl 122.62 against the cut's 120.67.)
    start = allocateBySensitivity(res.table, shapes, opts.kept).ranks;
    (densePpl = res.densePpl), (fromCache = res.fromCache);
  } else if (opts.allocation === "sensitivity" && sw.ratio !== undefined) {
    const p = sw.ratio;
    const losses = await truncationLosses(model, windows, { ...sweepOpts, method: "asvd" });
    const res = await sensitivitySweep(model, windows!.slice(0, sw.samples ?? CALIBRATION_SAMPLES), {
      ...sweepOpts,
      ratios: [p],
    });
    const measured: Record<string, { rank: number; nll: number }> = {};
    for (const s of shapes) {
      measured[s.name] = {
        rank: Math.max(1, keptRank(s.rows, s.cols, p)),
        nll: Math.log(res.table[s.name][String(p)] / res.densePpl),
      };
    }
    curves = calibratedCurves(losses, measured);
    densePpl = res.densePpl;
  } else if (opts.allocation === "sensitivity" && (sw.proxy ?? "fisher") === "fisher") {
    // The loss-aware estimate: each component's removal in calibration NLL (second order, from a backward
    // pass on 8 windows), so all linears share one unit and the least total loss under the budget is the
    // rule (within each kind of linear did worse: 120.94). On tinylm-brown at 25 % removed: ppl 120.66
    // against the full sweep's 120.60–120.67 and the output error's 122.25; it keeps block 0's MLP dense as
    // the sweep does.
    const losses = await fisherLosses(model, windows, { ...sweepOpts, signal: opts.signal });
    curves = lossCurves(losses);
    rule = "marginal";
  } else {
    // Relative losses (the fraction of each linear's output lost), compared only among linears of one kind
    // (all q_proj, all down_proj, …), each kind keeping its share: on stories260K (svdllm, 20/40/60 %
    // removed) this beat absolute losses over all linears (64.4/90.0/147 → 29.4/87.0/117.7) and relative
    // ones over all linears (32.0/92.1/142.6). For ASVD its own output error, not SVD-LLM's whitened loss:
    // on tinylm-brown at 25 % removed 122.25 against 121.93, but on stories260K at 30 % (the test) below the
    // sweep's ppl, where the whitened ranking lands above it (272 against 244).
    const losses = await truncationLosses(model, windows, { ...sweepOpts, method: opts.method });
    curves = lossCurves(losses, { relative: true });
    rule = "marginal";
    groupOf = (name: string) => name.replace(/^model\.layers\.\d+\./, "");
  }
  const a = allocateRanks(curves, opts.kept, { rule, groupOf, start });
  return {
    ranks: a.ranks,
    achievedKept: a.achievedKept,
    densePpl,
    fromCache,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** Windows of the calibrated variant's one-ratio sweep (8 of 32: 35 CPU-s on tinylm-brown). */
const CALIBRATION_SAMPLES = 8;
