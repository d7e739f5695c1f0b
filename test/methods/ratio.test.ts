import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import {
  breakEvenRank,
  checkRank,
  keptFraction,
  layerParams,
  rankFor,
  summarizeParams,
} from "../../src/methods/ratio.ts";
import { OptionError } from "../../src/errors.ts";

test("rank arithmetic matches methods.md: k = floor(m·n·(1−r)/(m+n)), and the SVD-LLM reference's values", () => {
  // LLaMA-7B attention (4096×4096) and MLP (11008×4096) at r = 0.2 and 0.4.
  assert.equal(rankFor(4096, 4096, { removed: 0.2 }), 1638);
  assert.equal(rankFor(11008, 4096, { removed: 0.2 }), 2388);
  assert.equal(rankFor(4096, 4096, { removed: 0.4 }), 1228);
  assert.equal(rankFor(11008, 4096, { removed: 0.4 }), 1791);
  // tinylm-brown (q 256×256, k 128×256, gate 688×256) and stories260K (q 64×64, gate 172×64, k 32×64).
  assert.equal(rankFor(256, 256, { removed: 0.2 }), 102);
  assert.equal(rankFor(128, 256, { removed: 0.2 }), 68);
  assert.equal(rankFor(688, 256, { removed: 0.2 }), 149);
  assert.equal(rankFor(64, 64, { removed: 0.2 }), 25);
  assert.equal(rankFor(172, 64, { removed: 0.2 }), 37);
  assert.equal(rankFor(32, 64, { removed: 0.2 }), 17);
  // The two conventions agree when kept = 1 − removed.
  assert.equal(rankFor(688, 256, { kept: 0.8 }), 149);
  assert.equal(rankFor(4096, 4096, { kept: 0.6 }), 1228);
});

test("ratio property: rank stores at most the kept fraction and the next rank would exceed it", () => {
  fc.assert(fc.property(
    fc.integer({ min: 2, max: 5000 }),
    fc.integer({ min: 2, max: 5000 }),
    fc.double({ min: 0.05, max: 0.95, noNaN: true }),
    (m, n, p) => {
      let k: number;
      try {
        k = rankFor(m, n, { kept: p });
      } catch (e) {
        assert.ok(e instanceof OptionError);
        return; // rank 0: nothing would be left
      }
      assert.ok(k * (m + n) <= m * n * p + 1e-6);
      assert.ok((k + 1) * (m + n) > m * n * p - 1e-6);
      assert.ok(k < breakEvenRank(m, n));
    },
  ));
});

test("ratios outside (0, 1), ambiguous objects and useless ranks are refused", () => {
  for (const bad of [0, 1, -0.1, 1.5, NaN, Infinity]) {
    assert.throws(() => keptFraction({ removed: bad }), OptionError);
    assert.throws(() => keptFraction({ kept: bad }), OptionError);
  }
  assert.throws(() => keptFraction({ removed: 0.2, kept: 0.8 } as never), /exactly one/);
  assert.throws(() => keptFraction({} as never), /exactly one/);
  assert.equal(keptFraction({ kept: 0.3 }), 0.3);
  // rank 0 at a tiny kept fraction
  assert.throws(() => rankFor(4, 4, { kept: 0.1 }), /nothing would be left/);
  // A rank at or above break-even saves nothing: refused unless forced, forced ranks capped at min(m, n).
  assert.throws(() => checkRank(10, 10, 5, { layer: "q" }), /no saving.*force/s);
  assert.equal(checkRank(10, 10, 4), 4);
  assert.equal(checkRank(10, 10, 12, { force: true }), 10);
});

test("achieved ratio over linears and over the whole model", () => {
  const layers = [layerParams("a", 100, 100, 40), layerParams("b", 50, 100, null)];
  const s = summarizeParams(layers, 2000);
  assert.equal(s.layers[0].after, 8000);
  assert.equal(s.linears.before, 15000);
  assert.equal(s.linears.after, 13000);
  assert.ok(Math.abs(s.linears.removed - 2000 / 15000) < 1e-12);
  assert.equal(s.model.before, 17000);
  assert.ok(Math.abs(s.model.removed - 2000 / 17000) < 1e-12);
});
