import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { asvd, svdLayer, svdllm } from "../../src/methods/layer.ts";
import { rankFor } from "../../src/methods/ratio.ts";
import { matmul } from "../../src/linalg/gemm.ts";
import { frobeniusNorm, type Matrix, matrix } from "../../src/linalg/matrix.ts";
import { svd } from "../../src/linalg/svd.ts";
import { OptionError } from "../../src/errors.ts";

function randomMatrix(rows: number, cols: number, seed: number): Matrix {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32 - 0.5;
  };
  return matrix(rows, cols, Float32Array.from({ length: rows * cols }, next));
}

function residual(w: Matrix, a: Matrix, b: Matrix): number {
  const ab = matmul(a, b);
  const d = new Float32Array(w.data.length);
  for (let i = 0; i < d.length; i++) d[i] = w.data[i] - ab.data[i];
  return frobeniusNorm(matrix(w.rows, w.cols, d));
}

test("svdLayer: truncation error is the Eckart–Young tail sqrt(Σ_{i>k} σ_i²), for any shape and rank", () => {
  fc.assert(
    fc.property(fc.integer({ min: 2, max: 24 }), fc.integer({ min: 2, max: 24 }), fc.nat(), (m, n, seed) => {
      const w = randomMatrix(m, n, seed + 1);
      const k = 1 + (seed % Math.min(m, n));
      const { a, b } = svdLayer(w).compress({ rank: k });
      const s = svd(w).s;
      let tail = 0;
      for (let i = k; i < s.length; i++) tail += s[i] * s[i];
      assert.ok(Math.abs(residual(w, a, b) - Math.sqrt(tail)) <= 1e-4 * (1 + frobeniusNorm(w)));
    }),
    { numRuns: 40 },
  );
});

test("layer objects: a ratio gives the rank of methods.md, and full rank reproduces W", () => {
  const w = randomMatrix(12, 20, 7);
  const x = randomMatrix(64, 20, 8);
  for (const make of [svdLayer, asvd, svdllm]) {
    const layer = make(w);
    layer.addBatch(x);
    const byRatio = layer.compress({ ratio: { removed: 0.4 } });
    assert.equal(byRatio.a.cols, rankFor(12, 20, { removed: 0.4 }));
    assert.equal(byRatio.a.cols, Math.floor((12 * 20 * 0.6) / 32));
    const full = layer.compress({ rank: 12 });
    assert.ok(residual(w, full.a, full.b) <= 1e-4 * frobeniusNorm(w), `${make.name} full rank`);
  }
});

test("svdllm layer: loss on the observed inputs equals the predicted tail, batching does not matter", () => {
  const w = randomMatrix(16, 24, 3);
  const x = randomMatrix(200, 24, 4);
  const one = svdllm(w), two = svdllm(w);
  one.addBatch(x);
  two.addBatch(matrix(120, 24, x.data.slice(0, 120 * 24)));
  two.addBatch(matrix(80, 24, x.data.slice(120 * 24)));
  const r1 = one.compress({ rank: 5 }), r2 = two.compress({ rank: 5 });
  // ‖(W − AB)Xᵀ‖_F / sqrt(T) is the predicted loss (the Gram matrix is a running mean).
  const e = matmul(x, matrix(16, 24, subtract(w, matmul(r1.a, r1.b))), { transB: true }); // T×out
  const measured = frobeniusNorm(e) / Math.sqrt(200);
  assert.ok(
    Math.abs(measured - r1.report.predictedLoss!) <= 1e-4 * measured,
    `${measured} vs ${r1.report.predictedLoss}`,
  );
  assert.ok(Math.abs(r1.report.predictedLoss! - r2.report.predictedLoss!) <= 1e-6 * measured);
});

function subtract(a: Matrix, b: Matrix): Float32Array {
  return Float32Array.from(a.data, (v, i) => v - b.data[i]);
}

test("layer objects: compress before any batch, a bad rank, or NaN weights are clear errors", () => {
  const w = randomMatrix(6, 5, 1);
  assert.throws(
    () => svdllm(w).compress({ rank: 2 }),
    (e) => e instanceof OptionError && /addBatch/.test(e.message),
  );
  assert.throws(
    () => asvd(w).compress({ rank: 2 }),
    (e) => e instanceof OptionError && /addBatch/.test(e.message),
  );
  assert.throws(
    () => svdLayer(w).compress({ rank: 0 }),
    (e) => e instanceof OptionError && /rank/.test(e.message),
  );
  assert.throws(
    () => svdLayer(w).compress({ rank: 6 }),
    (e) => e instanceof OptionError && /\[1, 5\]/.test(e.message),
  );
  const bad = matrix(2, 2, new Float32Array([1, NaN, 0, 1]));
  assert.throws(() => svdllm(bad), /svdllm layer: weight: non-finite value NaN at \(0, 1\)/);
});
