import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { NumericError, ShapeError } from "../../src/errors.ts";
import { matmul64 } from "../../src/linalg/gemm.ts";
import { type Matrix64, matrix64, transpose } from "../../src/linalg/matrix.ts";
import { createRng, randomNormal } from "../../src/linalg/random.ts";
import { solveTriangular } from "../../src/linalg/triangular.ts";
import { BACKENDS, diffNorm, EPS, fro, withBackend } from "./factor_helpers.ts";

/** A random triangular matrix with a diagonal of magnitude ≥ 1 (condition moderate but not trivial). */
function triangular(n: number, lower: boolean, seed: number): Matrix64 {
  const t = randomNormal(n, n, createRng(seed));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (lower ? j > i : j < i) t.data[i * n + j] = 0;
      else t.data[i * n + j] /= Math.sqrt(n);
    }
    t.data[i * n + i] = (t.data[i * n + i] >= 0 ? 1 : -1) * (1 + Math.abs(t.data[i * n + i]));
  }
  return t;
}

for (const backend of BACKENDS) {
  test(`solveTriangular (${backend}): residuals of all 8 variants, blocked sizes`, async () => {
    await withBackend(backend, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 160 }),
          fc.integer({ min: 1, max: 12 }),
          fc.boolean(),
          fc.boolean(),
          fc.constantFrom("left" as const, "right" as const),
          fc.integer(),
          (n, k, lower, trans, side, seed) => {
            const t = triangular(n, lower, seed);
            const b = side === "left"
              ? randomNormal(n, k, createRng(seed + 1))
              : randomNormal(k, n, createRng(seed + 1));
            const x = solveTriangular(t, b, { lower, transpose: trans, side });
            const op = trans ? transpose(t) : t;
            const back = side === "left" ? matmul64(op, x) : matmul64(x, op);
            // Backward stability: residual ≤ c·n·ε·‖T‖·‖X‖.
            assert.ok(
              diffNorm(back, b) <= 10 * n * EPS * fro(t) * fro(x),
              `n=${n} ${side} lower=${lower} T=${trans}`,
            );
          },
        ),
        { numRuns: 60 },
      );
    });
  });
}

test("solveTriangular: known answer, only the named triangle is read", () => {
  // Garbage above the diagonal must be ignored when lower: true.
  const l = matrix64(2, 2, new Float64Array([2, 99, 1, 1]));
  const x = solveTriangular(l, matrix64(2, 1, new Float64Array([2, 3])), { lower: true });
  assert.deepEqual(Array.from(x.data), [1, 2]);
  const xt = solveTriangular(l, matrix64(2, 1, new Float64Array([4, 2])), { lower: true, transpose: true });
  assert.deepEqual(Array.from(xt.data), [1, 2]); // [[2, 1], [0, 1]]·[1, 2] = [4, 2]
});

test("solveTriangular: zero diagonal, non-finite input and shape mismatches", () => {
  const t = matrix64(3, 3, new Float64Array([1, 0, 0, 2, 0, 0, 1, 1, 1]));
  assert.throws(
    () => solveTriangular(t, matrix64(3, 1), { lower: true }),
    (e: Error) => e instanceof NumericError && /zero on the diagonal at 1/.test(e.message),
  );
  const ok = matrix64(2, 2, new Float64Array([1, 0, 0, 1]));
  const bad = matrix64(2, 1, new Float64Array([1, Infinity]));
  assert.throws(
    () => solveTriangular(ok, bad, { lower: true }),
    (e: Error) => e instanceof NumericError && /solveTriangular/.test(e.message),
  );
  assert.throws(() => solveTriangular(ok, matrix64(3, 1), { lower: true }), ShapeError);
  assert.throws(() => solveTriangular(ok, matrix64(2, 3), { lower: true, side: "right" }), ShapeError);
  assert.throws(() => solveTriangular(matrix64(2, 3), matrix64(2, 1), { lower: true }), ShapeError);
});
