import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { NumericError, OptionError, ShapeError } from "../../src/errors.ts";
import { cholesky } from "../../src/linalg/cholesky.ts";
import { matmul64 } from "../../src/linalg/gemm.ts";
import { gramAccumulate } from "../../src/linalg/gram.ts";
import { type Matrix64, matrix64 } from "../../src/linalg/matrix.ts";
import { createRng, randomNormal } from "../../src/linalg/random.ts";
import { BACKENDS, diffNorm, EPS, fro, withBackend } from "./factor_helpers.ts";

/** LLᵀ = A + shift·I, L lower triangular with a positive diagonal. */
function checkFactor(a: Matrix64, l: Matrix64, shift: number, label: string): void {
  const n = a.rows;
  for (let i = 0; i < n; i++) {
    assert.ok(l.data[i * n + i] > 0, `${label}: L[${i},${i}] ≤ 0`);
    for (let j = i + 1; j < n; j++) assert.equal(l.data[i * n + j], 0, `${label}: L not lower triangular`);
  }
  const shifted = Float64Array.from(a.data);
  for (let i = 0; i < n; i++) shifted[i * n + i] += shift;
  const want = { rows: n, cols: n, data: shifted };
  const llt = matmul64(l, l, { transB: true });
  assert.ok(diffNorm(llt, want) <= 50 * n * EPS * fro(want), `${label}: LLᵀ ≠ A + shift·I`);
}

/** Gram matrix of `tokens` random activations over n channels, some channels dead (all zero). */
function gram(tokens: number, n: number, dead: number[], seed: number): Matrix64 {
  const x = randomNormal(tokens, n, createRng(seed));
  for (const c of dead) for (let t = 0; t < tokens; t++) x.data[t * n + c] = 0;
  const g = matrix64(n, n);
  gramAccumulate(g, x, 1 / tokens);
  return g;
}

for (const backend of BACKENDS) {
  test(`cholesky (${backend}): positive definite Gram matrices factor with no shift`, async () => {
    await withBackend(backend, () => {
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 150 }), fc.integer(), (n, seed) => {
          const g = gram(2 * n + 5, n, [], seed);
          const r = cholesky(g);
          assert.equal(r.shift, 0);
          assert.equal(r.tries, 1);
          checkFactor(g, r.factor, 0, `n=${n}`);
        }),
        { numRuns: 15 },
      );
    });
  });

  test(`cholesky (${backend}): dead channels and fewer tokens than channels get damped and reported`, async () => {
    await withBackend(backend, () => {
      for (const [tokens, n, dead] of [[400, 130, [3, 77, 129]], [50, 130, []], [1, 10, []]] as const) {
        const g = gram(tokens, n, [...dead], n + tokens);
        const r = cholesky(g);
        assert.ok(r.shift > 0 && r.tries > 1, `tokens=${tokens} n=${n}: shift ${r.shift}`);
        let mean = 0;
        for (let i = 0; i < n; i++) mean += g.data[i * n + i] / n;
        // The documented schedule: c·mean|diag| with c = 1e-6 … 1e-2.
        const c = r.shift / mean;
        assert.ok(
          [1e-6, 1e-5, 1e-4, 1e-3, 1e-2].some((k) => Math.abs(c - k) <= 1e-12 * k),
          `shift ${c}·mean`,
        );
        checkFactor(g, r.factor, r.shift, `tokens=${tokens} n=${n}`);
        assert.throws(
          () => cholesky(g, { damping: "none" }),
          (e: Error) =>
            e instanceof NumericError && /pivot \d+ is/.test(e.message) && /cholesky/.test(e.message),
        );
        assert.throws(
          () => cholesky(g, { maxTries: 1 }),
          (e: Error) => e instanceof NumericError && e.message.includes(`${n}×${n}`),
        );
      }
    });
  });
  test(`cholesky (${backend}): inPlace writes the same factor into A, and only on success`, async () => {
    await withBackend(backend, () => {
      // Positive definite (one attempt), damped (retries read A intact), and a size past the wasm panel.
      for (const [tokens, n, dead] of [[300, 90, []], [400, 130, [3, 77]], [50, 130, []]] as const) {
        const g = gram(tokens, n, [...dead], 7 * n + tokens);
        const ref = cholesky(g);
        const a = { rows: n, cols: n, data: Float64Array.from(g.data) };
        const r = cholesky(a, { inPlace: true });
        assert.equal(r.factor.data, a.data, "the factor is A's own storage");
        assert.deepEqual(r.factor.data, ref.factor.data, `tokens=${tokens} n=${n}: factor differs`);
        assert.equal(r.shift, ref.shift);
        assert.equal(r.tries, ref.tries);
        if (ref.tries > 1) {
          // A failed attempt leaves A as it was.
          const b = { rows: n, cols: n, data: Float64Array.from(g.data) };
          assert.throws(() => cholesky(b, { damping: "none", inPlace: true }), NumericError);
          assert.deepEqual(b.data, g.data, "A changed by a failed factorisation");
        }
      }
    });
  });
}

test("cholesky: indefinite matrix needs the eigenvalue shift (last resort)", () => {
  // Eigenvalues 3 and −1: only −λ_min + 1e-6·mean|diag| repairs it.
  const a = matrix64(2, 2, new Float64Array([1, 2, 2, 1]));
  const r = cholesky(a);
  assert.equal(r.tries, 7);
  assert.ok(Math.abs(r.shift - (1 + 1e-6)) < 1e-9, `shift ${r.shift}`);
  checkFactor(a, r.factor, r.shift, "indefinite");
  assert.throws(
    () => cholesky(a, { maxTries: 6 }),
    (e: Error) => e instanceof NumericError && /0\.01/.test(e.message),
  );
});

test("cholesky: known factor, fixed shift, options and input validation", () => {
  const r = cholesky(matrix64(2, 2, new Float64Array([4, 2, 2, 2])));
  assert.deepEqual(Array.from(r.factor.data), [2, 0, 1, 1]);
  const z = matrix64(3, 3);
  const f = cholesky(z, { damping: 0.25 });
  assert.equal(f.shift, 0.25);
  assert.deepEqual(Array.from(f.factor.data), [0.5, 0, 0, 0, 0.5, 0, 0, 0, 0.5]);
  assert.throws(
    () => cholesky(z, { damping: 0 }),
    (e: Error) => e instanceof NumericError && /shift 0/.test(e.message),
  );
  assert.throws(() => cholesky(z, { damping: -1 }), OptionError);
  assert.throws(() => cholesky(z, { maxTries: 0 }), OptionError);
  assert.throws(() => cholesky(matrix64(2, 3)), ShapeError);
  const bad = matrix64(2, 2, new Float64Array([1, 0, 0, NaN]));
  assert.throws(() => cholesky(bad), (e: Error) => e instanceof NumericError && /^cholesky/.test(e.message));
});
