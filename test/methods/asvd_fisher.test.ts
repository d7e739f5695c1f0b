/**
 * ASVD's loss-aware (Fisher) per-component losses: the factored estimate against the brute-force sum
 * ½·N·Σ_t (dy_tᵀ ΔW_j x_t)² where the factoring is exact, the gradient it is built from against finite
 * differences of the loss along a component's removal on a tiny float64 model, and the pipeline's estimate
 * against the full sensitivity sweep on stories260K (rank agreement, lands on target).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { createRng } from "../../src/linalg/random.ts";
import type { Matrix, Matrix64 } from "../../src/linalg/matrix.ts";
import { asvdSpectrum } from "../../src/methods/asvd.ts";
import { asvdFisherLosses, OutputFisherObserver } from "../../src/methods/asvd_fisher.ts";
import { lossAndGrad } from "../../src/model/backward.ts";
import { BLOCK_FIELD } from "../../src/model/llama.ts";
import { loadModel } from "../../src/model/load.ts";
import { calibrationWindows } from "../../src/calib/windows.ts";
import { allocateRanks } from "../../src/methods/allocation.ts";
import { sensitivitySweep } from "../../src/pipeline/sensitivity.ts";
import { fisherLosses, lossCurves } from "../../src/pipeline/truncation_losses.ts";
import { keptRank, lowRankParams } from "../../src/methods/ratio.ts";
import { fdDirectional, randomModel64, randomWindows, specOf } from "../model/grad_helpers.ts";
import { ShapeError } from "../../src/errors.ts";
import { storiesText } from "../pipeline/_helpers.ts";
import { findGarbageCollector } from "../../src/pipeline/memory.ts";

const STORIES = new URL("../../models/stories260K/stories260K.gguf", import.meta.url).pathname;

/** ΔW_j = σ_j u_j ṽ_jᵀ (ṽ_j = S⁻¹ v_j) of a spectrum, as a dense out×in matrix. */
function componentOf(sp: ReturnType<typeof asvdSpectrum>, j: number): Float64Array {
  const m = sp.u.rows, n = sp.vt.cols, r = sp.u.cols, d = new Float64Array(m * n);
  for (let o = 0; o < m; o++) {
    for (let a = 0; a < n; a++) {
      d[o * n + a] = sp.s[j] * sp.u.data[o * r + j] * sp.vt.data[j * n + a] / sp.scale[a];
    }
  }
  return d;
}

test("asvdFisherLosses equals ½·N·Σ_t (dy_tᵀ ΔW_j x_t)² when dy is independent of x and its Gram diagonal", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 1, max: 1000 }),
      fc.integer({ min: 1, max: 1 << 30 }),
      (m, n, p, N, seed) => {
        const rng = createRng(seed);
        const w: Matrix = {
          rows: m,
          cols: n,
          data: Float32Array.from({ length: m * n }, () => rng.normal()),
        };
        const absMean = Float64Array.from({ length: n }, () => 0.1 + Math.abs(rng.normal()));
        const sp = asvdSpectrum(w, { absMean });
        // Tokens: every pair (x_s, a_o·e_o) — x and dy independent, dy's Gram diagonal: the factoring is exact.
        const xs = Array.from({ length: p }, () => Float64Array.from({ length: n }, () => rng.normal()));
        const a = Float64Array.from({ length: m }, () => rng.normal());
        const g: Matrix64 = { rows: n, cols: n, data: new Float64Array(n * n) };
        const obs = new OutputFisherObserver("t", m);
        const dy: Matrix = { rows: p * m, cols: m, data: new Float32Array(p * m * m) };
        for (let s = 0; s < p; s++) {
          for (let o = 0; o < m; o++) dy.data[(s * m + o) * m + o] = a[o];
          for (let i = 0; i < n; i++) {
            for (let k = 0; k < n; k++) g.data[i * n + k] += xs[s][i] * xs[s][k] / p;
          }
        }
        obs.addBatch(dy, N);
        const est = asvdFisherLosses(sp, g, obs.diagonal());
        for (let j = 0; j < sp.s.length; j++) {
          const dw = componentOf(sp, j);
          let brute = 0;
          for (let s = 0; s < p; s++) {
            for (let o = 0; o < m; o++) {
              let t = 0;
              for (let i = 0; i < n; i++) t += Math.fround(a[o]) * dw[o * n + i] * xs[s][i];
              brute += t * t;
            }
          }
          brute *= 0.5 * N;
          assert.ok(Math.abs(est[j] - brute) <= 1e-5 * (1 + brute), `j ${j}: ${est[j]} vs ${brute}`);
        }
      },
    ),
    { numRuns: 50 },
  );
});

test("the gradient pass's (x, dy) give the loss's derivative along each component's removal (finite difference)", async () => {
  const spec = specOf({
    kvHeads: 1,
    group: 2,
    halfHead: 2,
    hidden: 8,
    inter: 12,
    vocab: 11,
    layers: 2,
    style: "halves",
    bias: false,
  });
  const model = randomModel64(spec, 7), { blocks } = model;
  const windows = randomWindows(2, 6, spec.vocabSize, 3);
  for (const [layer, lin] of [[0, "mlp.down_proj"], [1, "self_attn.q_proj"]] as const) {
    const weight = (blocks[layer][BLOCK_FIELD[lin]] as { weight: Matrix64 }).weight;
    const sp = asvdSpectrum(weight, {
      absMean: Float64Array.from({ length: weight.cols }, (_, i) => 1 + i / 4),
    });
    let x: Matrix64 | undefined, dy: Matrix64 | undefined;
    await lossAndGrad(model, windows, {
      onLinearGrad: (l, name, xi, dyi) => {
        if (l === layer && name === lin) (x = xi), (dy = dyi);
      },
    });
    for (let j = 0; j < sp.s.length; j++) {
      const dw = componentOf(sp, j), n = weight.cols, m = weight.rows;
      // Hook: d/dε L(W − ε ΔW_j) at 0 = −Σ_t dy_tᵀ ΔW_j x_t.
      let hook = 0;
      for (let t = 0; t < x!.rows; t++) {
        for (let o = 0; o < m; o++) {
          let v = 0;
          for (let i = 0; i < n; i++) v += dw[o * n + i] * x!.data[t * n + i];
          hook -= dy!.data[t * m + o] * v;
        }
      }
      const minusDw = dw.map((v) => -v); // the direction of ε in L(W − ε ΔW_j)
      const fd = await fdDirectional(
        async () => (await lossAndGrad(model, windows)).loss,
        weight.data,
        minusDw,
      );
      assert.ok(Math.abs(fd - hook) <= 1e-6 * (1 + Math.abs(fd)), `${lin} j ${j}: fd ${fd} vs hook ${hook}`);
    }
  }
});

test("OutputFisherObserver refuses a gradient of the wrong width, naming the layer", () => {
  const o = new OutputFisherObserver("model.layers.0.mlp.up_proj", 3);
  assert.throws(
    () => o.addBatch({ rows: 1, cols: 2, data: new Float32Array(2) }, 1),
    (e: unknown) => e instanceof ShapeError && /up_proj: dy has 2 columns, expected 3/.test(e.message),
  );
});

test("on stories260K the Fisher losses rank the linears as the full sensitivity sweep does", {
  timeout: 600_000,
}, async () => {
  const m = await loadModel(STORIES);
  try {
    const ids = m.tokenizer.encode(await storiesText(), { bos: true });
    const windows = calibrationWindows(ids.slice(0, ids.length >> 1), { samples: 8, seqlen: 128, seed: 0 });
    const p = 0.5;
    const losses = await fisherLosses(m, windows, { gradSamples: 8 });
    const sweep = await sensitivitySweep(m, windows, { ratios: [p] });
    // Per linear: the estimated NLL increase at the sweep's rank against the sweep's measured one.
    const est: number[] = [], meas: number[] = [];
    for (const l of losses) {
      const k = Math.max(1, keptRank(l.rows, l.cols, p));
      let tail = 0;
      for (let j = k; j < l.components.length; j++) tail += l.components[j];
      est.push(tail);
      meas.push(Math.log(sweep.table[l.name][String(p)] / sweep.densePpl));
    }
    const rho = spearman(est, meas);
    assert.ok(rho > 0.7, `Spearman ρ ${rho.toFixed(3)} between estimated and swept NLL increases`);
    // The allocation from these losses lands on the target within one rank step.
    const curves = lossCurves(losses);
    const a = allocateRanks(curves, 0.7, { rule: "marginal" });
    let before = 0, after = 0, step = 0;
    for (const c of curves) {
      before += c.rows * c.cols;
      const k = a.ranks[c.name];
      after += k === null ? c.rows * c.cols : lowRankParams(c.rows, c.cols, k);
      step = Math.max(step, c.rows + c.cols);
    }
    assert.ok(after <= 0.7 * before && after > 0.7 * before - step, `kept ${after / before}`);
  } finally {
    await m.close();
  }
});

test(
  "fisherLosses: collecting on every progress event (and its trims) changes no loss; progress climbs to its total",
  {
    timeout: 600_000,
  },
  async () => {
    const m = await loadModel(STORIES);
    try {
      const ids = m.tokenizer.encode(await storiesText(), { bos: true });
      const windows = calibrationWindows(ids, { samples: 4, seqlen: 64, seed: 1 });
      const plain = await fisherLosses(m, windows, { gradSamples: 2 });
      const collect = await findGarbageCollector();
      const events: { done: number; total: number }[] = [];
      const hooked = await fisherLosses(m, windows, {
        gradSamples: 2,
        onProgress: (e) => {
          events.push(e);
          collect?.(); // as compress's memory policy does at each event
        },
      });
      assert.deepEqual(hooked, plain);
      const total = events[0].total;
      assert.ok(events.every((e, i) => e.total === total && (i === 0 || e.done >= events[i - 1].done)));
      assert.equal(events.at(-1)!.done, total);
    } finally {
      await m.close();
    }
  },
);

function spearman(a: number[], b: number[]): number {
  const rank = (v: number[]) => {
    const idx = v.map((x, i) => [x, i] as const).sort((p, q) => p[0] - q[0]);
    const r = new Array<number>(v.length);
    idx.forEach(([, i], k) => (r[i] = k));
    return r;
  };
  const ra = rank(a), rb = rank(b), n = a.length;
  let d2 = 0;
  for (let i = 0; i < n; i++) d2 += (ra[i] - rb[i]) ** 2;
  return 1 - (6 * d2) / (n * (n * n - 1));
}
