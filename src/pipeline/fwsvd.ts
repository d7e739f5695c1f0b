/**
 * FWSVD over a whole model: one Fisher pass over the calibration windows with the streaming backward pass
 * ({@link lossAndGrad}; each linear's Σ (∂L/∂W_ij)² per input feature and per output row, accumulated in
 * float64 from its hook's x and dy), then each linear factored by {@link compressFwsvd} at the rank the ratio
 * gives (Fisher per input feature by default), the result kept in memory as a reader of the compressed model
 * ({@link fwsvdModel}, for evaluation). To write a model folder, `compress(…, { method: "fwsvd" })` runs the
 * same Fisher pass and factors through the driver and its one output side.
 *
 * Memory: the Fisher pass holds one block's weights and intermediates plus the block-boundary checkpoints of
 * one batch (see `backward.ts`), and the Fisher sums (one float64 per input feature and output row of every
 * linear); the factoring holds one dense linear at a time and the factors (smaller than the dense model).
 * Measured (one window of 256 per batch): stories260K 72 → 149 MB RSS, tinylm-brown 113 → 206 MB.
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
import type { Matrix } from "../linalg/matrix.ts";
import { addFisherBatch, compressFwsvd, type FisherSide } from "../methods/fwsvd.ts";
import { layerParams, rankFor, type Ratio, summarizeParams } from "../methods/ratio.ts";
import { lossAndGrad } from "../model/backward.ts";
import { BLOCK_FIELD, loadBlock, loadHead, type ModelWeights } from "../model/llama.ts";
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
  /** Called after each batch. */
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
  /** Batches averaged. */
  batches: number;
  /** Mean calibration loss over the batches (nats per token). */
  meanLoss: number;
  /** Wall time, seconds. */
  seconds: number;
}

/**
 * One Fisher pass over `windows` (equal lengths ≥ 2): per batch, the mean next-token loss's gradient, and for
 * each linear Σ_j (dyᵀ·x)_ij² added per row; finally divided by the number of batches. Throws NumericError
 * when a batch's loss is not finite (a NaN model would give NaN Fisher rows).
 */
export async function fisherInformation(
  model: ModelWeights,
  windows: readonly Int32Array[],
  opts: FisherOptions = {},
): Promise<FisherInfo> {
  const t0 = performance.now(), { spec } = model;
  const per = opts.batchWindows ?? 1;
  if (!Number.isInteger(per) || per < 1) {
    throw new OptionError(`fwsvd: batchWindows must be a positive integer, got ${per}`);
  }
  if (!windows.length) throw new OptionError("fwsvd: no calibration windows");
  const wanted = new Set(opts.linears ?? LINEAR_NAMES);
  const reader = checkedReader(model.reader);
  checkLayerCount(reader, spec);
  const head = await loadHead(reader, spec);
  const rows = new Map<string, Float64Array>(), cols = new Map<string, Float64Array>();
  const total = Math.ceil(windows.length / per);
  let lossSum = 0;
  for (let b = 0; b < total; b++) {
    const batch = windows.slice(b * per, (b + 1) * per);
    const r = await lossAndGrad({ spec, head, block: (i) => loadBlock(reader, spec, i) }, batch, {
      signal: opts.signal,
      onLinearGrad: (layer, lin, x, dy) => {
        if (!wanted.has(lin)) return;
        const key = linearPrefix(layer, lin);
        if (!rows.has(key)) {
          rows.set(key, new Float64Array(dy.cols));
          cols.set(key, new Float64Array(x.cols));
        }
        addFisherBatch(rows.get(key), x, dy, cols.get(key));
      },
    });
    if (!Number.isFinite(r.loss)) {
      throw new NumericError(
        `fwsvd: the calibration loss of batch ${b} is ${r.loss} (check the model and the data)`,
      );
    }
    lossSum += r.loss;
    opts.onProgress?.({ stage: "fisher", done: b + 1, total, loss: r.loss });
  }
  for (const v of [...rows.values(), ...cols.values()]) for (let i = 0; i < v.length; i++) v[i] /= total;
  return { rows, cols, batches: total, meanLoss: lossSum / total, seconds: (performance.now() - t0) / 1000 };
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
  /** Which features the Fisher information weights (default "input"; see `FisherSide`). */
  side?: FisherSide;
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
    if (opts.side !== undefined && opts.side !== "input" && opts.side !== "output") {
      throw new OptionError(`fwsvd: side must be "input" or "output", got ${JSON.stringify(opts.side)}`);
    }
    const linears = opts.linears ?? LINEAR_NAMES;
    const ranks: Record<string, number> = {};
    for (let i = 0; i < spec.numLayers; i++) {
      for (const name of linears) {
        const [m, n] = linearShape(spec, name), prefix = linearPrefix(i, name);
        ranks[prefix] = rankFor(m, n, opts.ratio, { force: opts.force, layer: prefix });
      }
    }
    const fisher = opts.fisher ?? await fisherInformation(model, windowsOf(spec, opts.calibration), opts);
    peak.sample();
    const reader = checkedReader(model.reader);
    const factors = new Map<string, { a: Matrix; b: Matrix }>();
    const layers: FwsvdLayer[] = [];
    const total = Object.keys(ranks).length;
    for (let i = 0; i < spec.numLayers; i++) {
      const block = await loadBlock(reader, spec, i);
      for (const name of linears) {
        const prefix = linearPrefix(i, name), lin = block[BLOCK_FIELD[name]];
        if (lin.kind !== "dense") throw new OptionError(`fwsvd: ${prefix} is already low-rank in the input`);
        const side = opts.side ?? "input";
        const f = compressFwsvd(
          lin.weight,
          (side === "input" ? fisher.cols : fisher.rows).get(prefix)!,
          ranks[prefix],
          side,
        );
        factors.set(prefix, { a: f.a, b: f.b });
        layers.push({
          name: prefix,
          rows: f.a.rows,
          cols: f.b.cols,
          rank: f.report.rank,
          energyKept: f.report.energyKept,
        });
        opts.onLayer?.({ layer: prefix, done: layers.length, total });
      }
      peak.sample();
    }
    const other = reader.tensors().filter((t) => !(t.name.replace(/\.weight$/, "") in ranks))
      .reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
    const summary = summarizeParams(layers.map((l) => layerParams(l.name, l.rows, l.cols, l.rank)), other);
    const { rows: _rows, cols: _cols, ...fisherFacts } = fisher;
    return {
      spec,
      reader: factoredReader(model.reader, factors),
      layers,
      fisher: fisherFacts,
      ranks,
      removed: { linears: summary.linears.removed, model: summary.model.removed },
      seconds: (performance.now() - t0) / 1000,
      peakRssBytes: peak.peak(),
    };
  } finally {
    peak.stop();
  }
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
