import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
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
