// SoCo's spectral parameterisation, budget selection and trainer, on objectives whose gradients are known
// (a single linear's output error, quadratics): the model-level run is in soco_pipeline.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import {
  addScoreGradient,
  layerError,
  rankCap,
  spectralFactors,
  spectralWeight,
  svdBasis,
  whitenedBasis,
} from "../../src/methods/soco.ts";
import { selectComponents } from "../../src/methods/soco_budget.ts";
import {
  type SocoObjective,
  type SocoProgress,
  type SocoState,
  stateFromJson,
  stateToJson,
  trainSpectrum,
} from "../../src/methods/soco_train.ts";
import { NumericError, OptionError } from "../../src/errors.ts";
import { gramOf, product, randomActivations, randomWeight, relDiff } from "./_synthetic.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";

function dataError(w: Matrix, w2: Matrix, x: Matrix): number {
  // ‖(W − W')Xᵀ‖² / T
  const m = w.rows, n = w.cols;
  let e = 0;
  for (let t = 0; t < x.rows; t++) {
    for (let i = 0; i < m; i++) {
      let d = 0;
      for (let j = 0; j < n; j++) d += (w.data[i * n + j] - w2.data[i * n + j]) * x.data[t * n + j];
      e += d * d;
    }
  }
  return e / x.rows;
}

test("s = 1 reproduces W in both bases, and the factors of every component multiply back to W (tall, wide, square)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 14 }),
      fc.integer({ min: 1, max: 14 }),
      fc.nat(1000),
      (m, n, seed) => {
        const w = randomWeight(m, n, seed);
        const x = randomActivations(4 * n + 8, n, seed + 1);
        for (const b of [svdBasis("w", w), whitenedBasis("w", w, { gram: gramOf(x) })]) {
          const ones = new Float64Array(b.rank).fill(1);
          assert.ok(relDiff(spectralWeight(b, ones), w) < 1e-5, `${b.kind} ${m}×${n}`);
          const all = [...Array(b.rank).keys()];
          const f = spectralFactors(b, ones, all);
          assert.ok(relDiff(product(f.a, f.b), w) < 1e-5, `${b.kind} factors ${m}×${n}`);
        }
      },
    ),
    { numRuns: 40 },
  );
});

test("whitened basis: the data error of W'(s) is Σ σ_i² (1 − s_i)², so truncation loses exactly the σ tail (SVD-LLM's loss)", () => {
  for (const [m, n] of [[24, 16], [16, 24], [20, 20]]) {
    const w = randomWeight(m, n, m + n);
    const x = randomActivations(200, n, 3);
    const g = gramOf(x);
    const b = whitenedBasis("w", w, { gram: g });
    assert.equal(b.shift, 0);
    const q = layerError(b, g);
    for (let i = 0; i < b.rank; i++) assert.ok(Math.abs(q[i] - b.sigma[i] ** 2) < 1e-6 * b.sigma[0] ** 2);
    // Keep the top k: the error is the tail Σ_{i≥k} σ_i², measured on the inputs themselves.
    const k = Math.floor(b.rank / 2);
    const s = Float64Array.from({ length: b.rank }, (_, i) => (i < k ? 1 : 0));
    let tail = 0;
    for (let i = k; i < b.rank; i++) tail += b.sigma[i] ** 2;
    const measured = dataError(w, spectralWeight(b, s), x);
    assert.ok(Math.abs(measured - tail) < 1e-3 * tail, `${m}×${n}: ${measured} vs σ tail ${tail}`);
    // Any scores: Σ σ² (1 − s)².
    const s2 = Float64Array.from({ length: b.rank }, (_, i) => Math.cos(i));
    let pred = 0;
    for (let i = 0; i < b.rank; i++) pred += b.sigma[i] ** 2 * (1 - s2[i]) ** 2;
    const got = dataError(w, spectralWeight(b, s2), x);
    assert.ok(Math.abs(got - pred) < 1e-3 * pred, `${got} vs ${pred}`);
    // The plain basis is no better on the data at the same rank (Eckart–Young in the whitened norm).
    const p = svdBasis("w", w);
    assert.ok(dataError(w, spectralWeight(p, s), x) >= tail * (1 - 1e-4));
  }
});

test("the score gradient from (x, dy) equals finite differences of ½‖X·W'(s)ᵀ − Y‖²", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 1, max: 9 }),
      fc.nat(1000),
      (m, n, seed) => {
        const w = randomWeight(m, n, seed);
        const x = randomActivations(7, n, seed + 2);
        const target = randomActivations(7, m, seed + 3);
        const b = seed % 2
          ? svdBasis("w", w)
          : whitenedBasis("w", w, { gram: gramOf(randomActivations(30, n, 9)) });
        const s = Float64Array.from({ length: b.rank }, (_, i) => 0.5 + Math.sin(seed + i));
        // W'(s) = U·diag(s)·C in float64: the differences then measure the gradient, not float32 rounding
        const weight = (sv: Float64Array) => {
          const r = b.rank, d = new Float64Array(m * n);
          for (let i = 0; i < m; i++) {
            for (let j = 0; j < n; j++) {
              for (let k = 0; k < r; k++) d[i * n + j] += b.u.data[i * r + k] * sv[k] * b.c.data[k * n + j];
            }
          }
          return { rows: m, cols: n, data: d };
        };
        const loss = (sv: Float64Array) => {
          const w2 = weight(sv);
          let l = 0;
          for (let t = 0; t < x.rows; t++) {
            for (let i = 0; i < m; i++) {
              let y = 0;
              for (let j = 0; j < n; j++) y += x.data[t * n + j] * w2.data[i * n + j];
              l += 0.5 * (y - target.data[t * m + i]) ** 2;
            }
          }
          return l;
        };
        // dy = X·W'ᵀ − Y
        const w2 = weight(s);
        const dy = new Float64Array(x.rows * m);
        for (let t = 0; t < x.rows; t++) {
          for (let i = 0; i < m; i++) {
            let y = 0;
            for (let j = 0; j < n; j++) y += x.data[t * n + j] * w2.data[i * n + j];
            dy[t * m + i] = y - target.data[t * m + i];
          }
        }
        const g = new Float64Array(b.rank);
        addScoreGradient(b, x, { rows: x.rows, cols: m, data: dy }, g);
        const h = 1e-3;
        for (let i = 0; i < b.rank; i++) {
          const sp = s.slice(), sm = s.slice();
          sp[i] += h;
          sm[i] -= h;
          const fd = (loss(sp) - loss(sm)) / (2 * h);
          // the hook's products run in float32 (as the bases are stored): float32 precision, not float64's
          assert.ok(Math.abs(fd - g[i]) <= 5e-5 * (1 + Math.abs(fd)), `component ${i}: ${g[i]} vs ${fd}`);
        }
      },
    ),
    { numRuns: 30 },
  );
});

test("rankCap is the largest rank that still saves parameters", () => {
  for (const [m, n] of [[64, 64], [32, 64], [172, 64], [1, 5], [4, 4]]) {
    const k = rankCap(m, n);
    assert.ok(k * (m + n) < m * n || k === 0);
    assert.ok((k + 1) * (m + n) >= m * n);
  }
});

test("selection: within the budget, short of it by less than any addable component, keeps the largest scores", () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ cost: fc.integer({ min: 2, max: 9 }), r: fc.integer({ min: 1, max: 8 }) }), {
        minLength: 1,
        maxLength: 6,
      }),
      fc.nat(10000),
      fc.double({ min: 0, max: 1, noNaN: true }),
      (ls, seed, frac) => {
        const linears = ls.map((l) => ({ cost: l.cost, cap: l.r }));
        const scores = ls.map((l, k) =>
          Float64Array.from({ length: l.r }, (_, i) => Math.sin(seed + 7 * k + i))
        );
        const lo = linears.reduce((t, l) => t + l.cost, 0),
          hi = linears.reduce((t, l) => t + l.cost * l.cap, 0);
        const budget = Math.round(lo + frac * (hi - lo));
        const sel = selectComponents(linears, scores, budget);
        let params = 0;
        sel.keep.forEach((k, l) => (params += k.length * linears[l].cost));
        assert.equal(sel.params, params);
        assert.ok(params <= budget);
        // nothing left out would still fit
        sel.keep.forEach((k, l) => {
          if (k.length < linears[l].cap) assert.ok(budget - params < linears[l].cost);
          assert.ok(k.length >= 1);
        });
      },
    ),
  );
  // Equal costs: exactly the budget, and the kept scores are the largest.
  const linears = [{ cost: 5, cap: 6 }, { cost: 5, cap: 6 }, { cost: 5, cap: 6 }];
  const scores = [
    new Float64Array([0.1, 1.5, -0.9, 0.2, 0, 0.3]),
    new Float64Array([0.8, 0.05, 0.7, 1.1, 0.4, 0.01]),
    new Float64Array([0.6, -1.2, 0.02, 0.03, 0.5, 0.04]),
  ];
  const sel = selectComponents(linears, scores, 40);
  assert.equal(sel.params, 40);
  assert.deepEqual(sel.keep, [[1, 2], [0, 2, 3], [0, 1, 4]]);
  const kept = sel.keep.flatMap((k, l) => k.map((i) => Math.abs(scores[l][i])));
  const dropped = scores.flatMap((s, l) => [...s].filter((_, i) => !sel.keep[l].includes(i)).map(Math.abs));
  assert.ok(Math.min(...kept) >= Math.max(...dropped));
});

/** ½ (s − t)ᵀ H (s − t) over all scores concatenated, H = I + c·(neighbour coupling). */
function quadratic(targets: number[][], coupling = 0): SocoObjective {
  return (s, g) => {
    let loss = 0;
    for (let l = 0; l < s.length; l++) {
      const d = Array.from(s[l], (x, i) => x - targets[l][i]);
      for (let i = 0; i < d.length; i++) {
        const hd = d[i] + coupling * ((d[i - 1] ?? 0) + (d[i + 1] ?? 0));
        loss += 0.5 * d[i] * hd;
        g[l][i] += hd;
      }
    }
    return loss;
  };
}

test("the optimiser decreases the objective on a toy quadratic when the budget allows everything", async () => {
  const targets = [[0.3, 1.7, -0.4, 0.9], [1.2, 0.1, 0.6]];
  const obj = quadratic(targets, 0.3);
  const linears = [{ cost: 3, cap: 4 }, { cost: 4, cap: 3 }];
  const first = obj([new Float64Array(4).fill(1), new Float64Array(3).fill(1)], [
    new Float64Array(4),
    new Float64Array(3),
  ], 0) as number;
  const res = await trainSpectrum(obj, { linears, ranks: [4, 3], budget: 24, steps: 300, lr: 0.05 });
  const last = res.history.at(-1)!.loss;
  assert.ok(last < 1e-3 * first, `${first} → ${last}`);
  assert.equal(res.params, 24);
});

test("the trainer lands exactly on the target, keeps the components the loss wants (not the largest σ) and amplifies survivors", async () => {
  // Four linears of 6 components, cost 10: budget 90 = 9 components. The loss wants components 3, 4, 5 of
  // each linear (those "small σ" ones σ-truncation would drop first), the others at 0.
  const targets = [0, 1, 2, 3].map((l) => [0, 0, 0.05 * l, 1, 1.5, 1]);
  const linears = targets.map(() => ({ cost: 10, cap: 6 }));
  const coupled = quadratic(targets, 0.45);
  const events: SocoProgress[] = [];
  const res = await trainSpectrum(coupled, {
    linears,
    ranks: [6, 6, 6, 6],
    budget: 90,
    steps: 150,
    lr: 0.05,
    onProgress: (e) => events.push(e),
  });
  assert.equal(res.params, 90);
  const kept = res.keep.reduce((t, k) => t + k.length, 0);
  assert.equal(kept, 9);
  for (const k of res.keep) for (const i of k) assert.ok(i >= 3, `kept ${i}`);
  // Stages in order, progress with steps/second.
  assert.deepEqual([...new Set(events.map((e) => e.stage))], ["coarse", "refine", "sparsify"]);
  assert.ok(events.every((e) => e.stepsPerSecond > 0 && Number.isFinite(e.loss)));
  // The coarse stage reaches the budget.
  const endCoarse = events.filter((e) => e.stage === "coarse").at(-1)!;
  assert.ok(endCoarse.budget < 1.15, `budget after stage 1: ${endCoarse.budget}`);
  // Compensation: with a coupled loss, a survivor beside a pruned neighbour is pushed above its target.
  const sv = res.scores.flatMap((s) => [...s]).filter((x) => x !== 0);
  assert.ok(Math.max(...sv) > 1.5, `largest survivor ${Math.max(...sv)}`);
});

test("the same options give the same scores; a run resumed from a JSON checkpoint equals the uninterrupted run", async () => {
  const targets = [[0.2, 1.1, 0.7, 0.05, 0.9], [1, 0.3, 0.8]];
  const obj = quadratic(targets, 0.2);
  const base = {
    linears: [{ cost: 4, cap: 5 }, { cost: 6, cap: 3 }],
    ranks: [5, 3],
    budget: 26,
    steps: 60,
    lr: 0.03,
  };
  const checkpoints: string[] = [];
  const a = await trainSpectrum(obj, {
    ...base,
    checkpointEvery: 10,
    onCheckpoint: (st) => void checkpoints.push(stateToJson(st)),
  });
  const b = await trainSpectrum(obj, base);
  assert.deepEqual(a.scores, b.scores);
  assert.deepEqual(a.keep, b.keep);
  assert.equal(checkpoints.length, 6);
  for (const at of [1, 3, 4]) { // 20 (coarse), 40 (refine), 50 (sparsify, masks in the state)
    const st: SocoState = stateFromJson(checkpoints[at], base.ranks);
    assert.equal(st.step, 10 * (at + 1));
    const c = await trainSpectrum(obj, { ...base, resume: st });
    assert.deepEqual(c.scores, a.scores, `resumed at ${st.step}`);
    assert.deepEqual(c.keep, a.keep);
  }
});

test("bad options: learning rate, steps, a budget the spectrum cannot meet, a mismatched checkpoint", async () => {
  const obj = quadratic([[1, 1, 1]]);
  const base = { linears: [{ cost: 4, cap: 2 }], ranks: [3], budget: 8, steps: 10 };
  for (const lr of [0, -1, NaN, 2, Infinity]) {
    await assert.rejects(
      trainSpectrum(obj, { ...base, lr }),
      (e: Error) => e instanceof OptionError && /learning rate/.test(e.message),
    );
  }
  for (const steps of [0, 2, 1.5, 2e6]) {
    await assert.rejects(
      trainSpectrum(obj, { ...base, steps }),
      (e: Error) => e instanceof OptionError && /steps/.test(e.message),
    );
  }
  await assert.rejects(trainSpectrum(obj, { ...base, budget: 3 }), /cannot keep one component/);
  await assert.rejects(trainSpectrum(obj, { ...base, budget: 12 }), /more than the 8/);
  assert.throws(() => stateFromJson("{", [3]), /cannot parse/);
  const done = stateToJson((await trainSpectrum(obj, base)).state);
  assert.throws(() => stateFromJson(done, [4]), /not 4 finite numbers/);
});

test("divergence: a NaN loss restarts the step at half the learning rate (reported); persistent NaN is an error", async () => {
  const good = quadratic([[1.5, 0.2, 1]]);
  let poisoned = 2;
  const flaky: SocoObjective = (s, g, step) => {
    if (step === 5 && poisoned-- > 0) return NaN;
    return good(s, g, step);
  };
  const events: SocoProgress[] = [];
  const base = { linears: [{ cost: 4, cap: 3 }], ranks: [3], budget: 8, steps: 20, lr: 0.04 };
  const res = await trainSpectrum(flaky, { ...base, onProgress: (e) => events.push(e) });
  const rec = events.filter((e) => e.recovery);
  assert.equal(rec.length, 2);
  assert.match(rec[0].recovery!, /step 5.*0\.02/);
  assert.equal(res.state.lr, 0.01);
  assert.equal(res.state.recoveries, 2);
  assert.ok(res.scores.every((s) => s.every(Number.isFinite)));
  await assert.rejects(
    trainSpectrum(() => NaN, base),
    (e: Error) => e instanceof NumericError && /diverged.*4 halvings/.test(e.message),
  );
});
