import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { compressSvd } from "../../src/methods/svd.ts";
import { compressAsvd } from "../../src/methods/asvd.ts";
import { compressSvdLlm, crossFromLayer, layerLoss, updateA } from "../../src/methods/svdllm.ts";
import { NumericError, ShapeError } from "../../src/errors.ts";
import {
  absMeanOf,
  dataLoss,
  gramOf,
  product,
  randomActivations,
  randomWeight,
  relDiff,
} from "./_synthetic.ts";

test("plain SVD and ASVD factors reproduce W at full rank (tall, wide and square)", () => {
  for (const [m, n] of [[24, 16], [16, 24], [20, 20]]) {
    const w = randomWeight(m, n, m * 100 + n);
    const x = randomActivations(64, n, 7);
    const k = Math.min(m, n);
    const s = compressSvd(w, k);
    assert.equal(s.a.rows, m);
    assert.equal(s.a.cols, k);
    assert.equal(s.b.rows, k);
    assert.equal(s.b.cols, n);
    assert.ok(relDiff(product(s.a, s.b), w) < 1e-5, `svd ${m}×${n}`);
    const a = compressAsvd(w, { absMean: absMeanOf(x) }, k);
    assert.ok(relDiff(product(a.a, a.b), w) < 1e-5, `asvd ${m}×${n}`);
    const l = compressSvdLlm(w, { gram: gramOf(x) }, k);
    assert.ok(relDiff(product(l.a, l.b), w) < 1e-4, `svdllm ${m}×${n}`);
  }
});

test("ASVD with equal activation scales on every channel is plain SVD (why it ties SVD on tinylm-brown)", () => {
  // tinylm-brown's q/k/v and gate/up inputs have near-constant mean |x| per channel (coefficient of variation
  // of s^0.5 ≈ 0.03–0.05, tools/asvd_scale_spread.ts): W·S ≈ c·W, the same truncation as plain SVD.
  fc.assert(
    fc.property(
      fc.integer({ min: 3, max: 20 }),
      fc.integer({ min: 3, max: 20 }),
      fc.nat(1000),
      fc.double({ min: 1e-3, max: 1e3, noNaN: true }),
      (m, n, seed, level) => {
        const w = randomWeight(m, n, seed);
        const k = Math.max(1, Math.floor(Math.min(m, n) / 2));
        const svd = compressSvd(w, k);
        const plain = product(svd.a, svd.b);
        const asvd = compressAsvd(w, { absMean: new Float64Array(n).fill(level) }, k);
        assert.ok(relDiff(product(asvd.a, asvd.b), plain) < 1e-4, `${m}×${n} rank ${k}, |x| ${level}`);
      },
    ),
    { numRuns: 25 },
  );
});

test("plain SVD truncation is optimal in Frobenius norm: ‖W − AB‖_F = sqrt(Σ_{i>k} σ²)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 3, max: 20 }),
      fc.integer({ min: 3, max: 20 }),
      fc.nat(1000),
      (m, n, seed) => {
        const w = randomWeight(m, n, seed);
        const k = Math.max(1, Math.floor(Math.min(m, n) / 2));
        const { a, b, report } = compressSvd(w, k);
        const ab = product(a, b);
        let err = 0;
        for (let i = 0; i < w.data.length; i++) err += (w.data[i] - ab.data[i]) ** 2;
        let tail = 0;
        for (let i = k; i < report.singularValues.length; i++) tail += report.singularValues[i] ** 2;
        assert.ok(Math.abs(Math.sqrt(err) - Math.sqrt(tail)) <= 1e-4 * Math.sqrt(tail) + 1e-6);
      },
    ),
    { numRuns: 25 },
  );
});

test("SVD-LLM theorem on synthetic layers: ‖(W − AB)Xᵀ‖_F = √T·sqrt(Σ_{i>k} σ_i²(W·L)) to 1e-4", () => {
  for (const [m, n, t, k] of [[48, 32, 300, 10], [32, 48, 500, 20], [40, 40, 200, 1]]) {
    const w = randomWeight(m, n, m + n + t);
    const x = randomActivations(t, n, t);
    const { a, b, report } = compressSvdLlm(w, { gram: gramOf(x) }, k);
    assert.equal(report.shift, 0);
    const direct = dataLoss(w, a, b, x);
    const predicted = Math.sqrt(t) * report.predictedLoss!;
    assert.ok(Math.abs(direct - predicted) / predicted < 1e-4, `${m}×${n}: ${direct} vs ${predicted}`);
    // and it is optimal for the data: no worse than plain SVD or ASVD at the same rank
    const s = compressSvd(w, k), as = compressAsvd(w, { absMean: absMeanOf(x) }, k);
    assert.ok(direct <= dataLoss(w, s.a, s.b, x) * (1 + 1e-6));
    assert.ok(direct <= dataLoss(w, as.a, as.b, x) * (1 + 1e-6));
    // layerLoss (from the mean Gram) agrees with the direct computation
    assert.ok(Math.abs(layerLoss(w, a, b, gramOf(x)) * Math.sqrt(t) - direct) / direct < 1e-4);
  }
});

test("SVD-LLM on a non-PD Gram (dead channels, fewer tokens than channels) compresses with a reported shift", () => {
  const w = randomWeight(24, 40, 3);
  for (const x of [randomActivations(200, 40, 5, [3, 17]), randomActivations(12, 40, 6)]) {
    const { a, b, report } = compressSvdLlm(w, { gram: gramOf(x) }, 8);
    assert.ok(report.shift! > 0, "a shift was needed and reported");
    assert.ok(report.tries! > 1);
    for (const v of [...a.data, ...b.data]) assert.ok(Number.isFinite(v));
    // still far better on the data than plain SVD
    const s = compressSvd(w, 8);
    assert.ok(dataLoss(w, a, b, x) < dataLoss(w, s.a, s.b, x));
  }
  assert.throws(
    () => compressSvdLlm(w, { gram: gramOf(randomActivations(10, 40, 1)) }, 8, { damping: "none" }),
    NumericError,
  );
});

test("SVD-LLM update: a no-op on the whitening's own inputs, an improvement on shifted inputs", () => {
  const m = 40, n = 32, k = 10;
  const w = randomWeight(m, n, 11);
  const x = randomActivations(400, n, 12);
  const g = gramOf(x);
  const { a, b } = compressSvdLlm(w, { gram: g }, k);
  const same = updateA(b, { gram: g, cross: crossFromLayer(w, g) });
  assert.ok(relDiff(same.a, a) < 1e-4, `update on the same inputs moved A by ${relDiff(same.a, a)}`);
  // X' = X perturbed (as the compressed prefix perturbs activations), scaled channels differ
  const xp = randomActivations(400, n, 99);
  for (let i = 0; i < xp.data.length; i++) {
    xp.data[i] = x.data[i] + 0.7 * xp.data[i] * ((i % n) % 3 === 0 ? 3 : 0.1);
  }
  const p = gramOf(xp);
  const upd = updateA(b, { gram: p, cross: crossFromLayer(w, p) });
  const before = dataLoss(w, a, b, xp), after = dataLoss(w, upd.a, b, xp);
  assert.ok(after < before * 0.99, `loss on X' before ${before}, after ${after}`);
});

test("bad input: NaN weights, mismatched shapes, bad ranks, NaN statistics", () => {
  const w = randomWeight(8, 6, 1);
  const x = randomActivations(50, 6, 2);
  const bad = { ...w, data: w.data.slice() };
  bad.data[7] = NaN;
  assert.throws(() => compressSvd(bad, 2), /non-finite.*\(1, 1\)/);
  assert.throws(() => compressAsvd(bad, { absMean: absMeanOf(x) }, 2), NumericError);
  assert.throws(() => compressSvdLlm(bad, { gram: gramOf(x) }, 2), NumericError);
  assert.throws(() => compressSvd(w, 0), ShapeError);
  assert.throws(() => compressSvd(w, 7), ShapeError);
  assert.throws(() => compressAsvd(w, { absMean: new Float64Array(5) }, 2), ShapeError);
  assert.throws(() => compressSvdLlm(w, { gram: gramOf(randomActivations(50, 5, 2)) }, 2), ShapeError);
  const nanStat = absMeanOf(x);
  nanStat[2] = NaN;
  assert.throws(() => compressAsvd(w, { absMean: nanStat }, 2), NumericError);
});
