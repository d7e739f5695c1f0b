/**
 * SoCo's model-level pass, run by the compress driver before its block loop (as FWSVD's Fisher pass): the
 * spectral basis of every block linear (plain SVD, or SVD-LLM's whitened basis from the original model's
 * activations), then the scores trained on the model's own next-token loss through the streaming backward
 * pass (`lossAndGrad`, optionally plus KL to the original model), then the kept components as factors per
 * linear. The driver writes them through its one output side.
 *
 * The target is the parameter count of the uniform-rank factorisation at the same ratio (what SVD-LLM
 * stores: Σ k·(m+n) with k = ⌊m·n·(1−r)/(m+n)⌋), so a SoCo model is never larger than the SVD-LLM model it is
 * compared with; SoCo spends those parameters where its learned scores say.
 *
 * The training starts by default where per-matrix-rank SVD-LLM ends (`start: "allocation"`: scores 1 on the
 * components `--allocation global` keeps, 0 elsewhere), and a slice of the calibration windows is held out:
 * if the trained model's NLL on it is worse than the start's, the start is kept (and reported).
 *
 * Memory: the bases (U and C = UᵀW in float32: r·(m+n) values per linear, about 1.3× the block linears'
 * weights) are spilled to a temporary file block by block (`soco_bases.ts`) and read back one block at a
 * time, so memory holds one block's bases, plus the training's peak, which is `lossAndGrad`'s: one block's
 * dense W'(s) (formed per call from the basis, never cached) and intermediates, the reference model's block
 * for the KL term, the head, and the block-boundary checkpoints (layers × tokens × hidden). The weights are
 * streamed from the reader. lm_head (vocab × hidden) waits in a temporary file too and is read back for each
 * head loss only, when no block's bases or W'(s) are held (`soco_head.ts`); between phases the pass collects
 * and trims (the driver's memory policy). The factors are formed from the store when the driver writes each
 * block. Measured on `bench/compress_memory.ts` (d 1024, 1 layer): 515 MiB against svdllm's 282 MiB.
 *
 * @module
 */
import { NumericError, OptionError } from "../errors.ts";
import { GramObserver } from "../calib/gram.ts";
import type { TensorReader } from "../io/tensor_reader.ts";
import { cholesky, type CholeskyResult } from "../linalg/cholesky.ts";
import { createRng } from "../linalg/random.ts";
import { type GradModel, lossAndGrad } from "../model/backward.ts";
import { BLOCK_FIELD, type Linear, type LlamaBlock, loadBlock } from "../model/llama.ts";
import { checkLayerCount } from "../model/load.ts";
import { EMBED, LINEAR_NAMES, type LinearName, linearPrefix } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import type { Factors } from "../methods/factors.ts";
import { rankFor, type Ratio } from "../methods/ratio.ts";
import {
  addScoreGradient,
  rankCap,
  type SocoBasisKind,
  type SpectralBasis,
  spectralFactors,
  spectralWeight,
  svdBasis,
  whitenedBasis,
} from "../methods/soco.ts";
import { type BudgetLinear, checkBudget } from "../methods/soco_budget.ts";
import { allocateRanks } from "../methods/allocation.ts";
import { openBasisStore } from "./soco_bases.ts";
import { compactHead } from "./soco_head.ts";
import { openSpillStore, type SpillStore } from "./spill.ts";

export type { BudgetLinear } from "../methods/soco_budget.ts";
import {
  checkTrainOptions,
  type SocoProgress,
  type SocoState,
  stateFromJson,
  stateToJson,
  trainSpectrum,
} from "../methods/soco_train.ts";
import { linearShape } from "../model/linear_shape.ts";
import { embedWindows, runBlock } from "./hidden.ts";

/** SoCo's own options (the ratio, calibration and output are the driver's). */
export interface SocoRunOptions {
  /** The basis the spectrum is learned in (default "whitened": measured better, see the README). */
  basis?: SocoBasisKind;
  /** Training steps over the three stages (default 100). */
  steps?: number;
  /**
   * Adam's learning rate on the scores (default 0.01 from the "allocation" start, 0.05 from the paper's "full"
   * start, which must first reach the budget). 0.01 was chosen without the evaluation text: on one whole
   * calibration story held out of training (`bench/soco.ts --guard story`), it beat 0.05 at 20, 40 and 60 %
   * removed on stories260K (39.21 / 78.58 / 106.65 against 54.42 / 109.95 / 142.45).
   */
  lr?: number;
  /** Initial sparsity weight (default 1). */
  sparsity?: number;
  /** Calibration windows per step (default 4, at most the number of windows). */
  batch?: number;
  /**
   * Weight of a KL(original ‖ compressed) term, the paper's deviation from the original model (default 1; 0
   * turns it off). Chosen without the evaluation text (`bench/soco.ts --select`: calibrated on the first 7/8
   * of stories260K's calibration text, perplexity on its last 1/8): weight 1 beat 10 at 20, 40 and 60 %
   * removed (11.98 / 18.39 / 36.04 against 12.69 / 19.18 / 36.27).
   */
  klWeight?: number;
  /** Weight of the next-token loss (default 1; 0 with `klWeight` > 0 trains on the original's outputs only). */
  nllWeight?: number;
  /**
   * A JSON checkpoint of the scores and the optimiser: resumed from when it exists (it must be of the same
   * run), rewritten every `checkpointEvery` steps and at the end.
   */
  checkpoint?: string;
  /** Steps between checkpoints (default 25). */
  checkpointEvery?: number;
  /**
   * Where the training starts: "allocation" (default: the components per-matrix-rank SVD-LLM keeps, see
   * {@link allocationStart}) or "full" (every score 1, the paper's start).
   */
  start?: SocoStart;
  /**
   * Fraction held out of training (default 0.125; 0: none): the trained model is kept only if its NLL on the
   * held-out windows is no worse than the start's. `compress` (and so `compressSoco` and the CLI) holds out the
   * calibration text's last fraction (text no training window contains, see {@link holdoutSplit}); `socoPass`
   * called directly without `validation` holds out that fraction of its windows, which are random starts in
   * the same text, so they may share text with training windows and the guard is then weaker.
   */
  holdout?: number;
  /** Held-out windows of text the calibration windows do not contain (replaces the window split of `holdout`). */
  validation?: readonly Int32Array[];
  /** Spill the bases to a temporary file (default "auto": when `node:fs` exists), see `soco_bases.ts`. */
  spill?: boolean | "auto";
}

/** Where SoCo's training starts (see {@link SocoRunOptions.start}). */
export type SocoStart = "allocation" | "full";

/** KL weight by default (see {@link SocoRunOptions.klWeight}). */
export const DEFAULT_KL_WEIGHT = 1;
const DEFAULT_START: SocoStart = "allocation";
/** Fraction held out for the guard by default (see {@link SocoRunOptions.holdout}). */
export const DEFAULT_HOLDOUT = 0.125;

/** The factors of the kept components, formed on demand (block by block, from the spilled bases). */
export interface FactorSource {
  /** The factors of the linear `prefix` (undefined when SoCo did not compress it). */
  get(prefix: string): Factors | undefined;
}

/** A progress event of the SoCo pass: the bases (per block), then every training step. */
export type SocoPassProgress =
  | { stage: "bases"; block: number; done: number; total: number }
  | { stage: "train"; train: SocoProgress };

/** What the SoCo pass found: the factors of every block linear and how they were learned. */
export interface SocoPassResult {
  /** Linear prefix → its factors (each asked for once, in block order: the store closes after the last). */
  factors: FactorSource;
  /** Rank kept per linear prefix. */
  ranks: Record<string, number>;
  /** The basis used. */
  basis: SocoBasisKind;
  /** Target parameter count of the block linears (uniform ranks at the ratio) and what was kept. */
  budget: { target: number; kept: number };
  /** Per step: stage, loss, budget (kept over target). */
  history: { step: number; stage: string; loss: number; budget: number }[];
  /** Per linear: its shape, the basis's σ and the learned scores (0 where pruned), for plots. */
  spectra: { name: string; rows: number; cols: number; sigma: Float64Array; scores: Float64Array }[];
  /** Divergences recovered from (learning-rate halvings). */
  recoveries: number;
  /**
   * The held-out guard: mean NLL on the held-out calibration windows of the start (when it was an
   * allocation) and of the trained model, and which one was kept. Undefined without held-out windows.
   */
  validation?: { windows: number; start?: number; trained: number; kept: "trained" | "start" };
  /** With `start: "allocation"`: the ranks the training started from (per-matrix-rank SVD-LLM's). */
  startRanks?: Record<string, number>;
  /** Resolved training settings, as recorded in config.json. */
  settings: {
    steps: number;
    lr: number;
    batch: number;
    klWeight: number;
    nllWeight: number;
    start: SocoStart;
    /** Held-out windows the guard used (0: none). */
    holdout: number;
  };
  /** Bytes of bases spilled to the temporary file (0 when kept in memory). */
  spilledBytes: number;
  /** Seconds: bases, training, the held-out guard. */
  seconds: { bases: number; train: number; validate: number };
}

/** SoCo's default learning rate for a start: a good start ("allocation") needs small steps, the paper's full one larger. */
export function defaultSocoLr(start: SocoStart | undefined): number {
  return start === "full" ? 0.05 : 0.01;
}

/**
 * Throw OptionError on a bad SoCo option (basis, batch, KL/NLL weights, and the training's steps and learning
 * rate); returns the training's resolved steps and learning rate.
 */
export function checkSocoOptions(opts: SocoRunOptions): { steps: number; lr: number } {
  const trainOpts = checkTrainOptions({ ...opts, lr: opts.lr ?? defaultSocoLr(opts.start) });
  if (opts.basis !== undefined && opts.basis !== "svd" && opts.basis !== "whitened") {
    throw new OptionError(`soco: basis must be "svd" or "whitened", got ${JSON.stringify(opts.basis)}`);
  }
  const b = opts.batch;
  if (b !== undefined && !(Number.isInteger(b) && b >= 1)) {
    throw new OptionError(`soco: batch must be a whole number of windows ≥ 1, got ${b}`);
  }
  for (const key of ["klWeight", "nllWeight"] as const) {
    const v = opts[key];
    if (v !== undefined && !(typeof v === "number" && Number.isFinite(v) && v >= 0)) {
      throw new OptionError(`soco: ${key} must be a finite number ≥ 0, got ${v}`);
    }
  }
  if (opts.start !== undefined && opts.start !== "allocation" && opts.start !== "full") {
    throw new OptionError(`soco: start must be "allocation" or "full", got ${JSON.stringify(opts.start)}`);
  }
  const h = opts.holdout;
  if (h !== undefined && !(typeof h === "number" && h >= 0 && h < 1)) {
    throw new OptionError(`soco: holdout must be a fraction in [0, 1), got ${h}`);
  }
  if (opts.spill !== undefined && opts.spill !== true && opts.spill !== false && opts.spill !== "auto") {
    throw new OptionError(`soco: spill must be true, false or "auto", got ${JSON.stringify(opts.spill)}`);
  }
  const v = opts.validation;
  if (
    v !== undefined &&
    (!Array.isArray(v) ||
      v.some((w) => !(w instanceof Int32Array) || w.length < 2 || w.length !== v[0].length))
  ) {
    throw new OptionError(`soco: validation must be windows of token ids (Int32Array), of one length ≥ 2`);
  }
  if ((opts.nllWeight ?? 1) === 0 && !((opts.klWeight ?? DEFAULT_KL_WEIGHT) > 0)) {
    throw new OptionError(`soco: nllWeight 0 needs a klWeight > 0 (the objective would be empty)`);
  }
  return trainOpts;
}

/** The window order of step `step`: `batch` windows from seeded per-epoch permutations. */
function batchPicker(n: number, batch: number, seed: number): (step: number) => number[] {
  const perms = new Map<number, Int32Array>();
  const perm = (epoch: number) => {
    let p = perms.get(epoch);
    if (!p) {
      const rng = createRng((seed * 7919 + epoch) >>> 0);
      p = Int32Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = rng.nextU32() % (i + 1);
        [p[i], p[j]] = [p[j], p[i]];
      }
      perms.clear(); // only the current epoch is needed again
      perms.set(epoch, p);
    }
    return p;
  };
  return (step) => {
    const out: number[] = [];
    for (let j = 0; j < batch; j++) {
      const k = step * batch + j;
      out.push(perm(Math.floor(k / n))[k % n]);
    }
    return out;
  };
}

/** Input groups: linears reading the same input share one Gram matrix. */
const GROUP: Readonly<Record<LinearName, LinearName>> = {
  "self_attn.q_proj": "self_attn.q_proj",
  "self_attn.k_proj": "self_attn.q_proj",
  "self_attn.v_proj": "self_attn.q_proj",
  "self_attn.o_proj": "self_attn.o_proj",
  "mlp.gate_proj": "mlp.gate_proj",
  "mlp.up_proj": "mlp.gate_proj",
  "mlp.down_proj": "mlp.down_proj",
};

/**
 * The budget of a SoCo run: the uniform ranks' parameter count at `ratio` over every block linear (checked
 * reachable). Cheap: the driver calls it before any calibration work.
 */
export function socoBudget(spec: LlamaSpec, ratio: Ratio): { linears: BudgetLinear[]; target: number } {
  const linears: BudgetLinear[] = [];
  let target = 0;
  for (let i = 0; i < spec.numLayers; i++) {
    for (const l of LINEAR_NAMES) {
      const [m, n] = linearShape(spec, l);
      const k = rankFor(m, n, ratio, { layer: linearPrefix(i, l) });
      target += k * (m + n);
      linears.push({ cost: m + n, cap: rankCap(m, n) });
    }
  }
  checkBudget(linears, target);
  return { linears, target };
}

/**
 * The start of the training: 1 on the components SVD-LLM's global allocation keeps (`--allocation global`:
 * each linear's relative σ² tail, least total loss within each kind of linear, each kind keeping the target
 * share — `allocateRanks`), 0 elsewhere. In the whitened basis that is exactly per-matrix-rank SVD-LLM on the
 * original model's activations; a linear the allocation leaves dense starts at its cap.
 */
export function allocationStart(
  linears: readonly { name: string; rows: number; cols: number; sigma: Float64Array; cap: number }[],
  kept: number,
): Float64Array[] {
  const curves = linears.map((l) => {
    const c = l.sigma.map((v) => v * v);
    let total = 0;
    for (const v of c) total += v;
    const loss = new Float64Array(c.length);
    for (let k = c.length - 1, t = 0; k >= 0; k--) {
      loss[k] = total > 0 ? t / total : 0; // rank k + 1 drops components k + 1 …
      t += c[k];
    }
    return { name: l.name, rows: l.rows, cols: l.cols, loss };
  });
  const { ranks } = allocateRanks(curves, kept, {
    rule: "marginal",
    groupOf: (name) => name.replace(/^model\.layers\.\d+\./, ""),
  });
  return linears.map((l) => {
    const k = Math.min(ranks[l.name] ?? l.cap, l.cap);
    return Float64Array.from(l.sigma, (_, i) => (i < k ? 1 : 0));
  });
}

/**
 * The SoCo pass over `windows` (equal lengths): bases, training, factors. `seed` picks the training batches;
 * `sample` is called at the memory peaks (for the driver's peak-memory figure).
 */
export async function socoPass(
  model: { spec: LlamaSpec; reader: TensorReader },
  windows: readonly Int32Array[],
  ratio: Ratio,
  opts: SocoRunOptions & {
    seed?: number;
    onProgress?: (e: SocoPassProgress) => void;
    signal?: AbortSignal;
    sample?: () => void;
    /** The driver's memory hooks (`memory_policy.ts`): told what became garbage, they collect it in time. */
    memory?: {
      afterLinear(rows: number, cols: number): void;
      dropped(bytes: number): void;
      boundary?(): void;
    };
  },
): Promise<SocoPassResult> {
  const t0 = performance.now();
  const { spec, reader } = model;
  checkLayerCount(reader, spec);
  const kind = opts.basis ?? "whitened";
  const { steps, lr } = checkSocoOptions(opts);
  const { linears, target } = socoBudget(spec, ratio);
  const per = LINEAR_NAMES.length;
  // float32 bytes of one block's linears (what a block's weights, or its W'(s), take)
  const blockBytes = 4 * LINEAR_NAMES.reduce((t, l) => t + linearShape(spec, l).reduce((a, b) => a * b), 0);
  const store = await openBasisStore({ spill: opts.spill ?? "auto" });
  let headStore: SpillStore | undefined;
  let closeStore = true;
  try {
    // Bases, block by block on the original model's activations (whitened: their Gram matrices).
    // The bases need only the embedding (read, used, dropped); the head (embedding + lm_head) is loaded for the
    // training after them, so the two peaks do not add up.
    const h = kind === "whitened"
      ? embedWindows(
        spec,
        { rows: spec.vocabSize, cols: spec.hiddenSize, data: await reader.read(EMBED) },
        windows,
      )
      : undefined;
    // The embedding table (vocab×d) is garbage now: collect it before the first block is read.
    if (h) opts.memory?.dropped(4 * spec.vocabSize * spec.hiddenSize);
    const info: {
      name: string;
      rows: number;
      cols: number;
      rank: number;
      sigma: Float64Array;
      cap: number;
    }[] = [];
    const kept: { inputNorm: Float32Array; postNorm: Float32Array; bias: Map<LinearName, Float32Array> }[] =
      [];
    const batchFwd = Math.max(1, Math.floor(1024 / windows[0].length));
    for (let i = 0; i < spec.numLayers; i++) {
      opts.signal?.throwIfAborted();
      const block = await loadBlock(reader, spec, i);
      const grams = new Map<LinearName, GramObserver>();
      if (h) {
        runBlock(spec, block, h, batchFwd, (lin, x) => {
          if (GROUP[lin] !== lin) return; // q/k/v and gate/up share one input
          let o = grams.get(lin);
          if (!o) {
            grams.set(lin, o = new GramObserver(linearPrefix(i, lin), x.cols, { precision: "float64" }));
          }
          o.addBatch(x);
        }, i < spec.numLayers - 1 ? "inplace" : "discard");
      }
      const chol = new Map<LinearName, CholeskyResult>();
      const bias = new Map<LinearName, Float32Array>();
      for (const l of LINEAR_NAMES) {
        const lin = block[BLOCK_FIELD[l]] as Linear;
        if (lin.kind !== "dense") {
          throw new OptionError(`soco: ${linearPrefix(i, l)} is already low-rank in the input`);
        }
        if (lin.bias) bias.set(l, lin.bias);
        let b: SpectralBasis;
        if (!h) b = svdBasis(linearPrefix(i, l), lin.weight);
        else {
          let f = chol.get(GROUP[l]);
          if (!f) {
            // In place: the factor takes the Gram matrix's own array (at d 1024, f 2816 the MLP's is 63 MB).
            chol.set(GROUP[l], f = cholesky(grams.get(GROUP[l])!.gram(), { damping: "auto", inPlace: true }));
            grams.delete(GROUP[l]); // its factor is all the group needs now
          }
          if (l === lastOfGroup(l)) chol.delete(GROUP[l]);
          b = whitenedBasis(linearPrefix(i, l), lin.weight, { cholesky: f });
        }
        const { u: _u, c: _c, ...meta } = b;
        info.push(meta);
        await store.put(i, [b]); // now: U and C leave memory before the next linear's SVD
        opts.memory?.afterLinear(b.rows, b.cols);
      }
      kept.push({ inputNorm: block.inputNorm, postNorm: block.postNorm, bias });
      opts.memory?.dropped(blockBytes); // the block's weights and its Gram matrices
      opts.sample?.();
      opts.onProgress?.({ stage: "bases", block: i, done: i + 1, total: spec.numLayers });
    }
    const tBases = performance.now();
    // Between the training's phases (a block, the head): collect what the last one left and hand its pages
    // back. W'(s), the bases and the reference weights are arrays below glibc's mmap threshold, carved from its
    // heap, whose freed holes stay resident until trimmed (measured: 533 MiB resident after a step of the
    // 1-layer compress_memory model, 204 MiB before it).
    // One block's bases in memory at a time: the training's forward reads blocks 0 … L−1, its backward
    // L−1 … 0 and the gradient hook wants the block the backward is in.
    let cur: { i: number; bases: SpectralBasis[] } | undefined;
    // lm_head too: it is read back for each head loss (below) and let go before the next block.
    let dropLmHead = () => {};
    const release = () => {
      dropLmHead();
      if (opts.memory?.boundary) opts.memory.boundary();
      else opts.memory?.dropped(2 * blockBytes);
    };
    // The head over the ids the windows use only (a K×d embedding, lm_head reordered): see soco_head.ts.
    // lm_head waits in the temporary file between losses (read back for each, see soco_head.ts `leasedRows`);
    // before each read the blocks' last W'(s) and reference weights are garbage: collect them first.
    headStore = await openSpillStore({ what: "soco head", spill: opts.spill ?? "auto" });
    const { head, remap, dropLmHead: dropHead } = await compactHead(reader, spec, [
      ...windows,
      ...(opts.validation ?? []),
    ], {
      store: headStore,
      // The head's loss comes between the forward and the backward: the block's bases (kept for the backward,
      // 67 MiB at d 1024) are read again after it rather than held beside lm_head.
      beforeRead: () => {
        cur = undefined;
        release();
      },
      dropped: (bytes) => opts.memory?.dropped(bytes),
    });
    dropLmHead = dropHead;
    opts.memory?.dropped(4 * spec.vocabSize * spec.hiddenSize); // lm_head's copy now in the file (or used)
    const ids = windows.map(remap);

    const basesOf = (i: number): SpectralBasis[] => {
      if (cur?.i !== i) {
        cur = undefined; // the previous block's bases can go before the next are read
        cur = { i, bases: store.get(i) };
      }
      return cur.bases;
    };
    let scores: readonly Float64Array[] = info.map((b) => new Float64Array(b.rank).fill(1));
    // U·diag(s) of every W'(s) formed in one reused array (rows×rank of the largest linear).
    const scratch = new Float32Array(Math.max(...info.map((b) => b.rows * b.rank)));
    const blockAt = (i: number): LlamaBlock => {
      // The previous block's bases must be let go before the collection, not after it: else two blocks' bases
      // are resident while the next are read (measured: +50 MiB per step from 1 to 2 layers).
      if (cur?.i !== i) cur = undefined;
      release(); // the previous block's W'(s) (or reference weights) and bases
      const bases = basesOf(i);
      const lin = (l: LinearName): Linear => {
        const k = LINEAR_NAMES.indexOf(l);
        return {
          kind: "dense",
          weight: spectralWeight(bases[k], scores[i * per + k], scratch),
          bias: kept[i].bias.get(l),
        };
      };
      return {
        inputNorm: kept[i].inputNorm,
        q: lin("self_attn.q_proj"),
        k: lin("self_attn.k_proj"),
        v: lin("self_attn.v_proj"),
        o: lin("self_attn.o_proj"),
        postNorm: kept[i].postNorm,
        gate: lin("mlp.gate_proj"),
        up: lin("mlp.up_proj"),
        down: lin("mlp.down_proj"),
      };
    };
    const gm: GradModel = { spec, head, block: blockAt };
    const klWeight = opts.klWeight ?? DEFAULT_KL_WEIGHT;
    const reference: GradModel | undefined = klWeight > 0
      ? {
        spec,
        head,
        block: (i) => {
          cur = undefined; // the reference's forward needs no bases (the model's forward reads them again)
          release();
          return loadBlock(reader, spec, i);
        },
      }
      : undefined;
    // Held-out calibration windows: the final model must do no worse on them than the start.
    const nHold = opts.validation ? 0 : holdoutCount(windows.length, opts.holdout ?? DEFAULT_HOLDOUT);
    const train = ids.slice(0, ids.length - nHold);
    const held = opts.validation?.map(remap) ?? ids.slice(ids.length - nHold);
    const batch = Math.min(opts.batch ?? 4, train.length);
    const pick = batchPicker(train.length, batch, opts.seed ?? 0);
    const heldLoss = async (s: readonly Float64Array[]): Promise<number> => {
      scores = s;
      let sum = 0;
      for (let j = 0; j < held.length; j += batch) {
        const r = await lossAndGrad(gm, held.slice(j, j + batch), { klWeight: 0, signal: opts.signal });
        sum += r.nll * r.tokens;
      }
      opts.sample?.();
      return sum / (held.length * (held[0].length - 1));
    };
    const start = (opts.start ?? DEFAULT_START) === "allocation"
      ? allocationStart(info, target / maximumDense(info))
      : undefined;
    let resume: SocoState | undefined;
    if (opts.checkpoint) {
      const fs = await import("node:fs/promises");
      let text: string | undefined;
      try {
        text = await fs.readFile(opts.checkpoint, "utf8");
      } catch (e) {
        if ((e as { code?: string }).code !== "ENOENT") throw e;
      }
      if (text !== undefined) {
        resume = stateFromJson(text, info.map((b) => b.rank), `checkpoint ${opts.checkpoint}`);
      }
    }
    const saveCheckpoint = opts.checkpoint
      ? async (st: SocoState) => {
        const { writeFileAtomic } = await import("../io/atomic_write.ts");
        await writeFileAtomic(opts.checkpoint!, stateToJson(st), { overwrite: true });
      }
      : undefined;
    const trained = await trainSpectrum(async (s, grads, step) => {
      scores = s;
      const wins = pick(step).map((k) => train[k]);
      const r = await lossAndGrad(gm, wins, {
        onLinearGrad: (layer, lin, x, dy) => {
          const k = LINEAR_NAMES.indexOf(lin);
          addScoreGradient(basesOf(layer)[k], x, dy, grads[layer * per + k]);
        },
        reference,
        klWeight: reference ? klWeight : undefined,
        nllWeight: opts.nllWeight,
        signal: opts.signal,
      });
      opts.sample?.();
      opts.memory?.dropped(2 * blockBytes); // the step's last W'(s), reference block and intermediates
      return r.loss;
    }, {
      linears,
      ranks: info.map((b) => b.rank),
      budget: target,
      steps,
      lr,
      sparsity: opts.sparsity,
      init: start,
      resume,
      onCheckpoint: saveCheckpoint,
      checkpointEvery: opts.checkpointEvery,
      onProgress: (e) => opts.onProgress?.({ stage: "train", train: e }),
      signal: opts.signal,
    });
    const tTrain = performance.now();

    // The held-out guard: keep the start (when it is a model of the target size) if training made it worse.
    let final = { scores: trained.scores, keep: trained.keep, params: trained.params };
    let validation: SocoPassResult["validation"];
    if (held.length > 0) {
      const end = await heldLoss(final.scores);
      let begin: number | undefined;
      if (start) {
        begin = await heldLoss(start);
        const keep = start.map((s) => [...s.keys()].filter((i) => s[i] !== 0));
        if (begin < end) {
          const params = keep.reduce((t, k, l) => t + k.length * linears[l].cost, 0);
          final = { scores: start.map((s) => s.slice()), keep, params };
        }
      }
      validation = {
        windows: held.length,
        start: begin,
        trained: end,
        kept: final.scores === trained.scores ? "trained" : "start",
      };
    }
    const tValid = performance.now();

    const ranks: Record<string, number> = {};
    const where = new Map<string, number>();
    info.forEach((b, j) => {
      const s = final.scores[j];
      for (const i of final.keep[j]) {
        if (!Number.isFinite(s[i])) {
          throw new NumericError(`soco: ${b.name} component ${i} has score ${s[i]}`);
        }
      }
      ranks[b.name] = final.keep[j].length;
      where.set(b.name, j);
    });
    // The factors, computed when the writer asks for them, block by block from the store.
    let left = info.length;
    const factors = {
      get(prefix: string): Factors | undefined {
        const j = where.get(prefix);
        if (j === undefined) return undefined;
        const b = basesOf(Math.floor(j / per))[j % per];
        const f = spectralFactors(b, final.scores[j], final.keep[j]);
        if (--left === 0) {
          cur = undefined;
          store.close();
        }
        return {
          ...f,
          report: {
            method: "soco",
            rank: final.keep[j].length,
            rows: b.rows,
            cols: b.cols,
            singularValues: b.sigma,
            energyKept: NaN,
            seconds: 0,
          },
        };
      },
    };
    closeStore = false; // the factors read it; it closes after the last one
    return {
      factors,
      ranks,
      basis: kind,
      budget: { target, kept: final.params },
      history: trained.history,
      spectra: info.map((b, j) => ({
        name: b.name,
        rows: b.rows,
        cols: b.cols,
        sigma: b.sigma,
        scores: final.scores[j],
      })),
      recoveries: trained.state.recoveries,
      validation,
      startRanks: start &&
        Object.fromEntries(info.map((b, j) => [b.name, start[j].reduce((t, x) => t + (x !== 0 ? 1 : 0), 0)])),
      settings: {
        steps,
        lr,
        batch,
        klWeight,
        nllWeight: opts.nllWeight ?? 1,
        start: start ? "allocation" : "full",
        holdout: held.length,
      },
      spilledBytes: store.spilled ? store.bytes() : 0,
      seconds: {
        bases: (tBases - t0) / 1000,
        train: (tTrain - tBases) / 1000,
        validate: (tValid - tTrain) / 1000,
      },
    };
  } finally {
    await headStore?.close(); // the training and the held-out guard are done: lm_head is no longer read
    if (closeStore) await store.close();
  }
}

/**
 * Calibration ids split for the held-out guard: the last `holdout` fraction of `ids` becomes validation windows
 * (consecutive, `seqlen` tokens each, at most max(1, round(holdout·samples)) of them, the last ones), the rest
 * is the calibration text. No validation window shares a token position with the calibration text. When not
 * even one window fits, nothing is held out.
 */
export function holdoutSplit(
  ids: ArrayLike<number>,
  holdout: number,
  samples: number,
  seqlen: number,
): { calib: Int32Array; validation: Int32Array[] } {
  const all = Int32Array.from(ids);
  const cut = Math.floor(all.length * (1 - holdout));
  const fit = Math.floor((all.length - cut) / seqlen);
  const n = Math.min(fit, Math.max(1, Math.round(holdout * samples)));
  if (!(holdout > 0) || n < 1) return { calib: all, validation: [] };
  const validation: Int32Array[] = [];
  for (let j = n; j >= 1; j--) {
    validation.push(all.slice(all.length - j * seqlen, all.length - (j - 1) * seqlen));
  }
  return { calib: all.slice(0, cut), validation };
}

/** Held-out windows for a fraction `holdout` of `n` (none when 0; at least one training window stays). */
export function holdoutCount(n: number, holdout: number): number {
  if (!(holdout > 0) || n < 2) return 0;
  return Math.min(n - 1, Math.max(1, Math.round(holdout * n)));
}

/** Dense parameter count of the linears. */
function maximumDense(info: readonly { rows: number; cols: number }[]): number {
  return info.reduce((t, b) => t + b.rows * b.cols, 0);
}

/** The last linear of `l`'s input group in LINEAR_NAMES order (its Cholesky factor can go after it). */
function lastOfGroup(l: LinearName): LinearName {
  return LINEAR_NAMES.filter((x) => GROUP[x] === GROUP[l]).at(-1)!;
}
