/** Perplexity windowing and KL on a tiny random model: the protocol's arithmetic, non-finite counting, KL ≥ 0. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { memoryReader, randomWeights, TINY } from "../model/_random_model.ts";
import { perplexity, windowNll } from "../../src/eval/perplexity.ts";
import { klDivergence } from "../../src/eval/kl.ts";
import { OptionError } from "../../src/errors.ts";
import { linearPrefix } from "../../src/model/names.ts";

const weights = randomWeights(TINY, 3);
const model = { spec: TINY, reader: memoryReader(weights) };

test("perplexity: consecutive windows, last partial window of ≥ 2 tokens, mean over predicted positions", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.nat({ max: TINY.vocabSize - 1 }), { minLength: 2, maxLength: 40 }),
      fc.integer({ min: 2, max: 16 }),
      async (arr, window) => {
        const ids = Int32Array.from(arr);
        const r = await perplexity(model, ids, { window, batchTokens: 24 });
        // by hand: each window alone, positions 0..n-2 predict the next token
        let sum = 0, count = 0, windows = 0, tokens = 0;
        for (let s = 0; s < ids.length; s += window) {
          const w = ids.subarray(s, s + window);
          if (w.length < 2) continue;
          const t = new Int32Array(w.length).fill(-1);
          t.set(w.subarray(1));
          const [nll] = await windowNll(model, [w], [t]);
          assert.ok(Number.isNaN(nll[w.length - 1]));
          for (let i = 0; i < w.length - 1; i++) sum += nll[i];
          count += w.length - 1;
          windows++;
          tokens += w.length;
        }
        assert.equal(r.windows, windows);
        assert.equal(r.predicted, count);
        assert.equal(r.tokens, tokens);
        assert.ok(Math.abs(r.meanNll - sum / count) < 1e-6);
        assert.ok(Math.abs(r.ppl - Math.exp(sum / count)) < 1e-6 * r.ppl);
      },
    ),
    { numRuns: 20 },
  );
});

test("perplexity: dropPartial evaluates the full windows only, as the reference repositories do", async () => {
  const ids = Int32Array.from({ length: 29 }, (_, i) => (i * 7 + 2) % TINY.vocabSize);
  const all = await perplexity(model, ids, { window: 8 });
  const full = await perplexity(model, ids, { window: 8, dropPartial: true });
  const cut = await perplexity(model, ids.subarray(0, 24), { window: 8 });
  assert.equal(all.windows, 4);
  assert.equal(full.windows, 3);
  assert.equal(full.tokens, 24);
  assert.equal(full.meanNll, cut.meanNll);
  await assert.rejects(
    perplexity(model, ids.subarray(0, 5), { window: 8, dropPartial: true }),
    /at least 8 tokens/,
  );
});

test("perplexity: options out of range are OptionErrors", async () => {
  const ids = Int32Array.of(1, 2, 3);
  await assert.rejects(perplexity(model, ids, { window: 1 }), OptionError);
  await assert.rejects(
    perplexity(model, ids, { window: TINY.maxPositions + 1 }),
    /exceeds the model's context/,
  );
  await assert.rejects(perplexity(model, Int32Array.of(1), { window: 4 }), /at least 2 tokens/);
});

test("perplexity: a model producing NaN is reported, not skipped", async () => {
  const broken = new Map(weights);
  const key = `${linearPrefix(1, "mlp.down_proj")}.weight`;
  const t = broken.get(key)!;
  const data = Float32Array.from(t.data);
  data[5] = NaN;
  broken.set(key, { shape: t.shape, data });
  const ids = Int32Array.from({ length: 30 }, (_, i) => (i * 5) % TINY.vocabSize);
  const r = await perplexity({ spec: TINY, reader: memoryReader(broken) }, ids, { window: 8 });
  assert.equal(r.windows, 4);
  assert.equal(r.nonFinite, r.predicted);
  assert.ok(Number.isNaN(r.ppl));
});

test("kl: zero against itself, positive against a perturbed copy", async () => {
  const ids = Int32Array.from({ length: 25 }, (_, i) => (i * 11 + 1) % TINY.vocabSize);
  const same = await klDivergence(model, { spec: TINY, reader: memoryReader(weights) }, ids, { window: 10 });
  assert.equal(same.positions, 25);
  assert.ok(Math.abs(same.meanKl) < 1e-9);
  const noisy = new Map(weights);
  for (const [k, v] of weights) {
    if (k.endsWith("q_proj.weight")) {
      noisy.set(k, {
        shape: v.shape,
        data: v.data.map((x, i) => x + 0.3 * Math.sin(i)),
      });
    }
  }
  const events: number[] = [];
  const d = await klDivergence(model, { spec: TINY, reader: memoryReader(noisy) }, ids, {
    window: 10,
    onProgress: (e) => events.push(e.done),
  });
  assert.ok(d.meanKl > 1e-4 && d.maxKl >= d.meanKl && d.nonFinite === 0);
  assert.equal(events[events.length - 1], 2 * 2 * TINY.numLayers); // 2 batches (10+10, then 5) × 2 models
});

test("perplexity: a plain array of ids scores as its Int32Array; a non-integer id is refused by position", async () => {
  const ids = [1, 5, 7, 2, 9, 11, 3];
  const a = await perplexity(model, ids, { window: 4 });
  const b = await perplexity(model, Int32Array.from(ids), { window: 4 });
  assert.equal(a.meanNll, b.meanNll);
  assert.equal(a.tokens, 7);
  await assert.rejects(
    perplexity(model, [1, 2, 2.5, 3], { window: 4 }),
    (e: Error) => e instanceof OptionError && /token id 2\.5 at position 2 is not an integer/.test(e.message),
  );
});
