/**
 * Rank allocation under one parameter budget: every compressible linear has a loss curve (the damage its
 * truncation at rank k does, by whatever measure: a sweep's perplexity, its own output error on calibration
 * inputs, SVD-LLM's exact σ² tail) and the allocator picks one rank per linear (or leaves it dense) so that
 * the parameters kept land on the target, within one rank step of the smallest linear.
 *
 * Two rules:
 * - `"threshold"` — ASVD's STRS generalised to every rank: each linear takes the smallest rank whose loss is
 *   at most τ, and τ is the smallest value that meets the budget (the paper searches a cut in the sorted
 *   (layer, ratio, ppl) triples, which is this rule on its ratio grid);
 * - `"marginal"` — minimise the sum of the losses under the budget (a Lagrangian: each linear minimises
 *   loss(k) + λ·k·(m+n), λ the smallest that meets the budget). Exact when the losses add up, as SVD-LLM's
 *   per-component truncation losses do.
 *
 * Either way the budget left over after the search is filled one rank at a time where a rank buys the most
 * loss per parameter, so the kept fraction ends at most one rank step (m+n of the smallest linear that can
 * still grow) below the target.
 *
 * @example
 * ```ts
 * import { allocateRanks } from "./allocation.ts";
 * // Two 100×100 linears: "a" is damaged ten times as much as "b" by the same truncation.
 * const tail = (scale: number) => Array.from({ length: 49 }, (_, i) => scale * (49 - i - 1));
 * const r = allocateRanks([
 *   { name: "a", rows: 100, cols: 100, loss: tail(10) },
 *   { name: "b", rows: 100, cols: 100, loss: tail(1) },
 * ], 0.5);
 * console.log(r.ranks.a! > r.ranks.b!, r.achievedKept); // true, 0.5
 * ```
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import { breakEvenRank, lowRankParams } from "./ratio.ts";

/** One linear and what truncating it costs. */
export interface LossCurve {
  /** Tensor prefix, e.g. "model.layers.0.mlp.up_proj". */
  name: string;
  /** Output features m. */
  rows: number;
  /** Input features n. */
  cols: number;
  /**
   * loss[k − 1] = the loss at rank k, for k = 1 … loss.length (ranks past the array, or at or beyond the
   * break-even rank m·n/(m+n), are not offered); Infinity marks a rank that must not be chosen. Staying dense
   * costs m·n parameters and loses 0.
   */
  loss: ArrayLike<number>;
}

/** Options of {@link allocateRanks}. */
export interface AllocateOptions {
  /** "threshold" (ASVD's rule, default) or "marginal" (least total loss). */
  rule?: "threshold" | "marginal";
  /**
   * Group of each curve (by name): each group keeps the target fraction of its own parameters, and only
   * losses within a group are compared (e.g. one group per kind of linear, whose losses share a scale, as
   * SVD-LLM V2 allocates); what the groups leave of the budget is then filled across them. Default: one group.
   */
  groupOf?: (name: string) => string;
  /** Ranks to start from instead of searching (within the budget); only the filling of what is left runs. */
  start?: Readonly<Record<string, number | null>>;
}

/** Result of {@link allocateRanks}. */
export interface RankAllocation {
  /** Per linear: the rank, or null to stay dense. */
  ranks: Record<string, number | null>;
  /** Fraction of the linears' parameters kept (≤ the target, within one rank step of it). */
  achievedKept: number;
  /** Sum of the chosen losses. */
  loss: number;
}

/** The largest rank that stores fewer values than the dense m×n weight: ⌈m·n/(m+n)⌉ − 1. */
export function maxSavingRank(m: number, n: number): number {
  return Math.ceil(breakEvenRank(m, n)) - 1;
}

/**
 * Ranks for `curves` keeping at most the fraction `targetKept` of their parameters, as close to it as one
 * rank step allows. Throws OptionError when the target is outside (0, 1), a curve is malformed, or even the
 * smallest allowed rank everywhere keeps more than the target.
 */
export function allocateRanks(
  curves: readonly LossCurve[],
  targetKept: number,
  opts: AllocateOptions = {},
): RankAllocation {
  if (opts.groupOf) {
    const groups = new Map<string, LossCurve[]>();
    for (const c of curves) {
      const g = opts.groupOf(c.name);
      groups.set(g, [...(groups.get(g) ?? []), c]);
    }
    const start: Record<string, number | null> = {};
    for (const g of groups.values()) {
      Object.assign(start, allocateRanks(g, targetKept, { rule: opts.rule }).ranks);
    }
    return allocateRanks(curves, targetKept, { rule: opts.rule, start });
  }
  if (!(targetKept > 0 && targetKept < 1)) {
    throw new OptionError(`rank allocation: target kept fraction must be in (0, 1), got ${targetKept}`);
  }
  const rule = opts.rule ?? "threshold";
  if (rule !== "threshold" && rule !== "marginal") {
    throw new OptionError(`rank allocation: rule must be "threshold" or "marginal", got ${String(rule)}`);
  }
  let total = 0, floor = 0;
  const ls = curves.map((c) => {
    if (!Number.isInteger(c.rows) || !Number.isInteger(c.cols) || c.rows < 1 || c.cols < 1) {
      throw new OptionError(`rank allocation: ${c.name} has invalid shape ${c.rows}×${c.cols}`);
    }
    const kmax = Math.min(c.loss.length, maxSavingRank(c.rows, c.cols));
    const loss = new Float64Array(kmax);
    let kmin = 0;
    for (let k = 1; k <= kmax; k++) {
      const v = Number(c.loss[k - 1]);
      if (Number.isNaN(v) || v < 0) {
        throw new OptionError(
          `rank allocation: ${c.name} has loss ${v} at rank ${k} (must be ≥ 0 or Infinity)`,
        );
      }
      loss[k - 1] = v;
      if (kmin === 0 && v < Infinity) kmin = k;
    }
    total += c.rows * c.cols;
    floor += kmin > 0 ? lowRankParams(c.rows, c.cols, kmin) : c.rows * c.cols;
    return { ...c, kmax, loss, step: c.rows + c.cols, dense: c.rows * c.cols };
  });
  const budget = targetKept * total;
  if (floor > budget) {
    throw new OptionError(
      `rank allocation: even the smallest allowed rank of every linear keeps ${
        (floor / total).toFixed(4)
      } of the parameters, more than the target ${targetKept}; allow smaller ranks or aim higher`,
    );
  }
  const lossAt = (l: (typeof ls)[number], k: number | null) => (k === null ? 0 : l.loss[k - 1]);
  const cost = (l: (typeof ls)[number], k: number | null) => (k === null ? l.dense : k * l.step);
  const params = (ks: (number | null)[]) => ks.reduce<number>((t, k, i) => t + cost(ls[i], k), 0);

  // One choice per linear for a value of the rule's parameter; kept parameters fall as it grows.
  const choose = rule === "threshold"
    ? (tau: number) =>
      ls.map((l) => {
        for (let k = 1; k <= l.kmax; k++) if (l.loss[k - 1] <= tau) return k;
        return null;
      })
    : (lambda: number) =>
      ls.map((l) => {
        let best: number | null = null, bestV = lambda * l.dense;
        for (let k = 1; k <= l.kmax; k++) {
          const v = l.loss[k - 1] + lambda * k * l.step;
          if (v < bestV) (best = k), (bestV = v);
        }
        return best;
      });
  let ks: (number | null)[];
  if (opts.start) {
    const start = opts.start;
    ks = ls.map((l) => start[l.name] ?? null);
    if (params(ks) > budget) throw new OptionError(`rank allocation: the starting ranks exceed the budget`);
  } else if (rule === "threshold") {
    // The smallest τ among the losses offered that meets the budget (τ = the largest finite loss does).
    const taus = [...new Set(ls.flatMap((l) => [...l.loss].filter((v) => v < Infinity)))].sort((a, b) =>
      a - b
    );
    let lo = 0, hi = taus.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (params(choose(taus[mid])) <= budget) hi = mid;
      else lo = mid + 1;
    }
    ks = choose(taus[lo] ?? Infinity);
  } else {
    // λ by bisection on a log scale: from a λ where nothing is worth its parameters to one meeting the budget.
    let hi = 1;
    for (let i = 0; i < 2000 && params(choose(hi)) > budget; i++) hi *= 2;
    if (params(choose(hi)) > budget) ks = choose(Infinity);
    else {
      let lo = 0;
      for (let i = 0; i < 200 && hi - lo > 1e-12 * hi; i++) {
        const mid = (lo + hi) / 2;
        if (params(choose(mid)) <= budget) hi = mid;
        else lo = mid;
      }
      ks = choose(hi);
    }
  }
  // Fill what is left of the budget one rank at a time where a rank removes the most loss per parameter (a
  // linear at its largest saving rank may instead go back to dense, if that fits).
  let left = budget - params(ks);
  for (;;) {
    let best = -1, bestGain = -Infinity, bestNext: number | null = null;
    for (let i = 0; i < ls.length; i++) {
      const k = ks[i], l = ls[i];
      if (k === null) continue;
      const next = k < l.kmax ? k + 1 : null;
      const extra = cost(l, next) - cost(l, k);
      if (extra > left || extra <= 0) continue;
      const gain = (lossAt(l, k) - lossAt(l, next)) / extra;
      if (!Number.isFinite(gain)) continue;
      if (gain > bestGain) (best = i), (bestGain = gain), (bestNext = next);
    }
    if (best < 0) break;
    left -= cost(ls[best], bestNext) - cost(ls[best], ks[best]);
    ks[best] = bestNext;
  }
  const ranks: Record<string, number | null> = {};
  let loss = 0;
  ls.forEach((l, i) => {
    ranks[l.name] = ks[i];
    loss += lossAt(l, ks[i]);
  });
  return { ranks, achievedKept: params(ks) / total, loss };
}
