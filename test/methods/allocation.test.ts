import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { allocateBySensitivity, type SensitivityTable } from "../../src/methods/asvd_sensitivity.ts";
import { kvCacheSavings, kvRank } from "../../src/methods/kvcache.ts";
import { OptionError } from "../../src/errors.ts";

const shapes = [
  { name: "a", rows: 100, cols: 100 },
  { name: "b", rows: 100, cols: 100 },
  { name: "c", rows: 200, cols: 100 },
];

test("allocation: sensitive layers keep more, the target is met with the least aggressive cut", () => {
  // a is very sensitive, c insensitive, b in between.
  const table: SensitivityTable = {
    a: { "0.4": 500, "0.6": 100, "0.8": 20 },
    b: { "0.4": 60, "0.6": 15, "0.8": 11 },
    c: { "0.4": 12, "0.6": 10.5, "0.8": 10.1 },
  };
  const r = allocateBySensitivity(table, shapes, 0.7);
  assert.ok(r.achievedKept <= 0.7);
  assert.equal(r.kept.c, 0.4);
  assert.ok(r.kept.a === null || r.kept.a >= (r.kept.b ?? 1));
  // One step less aggressive would miss the target: moving the cut right by one raises the kept fraction.
  assert.ok(r.cut < r.triples);
  // Ranks follow k = floor(m·n·p/(m+n)).
  assert.equal(r.ranks.c, Math.floor((200 * 100 * 0.4) / 300));
  // Unreachable targets and missing layers are errors.
  assert.throws(() => allocateBySensitivity(table, shapes, 0.3), /smallest swept ratio/);
  assert.throws(() => allocateBySensitivity({ a: table.a }, shapes, 0.7), /no sweep results for layer b/);
  assert.throws(() => allocateBySensitivity(table, shapes, 1), OptionError);
});

test("allocation property: achieved kept fraction ≤ target, and it grows with the target", () => {
  fc.assert(
    fc.property(
      fc.array(fc.double({ min: 1, max: 1000, noNaN: true }), { minLength: 9, maxLength: 9 }),
      fc.double({ min: 0.45, max: 0.95, noNaN: true }),
      fc.double({ min: 0.45, max: 0.95, noNaN: true }),
      (ppl, t1, t2) => {
        const table: SensitivityTable = {};
        shapes.forEach((s, i) => {
          table[s.name] = { "0.4": ppl[3 * i], "0.6": ppl[3 * i + 1], "0.8": ppl[3 * i + 2] };
        });
        const [lo, hi] = t1 < t2 ? [t1, t2] : [t2, t1];
        const a = allocateBySensitivity(table, shapes, lo), b = allocateBySensitivity(table, shapes, hi);
        assert.ok(a.achievedKept <= lo + 1e-12 && b.achievedKept <= hi + 1e-12);
        assert.ok(a.achievedKept <= b.achievedKept + 1e-12);
      },
    ),
    { numRuns: 100 },
  );
});

test("KV-cache accounting: latent ranks versus full K and V per token", () => {
  const spec = { numLayers: 2, numKvHeads: 4, headDim: 32 };
  assert.equal(kvRank(128, 0.5), 64);
  assert.throws(() => kvRank(128, 0), OptionError);
  const ranks = {
    "model.layers.0.self_attn.k_proj": 64,
    "model.layers.0.self_attn.v_proj": 64,
    "model.layers.1.self_attn.k_proj": 32,
  };
  const r = kvCacheSavings(spec, ranks, 2);
  assert.equal(r.fullBytesPerToken, 2 * 2 * 128 * 2);
  assert.equal(r.latentBytesPerToken, (64 + 64 + 32 + 128) * 2);
  assert.ok(Math.abs(r.saved - (1 - 288 / 512)) < 1e-12);
});

// allocateRanks: loss curves at every rank, one budget.
import { allocateRanks, type LossCurve, maxSavingRank } from "../../src/methods/allocation.ts";
import { lowRankParams } from "../../src/methods/ratio.ts";

/** A curve whose loss at rank k is the tail Σ_{j ≥ k} c_j of decreasing components c_j = scale·decay^j. */
function tailCurve(name: string, rows: number, cols: number, scale: number, decay: number): LossCurve {
  const r = Math.min(rows, cols), c = Array.from({ length: r }, (_, j) => scale * decay ** j);
  const loss = c.map((_, k) => c.slice(k + 1).reduce((a, b) => a + b, 0));
  return { name, rows, cols, loss };
}

function keptOf(curves: LossCurve[], ranks: Record<string, number | null>): number {
  let before = 0, after = 0;
  for (const c of curves) {
    const k = ranks[c.name];
    before += c.rows * c.cols;
    after += k === null ? c.rows * c.cols : lowRankParams(c.rows, c.cols, k);
  }
  return after / before;
}

test("allocateRanks lands on the target within one rank step, by either rule", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          rows: fc.integer({ min: 4, max: 60 }),
          cols: fc.integer({ min: 4, max: 60 }),
          scale: fc.double({ min: 1e-3, max: 1e3, noNaN: true }),
          decay: fc.double({ min: 0.3, max: 0.99, noNaN: true }),
        }),
        { minLength: 1, maxLength: 6 },
      ),
      fc.double({ min: 0.3, max: 0.95, noNaN: true }),
      fc.constantFrom("threshold" as const, "marginal" as const),
      (specs, target, rule) => {
        const curves = specs.map((s, i) => tailCurve(`l${i}`, s.rows, s.cols, s.scale, s.decay));
        let total = 0, floor = 0;
        for (const c of curves) (total += c.rows * c.cols), (floor += c.rows + c.cols);
        fc.pre(floor <= target * total);
        const r = allocateRanks(curves, target, { rule });
        assert.ok(Math.abs(r.achievedKept - keptOf(curves, r.ranks)) < 1e-12);
        assert.ok(r.achievedKept <= target + 1e-12, `${r.achievedKept} > ${target}`);
        // Within a rank step: no compressed linear below its largest saving rank could take one more rank.
        const left = (target - r.achievedKept) * total;
        for (const c of curves) {
          const k = r.ranks[c.name];
          assert.ok(k === null || (k >= 1 && k <= maxSavingRank(c.rows, c.cols)));
          if (k !== null && k < maxSavingRank(c.rows, c.cols)) assert.ok(left < c.rows + c.cols);
        }
      },
    ),
    { numRuns: 200 },
  );
});

test("allocateRanks, marginal rule: no rank moved between two linears lowers the total loss", () => {
  fc.assert(
    fc.property(
      fc.array(fc.double({ min: 0.2, max: 0.95, noNaN: true }), { minLength: 2, maxLength: 5 }),
      fc.array(fc.double({ min: 0.1, max: 100, noNaN: true }), { minLength: 5, maxLength: 5 }),
      fc.double({ min: 0.15, max: 0.9, noNaN: true }),
      (decays, scales, target) => {
        // Equal shapes and convex tails: exchange-optimal means optimal for the parameters used.
        const curves = decays.map((d, i) => tailCurve(`l${i}`, 24, 24, scales[i], d));
        const r = allocateRanks(curves, target, { rule: "marginal" });
        const kmax = maxSavingRank(24, 24);
        const at = (c: LossCurve, k: number) => c.loss[k - 1] as number;
        for (const a of curves) {
          for (const b of curves) {
            const ka = r.ranks[a.name], kb = r.ranks[b.name];
            if (a === b || ka === null || kb === null || ka <= 1 || kb >= kmax) continue;
            const change = at(a, ka - 1) - at(a, ka) + at(b, kb + 1) - at(b, kb);
            assert.ok(change >= -1e-9 * (1 + r.loss), `moving a rank from ${a.name} to ${b.name}: ${change}`);
          }
        }
      },
    ),
    { numRuns: 200 },
  );
});

test("allocateRanks: a layer ten times as sensitive keeps more rank; bad targets and curves are refused", () => {
  const a = tailCurve("a", 64, 64, 10, 0.9), b = tailCurve("b", 64, 64, 1, 0.9);
  for (const rule of ["threshold", "marginal"] as const) {
    const r = allocateRanks([a, b], 0.5, { rule });
    assert.ok(r.ranks.a! > r.ranks.b!, JSON.stringify(r.ranks));
    assert.equal(r.achievedKept, 0.5); // 64·64 per layer, steps of 128: exactly on target
  }
  assert.throws(() => allocateRanks([a, b], 1), /target kept fraction must be in \(0, 1\)/);
  assert.throws(() => allocateRanks([a, b], 0.01), /smallest allowed rank/);
  assert.throws(() => allocateRanks([{ ...a, loss: [NaN] }], 0.5), /loss NaN at rank 1/);
  assert.throws(() => allocateRanks([a], 0.5, { rule: "x" as "marginal" }), /rule must be/);
});
