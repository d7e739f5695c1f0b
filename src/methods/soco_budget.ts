/**
 * SoCo's parameter budget: what a kept component costs, the differentiable budget the training drives
 * down, and the global selection that prunes the components with the smallest learned scores and lands
 * on the target.
 *
 * A component of an m×n linear costs m + n stored values (a column of A and a row of B). The budget is
 * global: the ranks of the linears follow from which components survive, so they differ per matrix.
 *
 * @example
 * ```ts
 * import { selectComponents } from "./soco_budget.ts";
 * // two linears whose components cost 8 values each, at most 3 kept each; room for 4 components
 * const sel = selectComponents(
 *   [{ cost: 8, cap: 3 }, { cost: 8, cap: 3 }],
 *   [new Float64Array([0.1, 2, 0.5, 0]), new Float64Array([1, 0.9, 0.2, 0.3])],
 *   32,
 * );
 * sel.keep; // [[1, 2], [0, 1]]
 * sel.params; // 32
 * ```
 *
 * @module
 */
import { OptionError } from "../errors.ts";

/** What the budget needs to know of one linear. */
export interface BudgetLinear {
  /** Values one kept component stores: m + n. */
  readonly cost: number;
  /** The most components it may keep (below break-even, see `rankCap`). */
  readonly cap: number;
}

/** Result of {@link selectComponents}. */
export interface Selection {
  /** Per linear, the kept component indices, ascending. */
  keep: number[][];
  /** Stored values of the kept components: Σ cost·|keep|, ≤ the budget. */
  params: number;
}

/** The fewest values any selection stores: one component per linear. */
export function minimumParams(linears: readonly BudgetLinear[]): number {
  return linears.reduce((t, l) => t + l.cost, 0);
}

/** The most values a selection can store: every linear at its cap. */
export function maximumParams(linears: readonly BudgetLinear[]): number {
  return linears.reduce((t, l) => t + l.cost * l.cap, 0);
}

/**
 * Check that `budget` can be met: at least one component per linear, and no more than every linear at its
 * cap can hold (then the target would not be reached). Throws OptionError naming the budget and the range.
 */
export function checkBudget(linears: readonly BudgetLinear[], budget: number, what = "soco"): void {
  const lo = minimumParams(linears), hi = maximumParams(linears);
  if (!Number.isFinite(budget) || budget < lo) {
    throw new OptionError(
      `${what}: a budget of ${budget} values cannot keep one component of each of the ${linears.length} linears (${lo} values needed); use a smaller ratio removed`,
    );
  }
  if (budget > hi) {
    throw new OptionError(
      `${what}: a budget of ${budget} values is more than the ${hi} the factored linears can store below break-even; use a larger ratio removed`,
    );
  }
}

/**
 * The differentiable budget: Σ_linears cost·Σ_i min(|s_i|, 1) (an amplified score costs what a kept one
 * does). Adds its subgradient times `weight` to `grads` when given. Masked components (mask 0) count nothing.
 */
export function softParams(
  linears: readonly BudgetLinear[],
  scores: readonly Float64Array[],
  grads?: Float64Array[],
  weight = 1,
  masks?: readonly (Uint8Array | null)[] | null,
): number {
  let total = 0;
  for (let l = 0; l < linears.length; l++) {
    const s = scores[l], c = linears[l].cost, mask = masks?.[l];
    for (let i = 0; i < s.length; i++) {
      if (mask && !mask[i]) continue;
      const a = Math.abs(s[i]);
      total += c * Math.min(a, 1);
      // d min(|s|, 1)/ds = sign(s) below 1 (at exactly 1, the start, the left derivative: push down)
      if (grads && a <= 1) grads[l][i] += weight * c * (s[i] < 0 ? -1 : 1);
    }
  }
  return total;
}

/**
 * Keep the components with the largest |score| over all linears, within `budget` stored values: first the
 * best-scored component of every linear (no linear is left empty), then in order of decreasing |score|
 * every component that still fits (its linear below its cap, its cost within what is left). Ties break by
 * linear then component index, so the result is deterministic. `allowed` (per linear, 1 = may be kept)
 * restricts the candidates (progressive pruning never revives a pruned component).
 *
 * The result stores at most `budget` values, and fewer only by less than the cost of any component that
 * could still be added: the target is met as exactly as whole components allow.
 */
export function selectComponents(
  linears: readonly BudgetLinear[],
  scores: readonly Float64Array[],
  budget: number,
  allowed?: readonly (Uint8Array | null)[] | null,
): Selection {
  checkBudget(linears, budget);
  const order: [number, number, number][] = []; // [|score|, linear, component]
  for (let l = 0; l < linears.length; l++) {
    const s = scores[l], ok = allowed?.[l];
    for (let i = 0; i < s.length; i++) if (!ok || ok[i]) order.push([Math.abs(s[i]), l, i]);
  }
  order.sort((a, b) => b[0] - a[0] || a[1] - b[1] || a[2] - b[2]);
  const kept = linears.map(() => new Set<number>());
  let params = 0;
  for (const [, l, i] of order) {
    if (kept[l].size > 0) continue;
    kept[l].add(i);
    params += linears[l].cost;
  }
  for (let l = 0; l < linears.length; l++) {
    if (kept[l].size === 0) {
      throw new OptionError(`soco: linear ${l} has no component left to keep (all pruned)`);
    }
  }
  for (const [, l, i] of order) {
    const c = linears[l].cost;
    if (kept[l].has(i) || kept[l].size >= linears[l].cap || params + c > budget) continue;
    kept[l].add(i);
    params += c;
  }
  return { keep: kept.map((k) => [...k].sort((a, b) => a - b)), params };
}
