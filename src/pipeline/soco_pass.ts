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
 * Memory: the bases of all linears are held together (U and C = UᵀW in float64: r·(m+n) values each, about
 * 4× the float32 weights of the block linears for square ones), plus the training's peak, which is
 * `lossAndGrad`'s: one block's dense W'(s) (formed per call from the basis, never cached) and intermediates
 * plus the block-boundary checkpoints (layers × tokens × hidden). The weights themselves are streamed: each
 * block is read once, for its basis.
 *
 * @module
 */
import { NumericError, OptionError } from "../errors.ts";
import { GramObserver } from "../calib/gram.ts";
import type { TensorReader } from "../io/tensor_reader.ts";
import { cholesky, type CholeskyResult } from "../linalg/cholesky.ts";
import { createRng } from "../linalg/random.ts";
import { type GradModel, lossAndGrad } from "../model/backward.ts";
import { BLOCK_FIELD, type Linear, type LlamaBlock, loadBlock, loadHead } from "../model/llama.ts";
import { checkLayerCount } from "../model/load.ts";
import { LINEAR_NAMES, type LinearName, linearPrefix } from "../model/names.ts";
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
  /** Adam's learning rate on the scores (default 0.05). */
  lr?: number;
  /** Initial sparsity weight (default 1). */
  sparsity?: number;
  /** Calibration windows per step (default 4, at most the number of windows). */
  batch?: number;
  /**
   * Weight of a KL(original ‖ compressed) term, the paper's deviation from the original model (default 10: on
   * stories260K it regularises the fit to a small calibration set — 20 % removed: ppl 58.57 without, 39.98 at
   * weight 1, 36.75 at 10; 0 turns it off).
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
}

/** A progress event of the SoCo pass: the bases (per block), then every training step. */
export type SocoPassProgress =
  | { stage: "bases"; block: number; done: number; total: number }
  | { stage: "train"; train: SocoProgress };

/** What the SoCo pass found: the factors of every block linear and how they were learned. */
export interface SocoPassResult {
  /** Linear prefix → its factors (rank = components kept, possibly 0). */
  factors: Map<string, Factors>;
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
  /** Resolved training settings, as recorded in config.json. */
  settings: { steps: number; lr: number; batch: number; klWeight: number; nllWeight: number };
  /** Seconds: bases, training. */
  seconds: { bases: number; train: number };
}

/**
 * Throw OptionError on a bad SoCo option (basis, batch, KL/NLL weights, and the training's steps and learning
 * rate); returns the training's resolved steps and learning rate.
 */
export function checkSocoOptions(opts: SocoRunOptions): { steps: number; lr: number } {
  const trainOpts = checkTrainOptions(opts);
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
  if ((opts.nllWeight ?? 1) === 0 && !((opts.klWeight ?? 10) > 0)) {
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
  },
): Promise<SocoPassResult> {
  const t0 = performance.now();
  const { spec, reader } = model;
  checkLayerCount(reader, spec);
  const kind = opts.basis ?? "whitened";
  const { steps, lr } = checkSocoOptions(opts);
  const { linears, target } = socoBudget(spec, ratio);

  // Bases, block by block on the original model's activations (whitened: their Gram matrices).
  const head = await loadHead(reader, spec);
  const bases: SpectralBasis[] = [];
  const kept: { inputNorm: Float32Array; postNorm: Float32Array; bias: Map<LinearName, Float32Array> }[] = [];
  const h = kind === "whitened" ? embedWindows(spec, head, windows) : undefined;
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
      if (!h) {
        bases.push(svdBasis(linearPrefix(i, l), lin.weight));
        continue;
      }
      let f = chol.get(GROUP[l]);
      if (!f) chol.set(GROUP[l], f = cholesky(grams.get(GROUP[l])!.gram(), { damping: "auto" }));
      bases.push(whitenedBasis(linearPrefix(i, l), lin.weight, { cholesky: f }));
    }
    kept.push({ inputNorm: block.inputNorm, postNorm: block.postNorm, bias });
    opts.sample?.();
    opts.onProgress?.({ stage: "bases", block: i, done: i + 1, total: spec.numLayers });
  }
  const tBases = performance.now();

  // Training on the model's own loss.
  const per = LINEAR_NAMES.length;
  let scores: readonly Float64Array[] = bases.map((b) => new Float64Array(b.rank).fill(1));
  const blockAt = (i: number): LlamaBlock => {
    const lin = (l: LinearName): Linear => {
      const j = i * per + LINEAR_NAMES.indexOf(l);
      return { kind: "dense", weight: spectralWeight(bases[j], scores[j]), bias: kept[i].bias.get(l) };
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
  const klWeight = opts.klWeight ?? 10;
  const reference: GradModel | undefined = klWeight > 0
    ? { spec, head, block: (i) => loadBlock(reader, spec, i) }
    : undefined;
  const batch = Math.min(opts.batch ?? 4, windows.length);
  const pick = batchPicker(windows.length, batch, opts.seed ?? 0);
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
      resume = stateFromJson(
        text,
        bases.map((b) => b.rank),
        `checkpoint ${opts.checkpoint}`,
      );
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
    const wins = pick(step).map((k) => windows[k]);
    const r = await lossAndGrad(gm, wins, {
      onLinearGrad: (layer, lin, x, dy) => {
        const j = layer * per + LINEAR_NAMES.indexOf(lin);
        addScoreGradient(bases[j], x, dy, grads[j]);
      },
      reference,
      klWeight: reference ? klWeight : undefined,
      nllWeight: opts.nllWeight,
      signal: opts.signal,
    });
    opts.sample?.();
    return r.loss;
  }, {
    linears,
    ranks: bases.map((b) => b.rank),
    budget: target,
    steps,
    lr,
    sparsity: opts.sparsity,
    resume,
    onCheckpoint: saveCheckpoint,
    checkpointEvery: opts.checkpointEvery,
    onProgress: (e) => opts.onProgress?.({ stage: "train", train: e }),
    signal: opts.signal,
  });
  const tTrain = performance.now();

  const factors = new Map<string, Factors>();
  const ranks: Record<string, number> = {};
  bases.forEach((b, j) => {
    const s = trained.scores[j], keep = trained.keep[j];
    for (const i of keep) {
      if (!Number.isFinite(s[i])) {
        throw new NumericError(`soco: ${b.name} component ${i} has score ${s[i]}`);
      }
    }
    const f = spectralFactors(b, s, keep);
    ranks[b.name] = keep.length;
    factors.set(b.name, {
      ...f,
      report: {
        method: "soco",
        rank: keep.length,
        rows: b.rows,
        cols: b.cols,
        singularValues: b.sigma,
        energyKept: NaN,
        seconds: 0,
      },
    });
  });
  return {
    factors,
    ranks,
    basis: kind,
    budget: { target, kept: trained.params },
    history: trained.history,
    spectra: bases.map((b, j) => ({
      name: b.name,
      rows: b.rows,
      cols: b.cols,
      sigma: b.sigma,
      scores: trained.scores[j],
    })),
    recoveries: trained.state.recoveries,
    settings: { steps, lr, batch, klWeight, nllWeight: opts.nllWeight ?? 1 },
    seconds: { bases: (tBases - t0) / 1000, train: (tTrain - tBases) / 1000 },
  };
}
