/**
 * SoCo's training of the singular spectrum: one deterministic Adam optimiser over the scores s of every
 * compressed linear at once, on an objective the caller supplies (the model's next-token loss through the
 * backward pass, or any function with its gradient), plus a sparsity term on the budget. Three stages, as
 * in the paper:
 *
 * 1. coarse (the first 20 % of the steps): the sparsity term, on while the differentiable budget
 *    (`softParams`) exceeds the target, with a weight that grows every step it is still over, pushes the
 *    scores of the least useful components towards 0 — the budget is reached quickly;
 * 2. refine (the next 30 %): alternate — the sparsity term (at the weight stage 1 ended with) while over
 *    budget, the loss alone while under it — holding the budget while the loss recovers;
 * 3. sparsify (the rest): prune the components with the smallest |s| (not the smallest σ) in steps, from
 *    what is alive at its start down to the target over its first 40 %, then train the survivors alone:
 *    their scores, amplified where that helps, compensate for what was pruned. The last selection lands on
 *    the target as exactly as whole components allow (`selectComponents`).
 *
 * The sparsity gradient of a component is its cost (m + n) over the mean cost, times the weight times the
 * RMS of the loss gradient, so its pull is commensurate with the loss's whatever the loss's scale (Adam
 * normalises each score's step anyway).
 *
 * Divergence (a non-finite loss or gradient) restores the state before the step, halves the learning rate
 * and retries, reporting it; after `maxRecoveries` halvings it throws. Everything is in {@link SocoState},
 * a small JSON-able object: a run resumed from a checkpoint equals the uninterrupted run.
 *
 * @example
 * ```ts
 * import { trainSpectrum } from "./soco_train.ts";
 * // one linear of 4 components costing 2 values each; keep 2 of them (budget 4): the loss wants s = t
 * const t = [1, 0.2, 0.9, 0.1];
 * const res = await trainSpectrum((s, g) => {
 *   let loss = 0;
 *   for (let i = 0; i < 4; i++) {
 *     loss += (s[0][i] - t[i]) ** 2;
 *     g[0][i] += 2 * (s[0][i] - t[i]);
 *   }
 *   return loss;
 * }, { linears: [{ cost: 2, cap: 4 }], ranks: [4], budget: 4, steps: 60, lr: 0.05 });
 * res.keep; // [[0, 2]]
 * ```
 *
 * @module
 */
import { NumericError, OptionError } from "../errors.ts";
import { type BudgetLinear, checkBudget, selectComponents, softParams } from "./soco_budget.ts";

/** The three stages. */
export type SocoStage = "coarse" | "refine" | "sparsify";

/**
 * The training objective: its value at the scores `s` (one array per linear; pruned components are 0),
 * adding ∂loss/∂s into `grads` (zero-filled, same shapes). `step` lets it choose its data deterministically.
 */
export type SocoObjective = (
  s: readonly Float64Array[],
  grads: Float64Array[],
  step: number,
) => number | Promise<number>;

/** Everything the training carries from one step to the next: a checkpoint (JSON via {@link stateToJson}). */
export interface SocoState {
  /** Format version. */
  version: 1;
  /** Steps completed. */
  step: number;
  /** Total steps of the run. */
  steps: number;
  /** Current learning rate (halved by each recovery). */
  lr: number;
  /** Sparsity weight (grows in stage 1). */
  kappa: number;
  /** Adam's step counter. */
  adamT: number;
  /** Divergences recovered from. */
  recoveries: number;
  /** Kept values when stage 3 began (its pruning starts there), or 0 before it. */
  pruneFrom: number;
  /** Whether the last step of stages 1–2 was over budget. */
  over: boolean;
  /** Scores, per linear (r_l each). */
  s: Float64Array[];
  /** Adam's first moments. */
  m: Float64Array[];
  /** Adam's second moments. */
  v: Float64Array[];
  /** Stage 3's masks (1 = alive), per linear; null before stage 3. */
  mask: Uint8Array[] | null;
}

/** A progress event: one per step, and one per recovery. */
export interface SocoProgress {
  /** Steps completed. */
  step: number;
  /** Total steps. */
  steps: number;
  /** The stage of that step. */
  stage: SocoStage;
  /** The objective's loss at that step (before its update). */
  loss: number;
  /** Kept values over the target: the differentiable budget in stages 1–2, the alive components' in 3. */
  budget: number;
  /** Learning rate. */
  lr: number;
  /** Steps per second so far in this run. */
  stepsPerSecond: number;
  /** Set when the step diverged and was retried at half the learning rate: what happened. */
  recovery?: string;
}

/** Options of {@link trainSpectrum}. */
export interface SocoTrainOptions {
  /** Cost and cap of each linear (see `soco_budget.ts`). */
  linears: readonly BudgetLinear[];
  /** Components per linear (the length of its score vector). */
  ranks: readonly number[];
  /** Target: stored values of the kept components. */
  budget: number;
  /** Total steps, split 20 / 30 / 50 % over the stages (default 100; 3 to 1,000,000). */
  steps?: number;
  /** Adam's learning rate on the scores (default 0.05; in (0, 1]). */
  lr?: number;
  /** Initial sparsity weight κ (default 1). */
  sparsity?: number;
  /**
   * Initial scores per linear (default all 1: W' = W). E.g. 1 on the components a rank allocation keeps and 0
   * elsewhere, so the training starts from that truncated model (step 0's loss is that model's).
   */
  init?: readonly Float64Array[];
  /** Resume from this state (a checkpoint); the other options must describe the same run. */
  resume?: SocoState;
  /** Called with the state every `checkpointEvery` steps and at the end. */
  onCheckpoint?: (state: SocoState) => void | Promise<void>;
  /** Steps between checkpoints (default 25). */
  checkpointEvery?: number;
  /** Learning-rate halvings allowed before divergence is an error (default 4). */
  maxRecoveries?: number;
  /** Progress events. */
  onProgress?: (e: SocoProgress) => void;
  /** Stop early (throws the signal's reason). */
  signal?: AbortSignal;
}

/** Result of {@link trainSpectrum}. */
export interface SocoTrainResult {
  /** Learned scores per linear (0 where pruned). */
  scores: Float64Array[];
  /** Kept components per linear, ascending. */
  keep: number[][];
  /** Values stored by the kept components (≤ budget). */
  params: number;
  /** The final state. */
  state: SocoState;
  /** Per step: stage, loss and budget (kept over target). */
  history: { step: number; stage: SocoStage; loss: number; budget: number }[];
}

const BETA1 = 0.9, BETA2 = 0.999, EPS = 1e-8;
/** Growth of the sparsity weight per stage-1 step spent over budget. */
const KAPPA_GROWTH = 1.05;
/** Stage 3 prunes over this fraction of its steps, then trains the survivors. */
const PRUNE_SPAN = 0.4;
/** At stage 3's start, components with |s| at or below this are pruned first. */
const ALIVE = 0.05;

/** The stage boundaries for `steps`: [end of coarse, end of refine]. */
export function stageBounds(steps: number): [number, number] {
  const c = Math.max(1, Math.round(0.2 * steps));
  const r = Math.max(1, Math.round(0.3 * steps));
  return [c, Math.min(steps - 1, c + r)];
}

/** The stage step `t` (0-based) belongs to. */
export function stageOf(t: number, steps: number): SocoStage {
  const [c, r] = stageBounds(steps);
  return t < c ? "coarse" : t < r ? "refine" : "sparsify";
}

/**
 * Check the training options a caller gives (before any expensive work): steps a whole number from 3 to
 * 1,000,000, learning rate in (0, 1], sparsity weight positive. Returns steps and lr with their defaults;
 * throws OptionError naming the option and the value.
 */
export function checkTrainOptions(
  o: { steps?: number; lr?: number; sparsity?: number },
): { steps: number; lr: number } {
  const steps = o.steps ?? 100, lr = o.lr ?? 0.05;
  if (typeof steps !== "number" || !Number.isInteger(steps) || steps < 3 || steps > 1e6) {
    throw new OptionError(
      `soco: steps must be a whole number from 3 to 1000000 (one per stage at least), got ${show(steps)}`,
    );
  }
  if (typeof lr !== "number" || !(lr > 0 && lr <= 1)) {
    throw new OptionError(`soco: learning rate must be a number in (0, 1], got ${show(lr)}`);
  }
  const k = o.sparsity ?? 1;
  if (typeof k !== "number" || !(k > 0 && Number.isFinite(k))) {
    throw new OptionError(`soco: sparsity weight must be a positive number, got ${show(k)}`);
  }
  return { steps, lr };
}

/** A value as the user wrote it: strings quoted ("4" is not 4). */
const show = (v: unknown): string => (typeof v === "string" ? JSON.stringify(v) : String(v));

function validate(o: SocoTrainOptions): { steps: number; lr: number } {
  const r = checkTrainOptions(o);
  if (o.linears.length === 0 || o.linears.length !== o.ranks.length) {
    throw new OptionError(`soco: ${o.linears.length} linears with ${o.ranks.length} ranks`);
  }
  checkBudget(o.linears, o.budget);
  return r;
}

/** A fresh state: every score 1 (W' = W) or `init`, Adam's moments 0. */
export function initialState(
  ranks: readonly number[],
  steps: number,
  lr: number,
  kappa = 1,
  init?: readonly Float64Array[],
): SocoState {
  if (init && (init.length !== ranks.length || init.some((s, l) => s.length !== ranks[l]))) {
    throw new OptionError(
      `soco: initial scores for ${init.length} linears do not fit the ${ranks.length} given`,
    );
  }
  return {
    version: 1,
    step: 0,
    steps,
    lr,
    kappa,
    adamT: 0,
    recoveries: 0,
    pruneFrom: 0,
    over: true,
    s: ranks.map((r, l) => (init ? Float64Array.from(init[l]) : new Float64Array(r).fill(1))),
    m: ranks.map((r) => new Float64Array(r)),
    v: ranks.map((r) => new Float64Array(r)),
    mask: null,
  };
}

/** A deep copy of a state. */
export function cloneState(st: SocoState): SocoState {
  return {
    ...st,
    s: st.s.map((a) => a.slice()),
    m: st.m.map((a) => a.slice()),
    v: st.v.map((a) => a.slice()),
    mask: st.mask ? st.mask.map((a) => a.slice()) : null,
  };
}

/** The state as JSON text (float64 values round-trip exactly). */
export function stateToJson(st: SocoState): string {
  const arr = (xs: ArrayLike<number>[]) => xs.map((a) => Array.from(a));
  return JSON.stringify({
    ...st,
    s: arr(st.s),
    m: arr(st.m),
    v: arr(st.v),
    mask: st.mask ? arr(st.mask) : null,
  });
}

/**
 * Parse a checkpoint written by {@link stateToJson}; `ranks` (per linear) must match. Throws OptionError
 * naming `where` and the problem.
 */
export function stateFromJson(text: string, ranks: readonly number[], where = "checkpoint"): SocoState {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(text);
  } catch (e) {
    throw new OptionError(`soco: cannot parse the ${where} as JSON: ${(e as Error).message}`);
  }
  if (!o || typeof o !== "object" || o.version !== 1) {
    throw new OptionError(`soco: the ${where} is not a version-1 SoCo checkpoint`);
  }
  const vecs = (key: string, T: typeof Float64Array | typeof Uint8Array) => {
    const v = o[key];
    if (!Array.isArray(v) || v.length !== ranks.length) {
      throw new OptionError(
        `soco: the ${where}'s "${key}" has ${
          Array.isArray(v) ? v.length : "no"
        } vectors, the model ${ranks.length} linears`,
      );
    }
    return v.map((a: unknown, l: number) => {
      if (
        !Array.isArray(a) || a.length !== ranks[l] ||
        a.some((x) => typeof x !== "number" || !Number.isFinite(x))
      ) {
        throw new OptionError(`soco: the ${where}'s "${key}"[${l}] is not ${ranks[l]} finite numbers`);
      }
      return T.from(a as number[]);
    });
  };
  const num = (key: string) => {
    const x = o[key];
    if (typeof x !== "number" || !Number.isFinite(x)) {
      throw new OptionError(`soco: the ${where}'s "${key}" is not a number`);
    }
    return x;
  };
  return {
    version: 1,
    step: num("step"),
    steps: num("steps"),
    lr: num("lr"),
    kappa: num("kappa"),
    adamT: num("adamT"),
    recoveries: num("recoveries"),
    pruneFrom: num("pruneFrom"),
    over: o.over === true,
    s: vecs("s", Float64Array) as Float64Array[],
    m: vecs("m", Float64Array) as Float64Array[],
    v: vecs("v", Float64Array) as Float64Array[],
    mask: o.mask === null ? null : vecs("mask", Uint8Array) as Uint8Array[],
  };
}

/** Kept values of the alive components (mask 1). */
function aliveParams(linears: readonly BudgetLinear[], mask: readonly Uint8Array[]): number {
  let t = 0;
  for (let l = 0; l < linears.length; l++) {
    let k = 0;
    for (const x of mask[l]) k += x;
    t += linears[l].cost * Math.min(k, linears[l].cap);
  }
  return t;
}

/** Apply a selection as the mask: the pruned scores and their moments become 0 for good. */
function applySelection(st: SocoState, keep: number[][]): void {
  st.mask = st.s.map((s, l) => {
    const m = new Uint8Array(s.length);
    for (const i of keep[l]) m[i] = 1;
    for (let i = 0; i < s.length; i++) {
      if (!m[i]) st.s[l][i] = st.m[l][i] = st.v[l][i] = 0;
    }
    return m;
  });
}

function allFinite(xs: readonly Float64Array[]): boolean {
  for (const a of xs) for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}

/**
 * Train the scores (see the module doc). Deterministic: the same objective and options give the same
 * scores, and a run resumed from any checkpoint it emitted ends exactly as the uninterrupted run.
 * Throws OptionError on options out of range or a budget the linears cannot meet, NumericError when the loss
 * still diverges after `maxRecoveries` halvings of the learning rate.
 */
export async function trainSpectrum(
  objective: SocoObjective,
  opts: SocoTrainOptions,
): Promise<SocoTrainResult> {
  const { steps, lr } = validate(opts);
  const { linears, budget } = opts;
  const ranks = opts.ranks;
  let st = opts.resume
    ? cloneState(opts.resume)
    : initialState(ranks, steps, lr, opts.sparsity ?? 1, opts.init);
  if (st.steps !== steps || st.s.length !== ranks.length || st.s.some((s, l) => s.length !== ranks[l])) {
    throw new OptionError(
      `soco: the checkpoint is of a run of ${st.steps} steps over ${st.s.length} linears, this run has ${steps} over ${ranks.length}`,
    );
  }
  const every = opts.checkpointEvery ?? 25, maxRec = opts.maxRecoveries ?? 4;
  const endRefine = stageBounds(steps)[1];
  const pruneSteps = Math.max(1, Math.ceil(PRUNE_SPAN * (steps - endRefine)));
  const meanCost = linears.reduce((t, l) => t + l.cost, 0) / linears.length;
  const history: SocoTrainResult["history"] = [];
  const t0 = performance.now(), step0 = st.step;
  const grads = ranks.map((r) => new Float64Array(r));

  while (st.step < steps) {
    opts.signal?.throwIfAborted();
    const t = st.step, stage = stageOf(t, steps);
    const before = cloneState(st);
    // Stage 3: prune to this step's budget, by learned score, among the components still alive.
    if (stage === "sparsify") {
      if (!st.mask) {
        const alive = st.s.map((s) => Uint8Array.from(s, (x) => (Math.abs(x) > ALIVE ? 1 : 0)));
        st.pruneFrom = Math.max(
          budget,
          Math.min(
            aliveParams(linears, alive),
            aliveParams(linears, st.s.map((s) => new Uint8Array(s.length).fill(1))),
          ),
        );
        applySelection(st, selectComponents(linears, st.s, st.pruneFrom).keep);
      }
      const j = t - endRefine + 1;
      const target = j >= pruneSteps
        ? budget
        : Math.round(st.pruneFrom + (budget - st.pruneFrom) * (j / pruneSteps));
      if (aliveParams(linears, st.mask!) > target) {
        applySelection(st, selectComponents(linears, st.s, target, st.mask).keep);
      }
    }
    for (const g of grads) g.fill(0);
    const loss = await objective(st.s, grads, t);
    if (!Number.isFinite(loss) || !allFinite(grads)) {
      st = before;
      if (st.recoveries >= maxRec) {
        throw new NumericError(
          `soco: the loss diverged (${loss}) at step ${t} and still did after ${maxRec} halvings of the learning rate (now ${st.lr}); lower lr or check the model and calibration data`,
        );
      }
      st.recoveries++;
      st.lr /= 2;
      opts.onProgress?.({
        step: t,
        steps,
        stage,
        loss,
        budget: NaN,
        lr: st.lr,
        stepsPerSecond: 0,
        recovery:
          `non-finite loss or gradient at step ${t}: restarted the step from the state before it at learning rate ${st.lr}`,
      });
      continue;
    }
    // Sparsity term in stages 1–2, on while over budget.
    let budgetNow: number;
    if (stage !== "sparsify") {
      const soft = softParams(linears, st.s);
      budgetNow = soft / budget;
      if (soft > budget) {
        let ss = 0, n = 0;
        for (const g of grads) for (const x of g) (ss += x * x), n++;
        const rms = Math.sqrt(ss / n) || 1;
        softParams(linears, st.s, grads, (st.kappa * rms) / meanCost);
        if (stage === "coarse") st.kappa *= KAPPA_GROWTH;
      } else if (st.over) {
        // Just reached the budget: drop the momentum the sparsity term built, or it carries the scores far
        // below the budget (measured: to half of it within ten steps at lr 0.05).
        for (const m of st.m) m.fill(0);
      }
      st.over = soft > budget;
    } else budgetNow = aliveParams(linears, st.mask!) / budget;
    // Adam.
    st.adamT++;
    const c1 = 1 - BETA1 ** st.adamT, c2 = 1 - BETA2 ** st.adamT;
    for (let l = 0; l < st.s.length; l++) {
      const s = st.s[l], m = st.m[l], v = st.v[l], g = grads[l], mask = st.mask?.[l];
      for (let i = 0; i < s.length; i++) {
        if (mask && !mask[i]) continue;
        m[i] = BETA1 * m[i] + (1 - BETA1) * g[i];
        v[i] = BETA2 * v[i] + (1 - BETA2) * g[i] * g[i];
        s[i] -= (st.lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + EPS);
      }
    }
    st.step++;
    history.push({ step: t, stage, loss, budget: budgetNow });
    const sec = (performance.now() - t0) / 1000;
    opts.onProgress?.({
      step: st.step,
      steps,
      stage,
      loss,
      budget: budgetNow,
      lr: st.lr,
      stepsPerSecond: sec > 0 ? (st.step - step0) / sec : 0,
    });
    if (opts.onCheckpoint && (st.step % every === 0 || st.step === steps)) {
      await opts.onCheckpoint(cloneState(st));
    }
  }
  // The final selection: exactly the target (the mask is there already unless stage 3 had no steps).
  const sel = selectComponents(linears, st.s, budget, st.mask);
  applySelection(st, sel.keep);
  return { scores: st.s.map((s) => s.slice()), keep: sel.keep, params: sel.params, state: st, history };
}
