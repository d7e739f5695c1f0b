import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { NumericError, ShapeError } from "../../src/errors.ts";
import { eigh } from "../../src/linalg/eigh.ts";
import { matmul64 } from "../../src/linalg/gemm.ts";
import { type Matrix64, matrix64 } from "../../src/linalg/matrix.ts";
import { orthonormalityError } from "../../src/linalg/qr.ts";
import { createRng, randomNormal } from "../../src/linalg/random.ts";
import { BACKENDS, EPS, fro, randomOrthonormal, withBackend } from "./factor_helpers.ts";

/** max |A·V − V·Λ| relative to ‖A‖. */
function residual(a: Matrix64, values: Float64Array, v: Matrix64): number {
  const n = a.rows, av = matmul64(a, v);
  let err = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      err = Math.max(err, Math.abs(av.data[i * n + j] - v.data[i * n + j] * values[j]));
    }
  }
  return err / Math.max(fro(a), 1e-300);
}

for (const backend of BACKENDS) {
  test(`eigh (${backend}): random symmetric matrices, A·V = V·Λ, VᵀV = I, descending`, async () => {
    await withBackend(backend, () => {
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 60 }), fc.integer(), (n, seed) => {
          const b = randomNormal(n, n, createRng(seed));
          const a = matrix64(n, n);
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < n; j++) a.data[i * n + j] = b.data[i * n + j] + b.data[j * n + i];
          }
          const { values, vectors } = eigh(a);
          assert.ok(residual(a, values, vectors) <= 20 * n * EPS);
          assert.ok(orthonormalityError(vectors) <= 20 * n * EPS);
          for (let i = 1; i < n; i++) assert.ok(values[i] <= values[i - 1]);
        }),
        { numRuns: 40 },
      );
    });
  });
}

test("eigh: known eigenvalues, repeated, zero and negative, spread over 1e12", () => {
  const n = 80;
  const lam = Array.from(
    { length: n },
    (_, i) => i < 10 ? 5 : i < 20 ? 0 : i < 30 ? -2 : 10 ** (-12 * (i - 30) / 49),
  );
  const q = randomOrthonormal(n, n, createRng(4));
  const ql = Float64Array.from(q.data);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) ql[i * n + j] *= lam[j];
  const a = matmul64({ rows: n, cols: n, data: ql }, q, { transB: true });
  const { values, vectors } = eigh(a);
  const sorted = [...lam].sort((x, y) => y - x);
  for (let i = 0; i < n; i++) assert.ok(Math.abs(values[i] - sorted[i]) <= 1e-13 * 5 * n, `λ${i}`);
  assert.ok(residual(a, values, vectors) <= 20 * n * EPS);
  assert.ok(orthonormalityError(vectors) <= 20 * n * EPS);
  const d = eigh(matrix64(2, 2, new Float64Array([2, 1, 1, 2])));
  assert.ok(Math.abs(d.values[0] - 3) < 1e-15 && Math.abs(d.values[1] - 1) < 1e-15);
  assert.ok(Math.abs(Math.abs(d.vectors.data[0]) - Math.SQRT1_2) < 1e-15);
});

test("eigh: non-finite and non-square input", () => {
  assert.throws(
    () => eigh(matrix64(2, 2, new Float64Array([1, NaN, NaN, 1]))),
    (e: Error) => e instanceof NumericError && /^eigh/.test(e.message),
  );
  assert.throws(() => eigh(matrix64(2, 3)), ShapeError);
  assert.equal(eigh(matrix64(0, 0)).values.length, 0);
});
