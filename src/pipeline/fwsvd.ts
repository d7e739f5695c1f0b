/**
 * FWSVD over a whole model ({@link fwsvdFactors}): one Fisher pass over the calibration windows with the
 * streaming backward pass ({@link lossAndGrad}: each linear's x and dy), accumulating per linear the diagonal
 * Fisher sums Σ (∂L/∂W_ij)² per input feature and per output row and, for the default K-FAC weighting, the
 * factors E[dy dyᵀ] and E[x xᵀ]; then each linear factored at the rank the ratio gives. By default (K-FAC,
 * `sequential: "inputs"`) block i's E[x xᵀ] is re-taken on the outputs of the already-compressed blocks
 * before it (a forward pass, as SVD-LLM's sequential whitening), its E[dy dyᵀ] kept from the dense pass;
 * `sequential: true` re-takes block i's whole Fisher with a backward pass from block i on the compressed
 * prefix (the later blocks dense). {@link fwsvdModel} keeps the result in memory as a reader of the
 * compressed model, for evaluation; `compress(…, { method: "fwsvd" })` runs the same passes and writes the
 * factors through the driver's one output side.
 *
 * Memory: the diagonal Fisher pass holds one block's weights and intermediates plus the block-boundary
 * checkpoints of one batch (see `backward.ts`) and the diagonal sums (one float64 per input feature and output
 * row of every linear). The K-FAC pass runs block-major instead — forward over every batch, then the backward
 * of block L−1 over every batch, then block L−2, … — so that each block's factors (in² per input group and
 * out² per linear) are complete before the next block's start: they are spilled to a temporary file (float64,
 * exact) with the block-boundary checkpoints (float32), and read back one block at a time by the factoring
 * (see `spill.ts`; without `node:fs` they stay in memory). Memory is then one block's weights, intermediates
 * and factors plus every batch's hidden state and gradient at one block boundary (tokens × d each), flat in
 * depth; the factoring holds one dense block at a time and the factors (smaller than the dense model).
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "../model/load.ts";
 * import { perplexity } from "../eval/perplexity.ts";
 * import { fwsvdModel } from "./fwsvd.ts";
 * const m = await loadModel("models/stories260K/stories260K.gguf");
 * const ids = m.tokenizer.encode(text, { bos: true });
 * const c = await fwsvdModel(m, { ratio: { removed: 0.2 }, calibration: { ids, samples: 32, seqlen: 256 } });
 * console.log((await perplexity(c, evalIds, { window: 512 })).ppl);
 * ```
 *
 * @module
 */
import { NumericError, OptionError } from "../errors.ts";
import { checkedReader, type TensorInfo, type TensorReader } from "../io/tensor_reader.ts";
import { calibrationWindows } from "../calib/windows.ts";
import type { Matrix, Matrix64 } from "../linalg/matrix.ts";
import {
  addFisherBatch,
  compressFwsvd,
  compressFwsvdKfac,
  type FwsvdWeighting,
  type KfacFactors,
} from "../methods/fwsvd.ts";
import { GramObserver } from "../calib/gram.ts";
import { INPUT_GROUP } from "./block_step.ts";
import { layerParams, rankFor, type Ratio, summarizeParams } from "../methods/ratio.ts";
import { blockBackward, blockForward, lossAndGrad, nextTokenTargets } from "../model/backward.ts";
import { BLOCK_PROGRAM } from "../model/block_def.ts";
import { embeddingForward, headLossBackward } from "../model/backward_ops.ts";
import { openSpillStore, type SpillStore } from "./spill.ts";
import type { Factors } from "../methods/factors.ts";
import {
  BLOCK_FIELD,
  type Linear,
  type LlamaBlock,
  type LlamaHead,
  loadBlock,
  loadHead,
  type ModelWeights,
} from "../model/llama.ts";
import { checkLayerCount } from "../model/load.ts";
import { LINEAR_NAMES, type LinearName, linearPrefix, SVD_A, SVD_B } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import { createPeakMemory } from "./memory.ts";
import { linearShape } from "../model/linear_shape.ts";

/** Options of {@link fisherInformation}. */
export interface FisherOptions {
  /** Windows per batch (default 1: each window's own gradient is squared, the per-sample Fisher of the paper). */
  batchWindows?: number;
  /** Linears to accumulate (default all seven). */
  linears?: readonly LinearName[];
  /**
   * Also accumulate the K-FAC factors of every linear (E[x xᵀ] per input, E[dy dyᵀ] per output, over all
   * tokens: `FisherInfo.kfac`). Default false.
   */
  kfac?: boolean;
  /**
   * Where the K-FAC pass keeps its block-boundary checkpoints and finished factors (see `spill.ts`): "auto"
   * (default) a temporary file where `node:fs` exists, true a file (an error without), false memory.
   */
  spill?: boolean | "auto";
  /** Called after each batch (the K-FAC pass: after each block of its backward, `done` counting blocks). */
  onProgress?: (e: { stage: "fisher"; done: number; total: number; loss: number }) => void;
  /** Checked between blocks. */
  signal?: AbortSignal;
}

/** The per-row Fisher information of every linear, and how it was measured. */
export interface FisherInfo {
  /** Linear prefix (`model.layers.{i}.{name}`) → per output row i: mean over batches of Σ_j (∂L/∂W_ij)². */
  rows: Map<string, Float64Array>;
  /** Linear prefix → per input feature j: mean over batches of Σ_i (∂L/∂W_ij)². */
  cols: Map<string, Float64Array>;
  /** The K-FAC factors of every linear, block by block (with `kfac`; release them with `close()`). */
  kfac?: KfacStore;
  /** Batches averaged. */
  batches: number;
  /** Mean calibration loss over the batches (nats per token). */
  meanLoss: number;
  /** Wall time, seconds. */
  seconds: number;
}

/** The K-FAC factors of a Fisher pass, read back one block at a time. */
export interface KfacStore {
  /** Whether the factors are in a temporary file (else in memory). */
  readonly spilled: boolean;
  /**
   * Block i's factors: linear prefix → E[x xᵀ] (in×in) and E[dy dyᵀ] (out×out), fresh copies when spilled;
   * linears reading the same input share one `input` matrix.
   */
  block(i: number): Map<string, KfacFactors>;
  /** Bytes stored (factors and checkpoints). */
  bytes(): number;
  /** Release the file or the arrays (idempotent). */
  close(): Promise<void>;
}

/**
 * One Fisher pass over `windows` (equal lengths ≥ 2): per batch, the mean next-token loss's gradient, and for
 * each linear Σ_j (dyᵀ·x)_ij² added per row; finally divided by the number of batches. With `kfac`, also the
 * K-FAC factors, block-major and spilled (see the module doc; the same sums in the same order as batch by
 * batch). Throws NumericError when a batch's loss is not finite (a NaN model would give NaN Fisher rows).
 */
export async function fisherInformation(
  model: ModelWeights,
  windows: readonly Int32Array[],
  opts: FisherOptions = {},
): Promise<FisherInfo> {
  const t0 = performance.now(), { spec } = model;
  const { reader, head, batches } = await startFisher(model, windows, opts);
  if (opts.kfac) return await kfacFisher({ spec, reader }, head, batches, opts, t0);
  const acc = new FisherAccumulator(opts.linears ?? LINEAR_NAMES, false);
  const total = batches.length;
  let lossSum = 0;
  for (let b = 0; b < total; b++) {
    const r = await lossAndGrad({ spec, head, block: (i) => loadBlock(reader, spec, i) }, batches[b], {
      signal: opts.signal,
      onLinearGrad: (layer, lin, x, dy) => acc.add(layer, lin, x, dy),
    });
    lossSum += checkedLoss(r.loss, b);
    opts.onProgress?.({ stage: "fisher", done: b + 1, total, loss: r.loss });
  }
  const { rows, cols } = acc.result(total);
  return {
    rows,
    cols,
    batches: total,
    meanLoss: lossSum / total,
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * What every Fisher pass starts with, checked before any work: the batches of `opts.batchWindows` windows
 * (default 1), the model's reader (checked) and its head.
 */
async function startFisher(
  model: ModelWeights,
  windows: readonly Int32Array[],
  opts: FisherOptions,
): Promise<{ reader: TensorReader; head: LlamaHead; batches: Int32Array[][] }> {
  const per = opts.batchWindows ?? 1;
  if (!Number.isInteger(per) || per < 1) {
    throw new OptionError(`fwsvd: batchWindows must be a positive integer, got ${per}`);
  }
  if (!windows.length) throw new OptionError("fwsvd: no calibration windows");
  const reader = checkedReader(model.reader);
  checkLayerCount(reader, model.spec);
  return { reader, head: await loadHead(reader, model.spec), batches: batchesOf(windows, per) };
}

function batchesOf(windows: readonly Int32Array[], per: number): Int32Array[][] {
  const batches: Int32Array[][] = [];
  for (let b = 0; b * per < windows.length; b++) batches.push(windows.slice(b * per, (b + 1) * per));
  return batches;
}

const layoutOf = (batch: readonly Int32Array[]) => ({ batch: batch.length, seq: batch[0].length });

/**
 * The Fisher pass with K-FAC factors, block-major (see the module doc): every batch forward, its block inputs
 * spilled; the head's loss and dL/dh per batch; then for i = L−1 … 0 every batch's backward through block i
 * (recomputed from its checkpoint), after which block i's factors are final and spilled too.
 */
async function kfacFisher(
  model: ModelWeights,
  head: Awaited<ReturnType<typeof loadHead>>,
  batches: readonly Int32Array[][],
  opts: FisherOptions,
  t0: number,
): Promise<FisherInfo> {
  const { spec, reader } = model, d = spec.hiddenSize, L = spec.numLayers;
  const wanted = opts.linears ?? LINEAR_NAMES;
  const store = await openSpillStore({ what: "fwsvd K-FAC factors", spill: opts.spill });
  try {
    // Forward: each batch's input to block i (tokens×d, float32) is kept under `x i b`.
    let hidden = batches.map((b) => embeddingForward(head.embed, b));
    for (let i = 0; i < L; i++) {
      opts.signal?.throwIfAborted();
      const block = await loadBlock(reader, spec, i);
      hidden = hidden.map((h, b) => {
        store.put(`x ${i} ${b}`, h.data);
        return blockForward(spec, block, h, layoutOf(batches[b]), false).out!;
      });
    }
    // The head: each batch's mean next-token loss and dL/dh (tokens×d).
    let lossSum = 0;
    const dh = hidden.map((h, b) => {
      const tokens = batches[b].length * (batches[b][0].length - 1);
      const r = headLossBackward(spec, head, h, nextTokenTargets(batches[b]), { scale: 1 / tokens });
      lossSum += checkedLoss(r.nllSum / tokens, b);
      return r.dh;
    });
    hidden = [];
    const rows = new Map<string, Float64Array>(), cols = new Map<string, Float64Array>();
    for (let i = L - 1; i >= 0; i--) {
      opts.signal?.throwIfAborted();
      const block = await loadBlock(reader, spec, i);
      const acc = new FisherAccumulator(wanted, true);
      for (let b = 0; b < batches.length; b++) {
        const layout = layoutOf(batches[b]), n = layout.batch * layout.seq;
        const x = { rows: n, cols: d, data: store.get(`x ${i} ${b}`) as Float32Array };
        const values = blockForward(spec, block, x, layout, true);
        dh[b] = blockBackward(spec, block, values, dh[b], layout, {
          onLinear: (lin, xi, dy) => acc.add(i, lin, xi, dy),
        }).dx;
      }
      const r = acc.result(batches.length);
      for (const [k, v] of r.rows) rows.set(k, v);
      for (const [k, v] of r.cols) cols.set(k, v);
      for (const lin of wanted) {
        const key = linearPrefix(i, lin), f = r.kfac!.get(key)!, group = `${i} input ${INPUT_GROUP[lin]}`;
        if (!store.has(group)) store.put(group, f.input.data); // q/k/v (gate/up) share one E[x xᵀ]
        store.put(`${key} output`, f.output.data);
      }
      opts.onProgress?.({ stage: "fisher", done: L - i, total: L, loss: lossSum / batches.length });
    }
    return {
      rows,
      cols,
      kfac: kfacStore(store, spec, wanted),
      batches: batches.length,
      meanLoss: lossSum / batches.length,
      seconds: (performance.now() - t0) / 1000,
    };
  } catch (e) {
    await store.close();
    throw e;
  }
}

/** The factors a {@link kfacFisher} pass left in `store`, served one block at a time. */
function kfacStore(store: SpillStore, spec: LlamaSpec, linears: readonly LinearName[]): KfacStore {
  const square = (data: Float64Array): Matrix64 => {
    const n = Math.round(Math.sqrt(data.length));
    return { rows: n, cols: n, data };
  };
  return {
    spilled: store.spilled,
    block(i) {
      if (!Number.isInteger(i) || i < 0 || i >= spec.numLayers) {
        throw new OptionError(`fwsvd: no K-FAC factors for block ${i} (blocks 0…${spec.numLayers - 1})`);
      }
      const inputs = new Map<string, Matrix64>(), out = new Map<string, KfacFactors>();
      for (const lin of linears) {
        const group = `${i} input ${INPUT_GROUP[lin]}`, key = linearPrefix(i, lin);
        let input = inputs.get(group);
        if (!input) inputs.set(group, input = square(store.get(group) as Float64Array));
        out.set(key, { input, output: square(store.get(`${key} output`) as Float64Array) });
      }
      return out;
    },
    bytes: () => store.bytes(),
    close: () => store.close(),
  };
}

function checkedLoss(loss: number, batch: number): number {
  if (!Number.isFinite(loss)) {
    throw new NumericError(
      `fwsvd: the calibration loss of batch ${batch} is ${loss} (check the model and the data)`,
    );
  }
  return loss;
}

/** The Fisher sums of the linears a pass sees (and their K-FAC factors when asked), accumulated per batch. */
class FisherAccumulator {
  readonly rows = new Map<string, Float64Array>();
  readonly cols = new Map<string, Float64Array>();
  readonly #inputs = new Map<string, GramObserver>(); // `${layer}:${input group}` → E[x xᵀ]
  readonly #outputs = new Map<string, GramObserver>(); // prefix → E[dy dyᵀ]
  readonly #inputOf = new Map<string, string>(); // prefix → its input's key
  readonly #wanted: ReadonlySet<LinearName>;
  readonly #kfac: boolean;

  constructor(linears: readonly LinearName[], kfac: boolean) {
    this.#wanted = new Set(linears);
    this.#kfac = kfac;
  }

  /** One linear's x (tokens×in) and dy (tokens×out) from one batch. */
  add(layer: number, lin: LinearName, x: Matrix, dy: Matrix): void {
    if (!this.#wanted.has(lin)) return;
    const key = linearPrefix(layer, lin);
    if (!this.rows.has(key)) {
      this.rows.set(key, new Float64Array(dy.cols));
      this.cols.set(key, new Float64Array(x.cols));
    }
    addFisherBatch(this.rows.get(key), x, dy, this.cols.get(key));
    if (!this.#kfac) return;
    // q/k/v (and gate/up) see the same x in each batch: its Gram is accumulated once, by the first of them.
    const group = `${layer}:${INPUT_GROUP[lin]}`;
    if (!this.#inputOf.has(key)) this.#inputOf.set(key, group);
    let gi = this.#inputs.get(group);
    if (!gi) this.#inputs.set(group, gi = new GramObserver(`${key} input`, x.cols));
    if (firstOfGroup(lin, this.#wanted)) gi.addBatch(x);
    let go = this.#outputs.get(key);
    if (!go) this.#outputs.set(key, go = new GramObserver(`${key} output gradient`, dy.cols));
    go.addBatch(dy);
  }

  /** The sums divided by the number of batches, and the K-FAC factors. */
  result(batches: number): BlockFisher {
    for (const v of [...this.rows.values(), ...this.cols.values()]) {
      for (let i = 0; i < v.length; i++) v[i] /= batches;
    }
    if (!this.#kfac) return { rows: this.rows, cols: this.cols };
    const kfac = new Map<string, KfacFactors>();
    for (const [key, go] of this.#outputs) {
      kfac.set(key, { input: this.#inputs.get(this.#inputOf.get(key)!)!.gram(), output: go.gram() });
    }
    return { rows: this.rows, cols: this.cols, kfac };
  }
}

/** The Fisher statistics one block is factored with: the diagonal sums, and the K-FAC factors by prefix. */
type BlockFisher = Pick<FisherInfo, "rows" | "cols"> & { kfac?: ReadonlyMap<string, KfacFactors> };

/** Whether `lin` is the first of the accumulated linears reading its input (in the model's order). */
function firstOfGroup(lin: LinearName, wanted: ReadonlySet<LinearName>): boolean {
  return LINEAR_NAMES.find((l) => wanted.has(l) && INPUT_GROUP[l] === INPUT_GROUP[lin]) === lin;
}

/** Calibration of {@link fwsvdModel}: token ids cut into windows (as `compress` does), or the windows themselves. */
export type FwsvdCalibration =
  | { ids: ArrayLike<number>; samples?: number; seqlen?: number; seed?: number }
  | { windows: readonly Int32Array[] };

/** Options of {@link fwsvdModel}. */
export interface FwsvdOptions extends FisherOptions {
  /** Target, e.g. `{ removed: 0.2 }`; every linear at the same ratio. */
  ratio: Ratio;
  /** Calibration data (default windows: 32 × min(256, context), random starts, seed 0); unused with `fisher`. */
  calibration: FwsvdCalibration;
  /**
   * How the Fisher information weights W (default {@link DEFAULT_WEIGHTING}; see `FwsvdWeighting`): "kfac"
   * (two-sided, full K-FAC factors), "both" (two-sided, diagonal), "input", "output" (the paper's rows).
   */
  side?: FwsvdWeighting;
  /** K-FAC damping relative to each factor's mean diagonal (default `KFAC_DAMPING`). */
  damping?: number;
  /** K-FAC damping of the output factor alone (default `damping`; see `KfacOptions.outputDamping`). */
  outputDamping?: number;
  /**
   * Take block i's statistics on the model whose blocks before i are already compressed (their outputs feed
   * block i):
   * - "inputs" (the default for side "kfac", which it needs): one dense Fisher pass gives every E[dy dyᵀ], and
   *   block i's E[x xᵀ] is taken on the compressed prefix's outputs (forward only, as SVD-LLM's sequential
   *   whitening): about 1.3 dense passes in all, and a given `fisher` is reused;
   * - true: block i's whole Fisher from a forward + backward that starts at block i on the compressed
   *   prefix's outputs, the later blocks dense: about (L+1)/2 dense passes (not with `fisher`);
   * - false (the default for the diagonal sides): everything from one pass on the dense model.
   */
  sequential?: boolean | "inputs";
  /** Accept ranks that save nothing. */
  force?: boolean;
  /** A Fisher pass already made on this model ({@link fisherInformation}): reused (e.g. for several ratios). */
  fisher?: FisherInfo;
  /** Called after each factored linear. */
  onLayer?: (e: { layer: string; done: number; total: number }) => void;
}

/** One factored linear in the report. */
export interface FwsvdLayer {
  /** Tensor prefix. */
  name: string;
  /** out × in. */
  rows: number;
  /** in. */
  cols: number;
  /** Rank kept. */
  rank: number;
  /** Fraction of Σσ² of diag(√I)·W kept. */
  energyKept: number;
}

/** A compressed model held in memory: readable like any model (`perplexity`, `forwardHidden`). */
export interface FwsvdModel extends ModelWeights {
  /** Per linear, what was done. */
  layers: FwsvdLayer[];
  /** The Fisher pass. */
  fisher: Omit<FisherInfo, "rows" | "cols">;
  /** Ranks by prefix. */
  ranks: Record<string, number>;
  /** Fraction of the block linears' parameters removed, and of the whole model's. */
  removed: { linears: number; model: number };
  /** Wall time of the whole run (Fisher pass and factoring), seconds. */
  seconds: number;
  /** Peak resident memory seen during the run, bytes (0 where the runtime does not tell). */
  peakRssBytes: number;
}

function windowsOf(spec: LlamaSpec, c: FwsvdCalibration): readonly Int32Array[] {
  if ("windows" in c) return c.windows;
  const seqlen = c.seqlen ?? Math.min(256, spec.maxPositions);
  if (seqlen > spec.maxPositions) {
    throw new OptionError(
      `fwsvd: calibration seqlen ${seqlen} exceeds the model's context ${spec.maxPositions}`,
    );
  }
  return calibrationWindows(c.ids, { samples: c.samples ?? 32, seqlen, seed: c.seed ?? 0 });
}

/**
 * FWSVD of every linear of `model` (dense in the input) at `opts.ratio`: the Fisher pass, then the factors,
 * returned as an in-memory model whose reader serves `<prefix>.svd_a` / `.svd_b` in place of each
 * `<prefix>.weight` and every other tensor from the input.
 */
export async function fwsvdModel(model: ModelWeights, opts: FwsvdOptions): Promise<FwsvdModel> {
  const t0 = performance.now(), peak = createPeakMemory(), { spec } = model;
  try {
    if (!opts || !opts.ratio) throw new OptionError("fwsvd: a ratio is required, e.g. { removed: 0.2 }");
    const linears = opts.linears ?? LINEAR_NAMES;
    const ranks: Record<string, number> = {};
    for (let i = 0; i < spec.numLayers; i++) {
      for (const name of linears) {
        const [m, n] = linearShape(spec, name), prefix = linearPrefix(i, name);
        ranks[prefix] = rankFor(m, n, opts.ratio, { force: opts.force, layer: prefix });
      }
    }
    const layers: FwsvdLayer[] = [];
    const total = Object.keys(ranks).length;
    const r = await fwsvdFactors(model, windowsOf(spec, opts.calibration), {
      ...opts,
      sequential: opts.sequential ?? ((opts.side ?? DEFAULT_WEIGHTING) === "kfac" ? "inputs" : false),
      ranks,
      onFactor: (prefix, f) => {
        layers.push({
          name: prefix,
          rows: f.a.rows,
          cols: f.b.cols,
          rank: f.report.rank,
          energyKept: f.report.energyKept,
        });
        opts.onLayer?.({ layer: prefix, done: layers.length, total });
        peak.sample();
      },
    });
    const other = model.reader.tensors().filter((t) => !(t.name.replace(/\.weight$/, "") in ranks))
      .reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
    const summary = summarizeParams(layers.map((l) => layerParams(l.name, l.rows, l.cols, l.rank)), other);
    return {
      spec,
      reader: factoredReader(model.reader, r.factors),
      layers,
      fisher: r.fisher,
      ranks,
      removed: { linears: summary.linears.removed, model: summary.model.removed },
      seconds: (performance.now() - t0) / 1000,
      peakRssBytes: peak.peak(),
    };
  } finally {
    peak.stop();
  }
}

/** Options of {@link fwsvdFactors}. */
export interface FwsvdFactorOptions extends FisherOptions {
  /** Rank of each linear prefix (null or absent: left dense). */
  ranks: Readonly<Record<string, number | null | undefined>>;
  /** How the Fisher information weights W (default {@link DEFAULT_WEIGHTING}). */
  side?: FwsvdWeighting;
  /** K-FAC damping relative to each factor's mean diagonal (default `KFAC_DAMPING`). */
  damping?: number;
  /** K-FAC damping of the output factor alone (default `damping`; see `KfacOptions.outputDamping`). */
  outputDamping?: number;
  /** Block i's statistics from the compressed prefix (see {@link FwsvdOptions.sequential}; default false). */
  sequential?: boolean | "inputs";
  /** A Fisher pass already made on this model (not with `sequential: true`). */
  fisher?: FisherInfo;
  /** Called after each factored linear. */
  onFactor?: (prefix: string, f: Factors) => void;
  /** Keep every factor in the returned map (default true; false: `onFactor` alone sees them). */
  keep?: boolean;
}

/**
 * The FWSVD factors of every linear `opts.ranks` names: the Fisher pass (one on the dense model, or one per
 * block with `sequential`), then each linear factored as `opts.side` says. What `fwsvdModel` and the compress
 * driver run. Throws OptionError on a bad weighting, NumericError on a non-finite calibration loss.
 */
export async function fwsvdFactors(
  model: ModelWeights,
  windows: readonly Int32Array[],
  opts: FwsvdFactorOptions,
): Promise<{ factors: Map<string, Factors>; fisher: Omit<FisherInfo, "rows" | "cols" | "kfac"> }> {
  const { spec } = model;
  const side = opts.side ?? DEFAULT_WEIGHTING;
  if (!WEIGHTINGS.includes(side)) {
    throw new OptionError(
      `fwsvd: side must be one of ${WEIGHTINGS.map((w) => `"${w}"`).join(", ")}, got ${JSON.stringify(side)}`,
    );
  }
  if (opts.sequential === true && opts.fisher) {
    throw new OptionError("fwsvd: a sequential run measures its own Fisher per block; do not pass `fisher`");
  }
  const reader = checkedReader(model.reader);
  const factors = new Map<string, Factors>();
  const factorBlock = (i: number, block: LlamaBlock, fisher: BlockFisher) => {
    for (const name of opts.linears ?? LINEAR_NAMES) {
      const prefix = linearPrefix(i, name), lin = block[BLOCK_FIELD[name]], rank = opts.ranks[prefix];
      if (rank === null || rank === undefined) continue;
      if (lin.kind !== "dense") throw new OptionError(`fwsvd: ${prefix} is already low-rank in the input`);
      const f = factorLinear(lin.weight, prefix, fisher, rank, side, opts.damping, opts.outputDamping);
      if (opts.keep ?? true) factors.set(prefix, f);
      setLinear(block, name, { kind: "lowrank", a: f.a, b: f.b, bias: lin.bias });
      opts.onFactor?.(prefix, f);
    }
  };
  const kfac = side === "kfac";
  if (opts.sequential === "inputs" && !kfac) {
    throw new OptionError(`fwsvd: sequential "inputs" applies to side "kfac" only, got side "${side}"`);
  }
  if (opts.sequential === true) {
    return { factors, fisher: await sequentialFisher(model, windows, { ...opts, kfac }, factorBlock) };
  }
  const fisher = opts.fisher ?? await fisherInformation(model, windows, { ...opts, kfac });
  try {
    if (kfac && !fisher.kfac) {
      throw new OptionError(`fwsvd: side "kfac" needs a Fisher pass made with kfac: true`);
    }
    if (opts.sequential === "inputs") {
      await sequentialInputs(model, windows, opts, fisher.kfac!, factorBlock);
    } else {
      for (let i = 0; i < spec.numLayers; i++) {
        const block = await loadBlock(reader, spec, i);
        factorBlock(i, block, {
          rows: fisher.rows,
          cols: fisher.cols,
          kfac: kfac ? fisher.kfac!.block(i) : undefined,
        });
      }
    }
  } finally {
    if (!opts.fisher) await fisher.kfac?.close(); // a pass made here; a given one is the caller's
  }
  const { rows: _rows, cols: _cols, kfac: _kfac, ...facts } = fisher;
  return { factors, fisher: facts };
}

/** FWSVD's default weighting (see the README proposal for the measurements that chose it). */
export const DEFAULT_WEIGHTING: FwsvdWeighting = "kfac";

function setLinear(block: LlamaBlock, name: LinearName, lin: Linear): void {
  (block as unknown as Record<string, Linear>)[BLOCK_FIELD[name]] = lin;
}

/** The weightings {@link fwsvdModel} accepts. */
export const WEIGHTINGS: readonly FwsvdWeighting[] = ["kfac", "both", "input", "output"];

/** FWSVD factors of one linear from a Fisher pass, weighted as `side` says. */
function factorLinear(
  w: Matrix,
  prefix: string,
  fisher: BlockFisher,
  rank: number,
  side: FwsvdWeighting,
  damping?: number,
  outputDamping?: number,
) {
  if (side === "kfac") {
    return compressFwsvdKfac(w, fisher.kfac!.get(prefix)!, rank, { damping, outputDamping });
  }
  const rows = fisher.rows.get(prefix)!, cols = fisher.cols.get(prefix)!;
  return side === "input" ? compressFwsvd(w, cols, rank, "input") : compressFwsvd(w, rows, rank, side, cols);
}

/**
 * K-FAC with the input factors taken sequentially: block i's E[x xᵀ] from the compressed prefix's outputs
 * run through the dense block i (forward only, as SVD-LLM's sequential whitening), its E[dy dyᵀ] from the
 * dense pass (read back from `dense` one block at a time), then `factor` compresses block i, which advances the inputs.
 */
async function sequentialInputs(
  model: ModelWeights,
  windows: readonly Int32Array[],
  opts: FisherOptions,
  dense: KfacStore,
  factor: (i: number, block: LlamaBlock, fisher: BlockFisher) => void,
): Promise<void> {
  const { spec } = model;
  if (!windows.length) throw new OptionError("fwsvd: no calibration windows");
  const reader = checkedReader(model.reader);
  const head = await loadHead(reader, spec);
  const batches = batchesOf(windows, opts.batchWindows ?? 1);
  let hidden = batches.map((b) => embeddingForward(head.embed, b));
  const linears = opts.linears ?? LINEAR_NAMES;
  for (let i = 0; i < spec.numLayers; i++) {
    opts.signal?.throwIfAborted();
    const block = await loadBlock(reader, spec, i);
    const grams = new Map<string, GramObserver>(); // input value name → E[x xᵀ]
    for (let b = 0; b < batches.length; b++) {
      const values = blockForward(spec, block, hidden[b], layoutOf(batches[b]), true);
      for (const op of BLOCK_PROGRAM) {
        if (op.op !== "linear" || !linears.includes(op.lin)) continue;
        let g = grams.get(op.x);
        if (!g) grams.set(op.x, g = new GramObserver(`${linearPrefix(i, op.lin)} input`, values[op.x]!.cols));
        if (firstOfGroup(op.lin, new Set(linears))) g.addBatch(values[op.x]!);
      }
    }
    const outputs = dense.block(i), kfac = new Map<string, KfacFactors>(); // block i's only
    for (const op of BLOCK_PROGRAM) {
      if (op.op !== "linear" || !linears.includes(op.lin)) continue;
      const key = linearPrefix(i, op.lin);
      kfac.set(key, { input: grams.get(op.x)!.gram(), output: outputs.get(key)!.output });
    }
    factor(i, block, { rows: new Map(), cols: new Map(), kfac });
    hidden = hidden.map((h, b) => blockForward(spec, block, h, layoutOf(batches[b]), false).out!);
  }
}

/**
 * The sequential Fisher passes: for each block i, the Fisher of its linears (and K-FAC factors with `kfac`)
 * from a forward + backward that starts at block i on the compressed prefix's outputs (the later blocks dense),
 * then `factor(i, block, fisher)` compresses block i in place, and the compressed block advances the inputs.
 */
async function sequentialFisher(
  model: ModelWeights,
  windows: readonly Int32Array[],
  opts: FisherOptions,
  factor: (i: number, block: LlamaBlock, fisher: BlockFisher) => void,
): Promise<Omit<FisherInfo, "rows" | "cols" | "kfac">> {
  const t0 = performance.now(), { spec } = model;
  const { reader, head, batches } = await startFisher(model, windows, opts);
  // Each batch's input to the current block: tokens×d, from the compressed prefix.
  let hidden = batches.map((b) => embeddingForward(head.embed, b));
  const dense = { spec, head, block: (j: number) => loadBlock(reader, spec, j) };
  let lossSum = 0;
  for (let i = 0; i < spec.numLayers; i++) {
    const acc = new FisherAccumulator(opts.linears ?? LINEAR_NAMES, opts.kfac ?? false);
    for (let b = 0; b < batches.length; b++) {
      const r = await lossAndGrad(dense, batches[b], {
        signal: opts.signal,
        from: { layer: i, x: hidden[b] },
        onLinearGrad: (layer, lin, x, dy) => layer === i && acc.add(layer, lin, x, dy),
      });
      lossSum += checkedLoss(r.loss, b);
      opts.onProgress?.({
        stage: "fisher",
        done: i * batches.length + b + 1,
        total: spec.numLayers * batches.length,
        loss: r.loss,
      });
    }
    const block = await loadBlock(reader, spec, i);
    factor(i, block, acc.result(batches.length));
    hidden = hidden.map((h, b) => blockForward(spec, block, h, layoutOf(batches[b]), false).out!);
  }
  return {
    batches: batches.length,
    meanLoss: lossSum / (batches.length * spec.numLayers),
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * `base` with the linears in `factors` (prefix → A out×k, B k×in) replaced: `<prefix>.weight` is gone and
 * `<prefix>.svd_a`, `<prefix>.svd_b` (F32) take its place in the tensor list; everything else reads through.
 */
export function factoredReader(
  base: TensorReader,
  factors: ReadonlyMap<string, { a: Matrix; b: Matrix }>,
): TensorReader {
  const extra = new Map<string, { info: TensorInfo; data: Float32Array }>();
  const infos: TensorInfo[] = [];
  for (const t of base.tensors()) {
    const f = t.name.endsWith(".weight") ? factors.get(t.name.slice(0, -".weight".length)) : undefined;
    if (!f) {
      infos.push(t);
      continue;
    }
    const prefix = t.name.slice(0, -".weight".length);
    for (const [suffix, m] of [[SVD_A, f.a], [SVD_B, f.b]] as const) {
      const info: TensorInfo = {
        name: `${prefix}.${suffix}`,
        dtype: "F32",
        shape: [m.rows, m.cols],
        byteLength: 4 * m.data.length,
      };
      extra.set(info.name, { info, data: m.data });
      infos.push(info);
    }
  }
  const replaced = (n: string) => n.endsWith(".weight") && factors.has(n.slice(0, -".weight".length));
  return {
    name: `${base.name} (fwsvd)`,
    metadata: base.metadata,
    tensors: () => infos,
    has: (n) => extra.has(n) || (!replaced(n) && base.has(n)),
    info: (n) => extra.get(n)?.info ?? base.info(n),
    read: (n) => {
      const e = extra.get(n);
      return e ? Promise.resolve(e.data.slice()) : base.read(n);
    },
    close: () => base.close(),
  };
}
