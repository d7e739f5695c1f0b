// SVD-LLM's memory-lean form: B = Σ_k^{−½} U_kᵀ W (no L after W·L, no triangular solve) is the paper's
// B = Σ_k^½ V_kᵀ L⁻¹, W·L is formed in row blocks (shapes larger than one block are tested), and `release`
// lets the caller hand over the Gram matrix and its factor.
import { test } from "node:test";
import assert from "node:assert/strict";
import { compressSvdLlm } from "../../src/methods/svdllm.ts";
import { cholesky } from "../../src/linalg/cholesky.ts";
import { dataLoss, gramOf, randomActivations, randomWeight } from "./_synthetic.ts";

/** B·L (k×n) in float64. */
function timesL(b: { rows: number; cols: number; data: Float32Array }, l: Float64Array): Float64Array {
  const k = b.rows, n = b.cols, out = new Float64Array(k * n);
  for (let i = 0; i < k; i++) {
    for (let p = 0; p < n; p++) {
      const v = b.data[i * n + p];
      if (v === 0) continue;
      for (let j = 0; j <= p; j++) out[i * n + j] += v * l[p * n + j];
    }
  }
  return out;
}

test("SVD-LLM: B·L = Σ_k^½ V_kᵀ (rows orthogonal, squared norms σ_j), tall and wide, across row blocks", () => {
  for (const [m, n, k] of [[300, 40, 12], [40, 300, 12], [64, 64, 20]]) {
    const w = randomWeight(m, n, m * 7 + n);
    const x = randomActivations(400, n, n);
    const g = gramOf(x);
    const chol = cholesky(g);
    const { b, report } = compressSvdLlm(w, { gram: g }, k);
    const bl = timesL(b, chol.factor.data);
    const s = report.singularValues;
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) {
        let dot = 0;
        for (let c = 0; c < n; c++) dot += bl[i * n + c] * bl[j * n + c];
        const want = i === j ? s[i] : 0;
        assert.ok(
          Math.abs(dot - want) <= 1e-4 * s[0],
          `${m}×${n}: (BL)(BL)ᵀ[${i}][${j}] = ${dot}, want ${want}`,
        );
      }
    }
    const predicted = Math.sqrt(x.rows) * report.predictedLoss!;
    const direct = dataLoss(w, compressSvdLlm(w, { gram: g }, k).a, b, x);
    assert.ok(Math.abs(direct - predicted) / predicted < 1e-4, `${m}×${n}: ${direct} vs ${predicted}`);
  }
});

test("SVD-LLM: with release the statistics are handed over (deleted from stats), results unchanged", () => {
  const w = randomWeight(30, 50, 5);
  const g = gramOf(randomActivations(200, 50, 6));
  const ref = compressSvdLlm(w, { gram: g }, 9);
  const stats = { cholesky: cholesky(g), release: true };
  const got = compressSvdLlm(w, stats, 9);
  assert.equal("cholesky" in stats, false, "the factor was released");
  assert.deepEqual(got.a.data, ref.a.data);
  assert.deepEqual(got.b.data, ref.b.data);
  const stats2 = { gram: g, release: true };
  compressSvdLlm(w, stats2, 9);
  assert.equal("gram" in stats2, false, "the Gram matrix was released");
});

test("SVD-LLM: a rank above W's own rank gives finite factors and the exact product (σ = 0 directions)", () => {
  const m = 20, n = 16, w = randomWeight(m, n, 9);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) if (i >= 6) w.data[i * n + j] = w.data[(i % 6) * n + j];
  }
  const x = randomActivations(100, n, 10);
  const { a, b, report } = compressSvdLlm(w, { gram: gramOf(x) }, 10); // rank(W) = 6 < 10
  for (const v of [...a.data, ...b.data]) assert.ok(Number.isFinite(v));
  assert.ok(report.singularValues[9] < 1e-6 * report.singularValues[0]);
  const loss = dataLoss(w, a, b, x);
  assert.ok(
    loss <
      1e-4 *
        dataLoss(w, { rows: m, cols: 1, data: new Float32Array(m) }, {
          rows: 1,
          cols: n,
          data: new Float32Array(n),
        }, x),
  );
});
