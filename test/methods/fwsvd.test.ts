/**
 * FWSVD's known answers: with a uniform Fisher it is plain SVD; the weighted error ‖diag(√I)(W − AB)‖_F
 * equals sqrt(Σ_{i>k} σ_i²) of diag(√I)·W and no other rank-k product does better (Eckart–Young), in
 * particular not plain SVD; rows with zero Fisher are floored, not divided by zero; the Fisher rows are the
 * squared row norms of dyᵀ·x; and the pipeline's in-memory model and written folder agree.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import {
  addFisherBatch,
  compressFwsvd,
  FISHER_FLOOR,
  fisherScale,
  type FisherSide,
} from "../../src/methods/fwsvd.ts";
import { compressSvd } from "../../src/methods/svd.ts";
import { NumericError, ShapeError } from "../../src/errors.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";
import { product, randomWeight, relDiff } from "./_synthetic.ts";
import { createRng } from "../../src/linalg/random.ts";

/** ‖diag(s)(W − A·B)‖_F ("output") or ‖(W − A·B)diag(s)‖_F ("input") in float64. */
function weightedError(w: Matrix, a: Matrix, b: Matrix, s: Float64Array, side: FisherSide): number {
  const ab = product(a, b);
  let e = 0;
  for (let i = 0; i < w.rows; i++) {
    for (let j = 0; j < w.cols; j++) {
      e += ((side === "output" ? s[i] : s[j]) * (w.data[i * w.cols + j] - ab.data[i * w.cols + j])) ** 2;
    }
  }
  return Math.sqrt(e);
}

const sides = fc.constantFrom("input" as const, "output" as const);

function randomFisher(m: number, seed: number): Float64Array {
  const rng = createRng(seed);
  return Float64Array.from({ length: m }, () => Math.exp(3 * rng.normal())); // a wide spread of importances
}

test("fwsvd: a uniform Fisher gives plain SVD, on either side", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 2, max: 14 }),
      fc.integer({ min: 2, max: 14 }),
      sides,
      fc.nat(),
      (m, n, side, seed) => {
        const w = randomWeight(m, n, seed), k = 1 + (seed % Math.min(m, n));
        const len = side === "output" ? m : n;
        const f = compressFwsvd(w, new Float64Array(len).fill(0.37), k, side), s = compressSvd(w, k);
        assert.ok(relDiff(product(f.a, f.b), product(s.a, s.b)) < 1e-5);
      },
    ),
    { numRuns: 30 },
  );
});

test("fwsvd: the Fisher-weighted error is the σ tail of the weighted W and beats plain SVD (Eckart–Young)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 2, max: 14 }),
      fc.integer({ min: 2, max: 14 }),
      sides,
      fc.nat(),
      (m, n, side, seed) => {
        const k = 1 + (seed % Math.min(m, n));
        const w = randomWeight(m, n, seed), fisher = randomFisher(side === "output" ? m : n, seed + 1);
        const s = fisherScale(fisher);
        const f = compressFwsvd(w, fisher, k, side);
        const sigma = f.report.singularValues;
        let tail = 0;
        for (let i = k; i < sigma.length; i++) tail += sigma[i] ** 2;
        const err = weightedError(w, f.a, f.b, s, side);
        const scaleOf = Math.max(1e-6, Math.sqrt(sigma.reduce((t, v) => t + v * v, 0)));
        assert.ok(Math.abs(err - Math.sqrt(tail)) <= 1e-4 * scaleOf, `${err} vs ${Math.sqrt(tail)}`);
        const p = compressSvd(w, k);
        assert.ok(err <= weightedError(w, p.a, p.b, s, side) * (1 + 1e-5) + 1e-6 * scaleOf);
        // and a perturbation of the optimum is no better
        const rng = createRng(seed + 2), a2 = { ...f.a, data: f.a.data.map((v) => v + 1e-2 * rng.normal()) };
        assert.ok(err <= weightedError(w, a2, f.b, s, side) + 1e-6 * scaleOf);
      },
    ),
    { numRuns: 40 },
  );
});

test("fwsvd: the module example — rank 1 keeps the important row (or column) exactly", () => {
  const w = { rows: 2, cols: 2, data: new Float32Array([3, 0, 0, 1]) };
  const { a, b } = compressFwsvd(w, new Float64Array([1, 100]), 1, "output");
  const ab = product(a, b).data;
  assert.ok(Math.abs(ab[2]) < 1e-6 && Math.abs(ab[3] - 1) < 1e-6); // row 1 = [0, 1]
  assert.ok(Math.abs(ab[0]) < 1e-6 && Math.abs(ab[1]) < 1e-6); // row 0 dropped although its σ (3) is larger
  assert.ok(Math.abs(compressSvd(w, 1).a.data[0]) > 1); // plain SVD keeps row 0 instead
  const c = compressFwsvd(w, new Float64Array([1, 100]), 1, "input"), abc = product(c.a, c.b).data;
  assert.ok(Math.abs(abc[3] - 1) < 1e-6 && Math.abs(abc[0]) < 1e-6); // column 1 kept, column 0 dropped
});

test("fwsvd: zero Fisher rows are floored; all-zero is plain SVD; bad Fisher values are refused", () => {
  const w = randomWeight(6, 5, 3);
  const fisher = new Float64Array([0, 2, 0, 1, 3, 0]);
  const s = fisherScale(fisher), mean = 1;
  assert.equal(s[0], Math.sqrt(FISHER_FLOOR * mean));
  assert.equal(s[1], Math.sqrt(2));
  const f = compressFwsvd(w, fisher, 3, "output");
  assert.ok(f.a.data.every(Number.isFinite) && f.b.data.every(Number.isFinite));
  const g = compressFwsvd(w, fisher.subarray(0, 5), 3, "input");
  assert.ok(g.a.data.every(Number.isFinite) && g.b.data.every(Number.isFinite));
  const zero = compressFwsvd(w, new Float64Array(6), 3, "output"), plain = compressSvd(w, 3);
  assert.ok(relDiff(product(zero.a, zero.b), product(plain.a, plain.b)) < 1e-5);
  assert.throws(() => compressFwsvd(w, new Float64Array([1, NaN, 1, 1, 1, 1]), 2, "output"), NumericError);
  assert.throws(() => compressFwsvd(w, new Float64Array([1, -1, 1, 1, 1]), 2), /row 1 is -1/);
  assert.throws(
    () => compressFwsvd(w, new Float64Array(5), 2, "output"),
    /5 Fisher values for a weight of 6 rows/,
  );
  assert.throws(
    () => compressFwsvd(w, new Float64Array(6), 2),
    /6 Fisher values for a weight of 5 input features/,
  );
  assert.throws(() => compressFwsvd(w, new Float64Array(5), 9), ShapeError);
  assert.throws(() => compressFwsvd(w, new Float64Array(5), 2, "rows" as FisherSide), /side must be/);
});

test("fwsvd: Fisher sums are the squared row and column norms of dyᵀ·x, summed over batches", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 1, max: 6 }),
      fc.nat(),
      (t, n, m, seed) => {
        const x = randomWeight(t, n, seed), dy = randomWeight(t, m, seed + 1);
        const rows = new Float64Array(m);
        addFisherBatch(rows, x, dy);
        addFisherBatch(rows, x, dy);
        for (let i = 0; i < m; i++) {
          let s = 0;
          for (let j = 0; j < n; j++) {
            let g = 0;
            for (let r = 0; r < t; r++) g += dy.data[r * m + i] * x.data[r * n + j];
            s += g * g;
          }
          assert.ok(Math.abs(rows[i] - 2 * s) <= 1e-5 * Math.max(1, 2 * s));
        }
      },
    ),
    { numRuns: 30 },
  );
  assert.throws(
    () => addFisherBatch(new Float64Array(2), randomWeight(3, 2, 1), randomWeight(4, 2, 1)),
    ShapeError,
  );
});
