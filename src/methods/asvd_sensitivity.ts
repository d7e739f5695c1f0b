/**
 * ASVD's sensitivity-based rank allocation (the paper's STRS): every linear is compressed alone at each
 * parameter ratio p of a grid (0.4…0.9) and the calibration perplexity measured (the sweep itself runs the
 * model: `pipeline/sensitivity.ts`, cached on disk). Then all (layer, p, ppl) triples are sorted from most to
 * least harmful, and a cut c is binary-searched: each layer takes the smallest p among the triples after the
 * cut (the insensitive tail), layers with no triple there stay dense. Moving the cut right compresses less,
 * so the kept fraction grows with c; the search returns the largest cut whose kept fraction still meets the
 * target (the least aggressive allocation that reaches it).
 *
 * Unlike the reference, which counts a layer at p as p·m·n parameters, the kept fraction here counts the
 * parameters actually stored, k·(m+n) with k = floor(m·n·p/(m+n)).
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import type { LossCurve } from "./allocation.ts";
import { breakEvenRank, keptRank, lowRankParams } from "./ratio.ts";

/** The ASVD paper's grid of parameter ratios for the sweep. */
export const SENSITIVITY_RATIOS: readonly number[] = Object.freeze([0.4, 0.5, 0.6, 0.7, 0.8, 0.9]);

/** Calibration perplexity with one layer replaced: table[layer][String(p)] = ppl. */
export type SensitivityTable = Record<string, Record<string, number>>;

/** Shape of a linear that may be compressed. */
export interface LayerShape {
  /** Tensor prefix, e.g. "model.layers.0.mlp.up_proj". */
  name: string;
  /** Output features m. */
  rows: number;
  /** Input features n. */
  cols: number;
}

/** Result of {@link allocateBySensitivity}. */
export interface Allocation {
  /** Per layer: the chosen parameter ratio p, or null to stay dense. */
  kept: Record<string, number | null>;
  /** Per layer: the rank, or null to stay dense. */
  ranks: Record<string, number | null>;
  /** Fraction of the listed layers' parameters kept. */
  achievedKept: number;
  /** The cut found, as an index into the sorted triples, and how many triples there were. */
  cut: number;
  /** Number of (layer, p) triples considered. */
  triples: number;
}

/** Rank of an m×n layer at parameter ratio p (ratio.ts's formula), at least 1. */
function rankAt(m: number, n: number, p: number): number {
  return Math.max(1, keptRank(m, n, p));
}

/**
 * Binary-search the allocation of parameter ratios to layers so that the kept fraction of the layers'
 * parameters is at most `targetKept` (ASVD's parameter ratio). Throws OptionError when the target is outside
 * (0, 1), when a layer of `shapes` has no sweep results, or when even the smallest ratio everywhere keeps more
 * than the target.
 */
export function allocateBySensitivity(
  table: SensitivityTable,
  shapes: readonly LayerShape[],
  targetKept: number,
): Allocation {
  if (!(targetKept > 0 && targetKept < 1)) {
    throw new OptionError(
      `sensitivity allocation: target kept fraction must be in (0, 1), got ${targetKept}`,
    );
  }
  const triples: { layer: string; p: number; ppl: number }[] = [];
  for (const s of shapes) {
    const row = table[s.name];
    if (!row || Object.keys(row).length === 0) {
      throw new OptionError(`sensitivity allocation: no sweep results for layer ${s.name}`);
    }
    for (const [key, ppl] of Object.entries(row)) {
      const p = Number(key);
      if (p > 0 && p < 1) triples.push({ layer: s.name, p, ppl: Number.isNaN(ppl) ? Infinity : ppl });
    }
  }
  // Most harmful first; ties broken deterministically.
  triples.sort((x, y) => y.ppl - x.ppl || y.p - x.p || (x.layer < y.layer ? -1 : x.layer > y.layer ? 1 : 0));
  let total = 0;
  for (const s of shapes) total += s.rows * s.cols;
  const assign = (cut: number): Record<string, number | null> => {
    const kept: Record<string, number | null> = {};
    for (const s of shapes) kept[s.name] = null;
    for (let i = cut; i < triples.length; i++) {
      const t = triples[i], cur = kept[t.layer];
      if (cur === null || t.p < cur) kept[t.layer] = t.p;
    }
    return kept;
  };
  const keptFraction = (kept: Record<string, number | null>): number => {
    let after = 0;
    for (const s of shapes) {
      const p = kept[s.name];
      after += p === null ? s.rows * s.cols : lowRankParams(s.rows, s.cols, rankAt(s.rows, s.cols, p));
    }
    return after / total;
  };
  const atZero = keptFraction(assign(0));
  if (atZero > targetKept) {
    throw new OptionError(
      `sensitivity allocation: even the smallest swept ratio on every layer keeps ${
        atZero.toFixed(4)
      } of the parameters, more than the target ${targetKept}; sweep smaller ratios or aim higher`,
    );
  }
  // Largest cut c with keptFraction(c) ≤ target; keptFraction(0) ≤ target, keptFraction(N) = 1 > target.
  let lo = 0, hi = triples.length;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (keptFraction(assign(mid)) <= targetKept) lo = mid;
    else hi = mid;
  }
  const kept = assign(lo);
  const ranks: Record<string, number | null> = {};
  for (const s of shapes) {
    const p = kept[s.name];
    ranks[s.name] = p === null ? null : rankAt(s.rows, s.cols, p);
  }
  return { kept, ranks, achievedKept: keptFraction(kept), cut: lo, triples: triples.length };
}

/**
 * The sweep as loss curves for {@link allocateRanks} (`allocation.ts`): the loss of a linear at rank k is
 * log(ppl/densePpl) (the calibration NLL it adds, floored at 0), linear in k between the swept ranks and
 * falling to 0 at the break-even rank m·n/(m+n); ranks below the smallest swept one are not offered
 * (Infinity), as the sweep says nothing about them. Throws OptionError when a layer has no sweep results.
 */
export function sweepCurves(
  table: SensitivityTable,
  shapes: readonly LayerShape[],
  densePpl: number,
): LossCurve[] {
  return shapes.map((s) => {
    const row = table[s.name];
    if (!row || Object.keys(row).length === 0) {
      throw new OptionError(`sensitivity allocation: no sweep results for layer ${s.name}`);
    }
    const pts = Object.entries(row)
      .map(([p, ppl]) => ({
        k: rankAt(s.rows, s.cols, Number(p)),
        loss: Number.isNaN(ppl) ? Infinity : Math.max(0, Math.log(ppl / densePpl)),
      }))
      .sort((a, b) => a.k - b.k);
    pts.push({ k: breakEvenRank(s.rows, s.cols), loss: 0 });
    const kmax = Math.ceil(breakEvenRank(s.rows, s.cols)) - 1;
    const loss = new Float64Array(Math.max(0, kmax)).fill(Infinity);
    for (let k = pts[0].k; k <= kmax; k++) {
      let j = 0;
      while (j + 1 < pts.length - 1 && pts[j + 1].k <= k) j++;
      const a = pts[j], b = pts[j + 1];
      if (k === a.k || !Number.isFinite(a.loss) || !Number.isFinite(b.loss)) {
        loss[k - 1] = k === a.k ? a.loss : Math.max(a.loss, b.loss);
        continue;
      }
      loss[k - 1] = a.loss + ((b.loss - a.loss) * (k - a.k)) / (b.k - a.k);
    }
    return { name: s.name, rows: s.rows, cols: s.cols, loss };
  });
}
