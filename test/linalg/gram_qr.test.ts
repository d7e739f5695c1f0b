import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { NumericError, ShapeError } from "../../src/errors.ts";
import { matmul64 } from "../../src/linalg/gemm.ts";
import { gramAccumulate } from "../../src/linalg/gram.ts";
import { matrix, matrix64, toFloat32 } from "../../src/linalg/matrix.ts";
import { orthonormalityError, qr } from "../../src/linalg/qr.ts";
import { createRng, randomNormal } from "../../src/linalg/random.ts";
import { BACKENDS, diffNorm, EPS, fro, withBackend } from "./factor_helpers.ts";

for (const backend of BACKENDS) {
  test(`gramAccumulate (${backend}): batches add up to scale·XᵀX, symmetric, float32 input`, async () => {
    await withBackend(backend, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 70 }),
          fc.integer({ min: 1, max: 90 }),
          fc.integer(),
          (t, n, seed) => {
            const x = randomNormal(t, n, createRng(seed));
            const x32 = toFloat32(x);
            const g = matrix64(n, n);
            const half = Math.floor(t / 2);
            gramAccumulate(g, { rows: half, cols: n, data: x32.data.subarray(0, half * n) }, 0.5);
            gramAccumulate(g, { rows: t - half, cols: n, data: x32.data.subarray(half * n) }, 0.5);
            const xw = { rows: t, cols: n, data: Float64Array.from(x32.data) };
            const want = matmul64(xw, xw, { transA: true, backend: "ts" });
            for (let i = 0; i < want.data.length; i++) want.data[i] *= 0.5;
            assert.ok(diffNorm(g, want) <= 4 * t * EPS * fro(want) + 1e-300);
            for (let i = 0; i < n; i++) {
              for (let j = 0; j < i; j++) assert.equal(g.data[i * n + j], g.data[j * n + i]);
            }
          },
        ),
        { numRuns: 30 },
      );
    });
  });
}

test("gramAccumulate: more tokens than one WASM chunk (2048) accumulate exactly like one product", () => {
  const t = 2100, n = 40;
  const x = randomNormal(t, n, createRng(11));
  const g = matrix64(n, n);
  gramAccumulate(g, x, 2);
  const want = matmul64(x, x, { transA: true, backend: "ts" });
  for (let i = 0; i < want.data.length; i++) want.data[i] *= 2;
  assert.ok(diffNorm(g, want) <= 4 * t * EPS * fro(want));
});

test("gramAccumulate: known answer, errors", () => {
  const g = matrix64(2, 2);
  gramAccumulate(g, matrix(1, 2, new Float32Array([1, 2])));
  gramAccumulate(g, matrix(1, 2, new Float32Array([1, 0])), 2);
  assert.deepEqual(Array.from(g.data), [3, 2, 2, 4]);
  assert.throws(() => gramAccumulate(matrix64(3, 3), matrix(1, 2)), ShapeError);
  assert.throws(
    () => gramAccumulate(g, matrix(1, 2, new Float32Array([1, NaN]))),
    (e: Error) => e instanceof NumericError && /gramAccumulate/.test(e.message),
  );
  assert.throws(() => gramAccumulate(g, matrix(1, 2), NaN), NumericError);
});

for (const backend of BACKENDS) {
  test(`qr (${backend}): A = QR, QᵀQ = I, R upper triangular, all shapes`, async () => {
    await withBackend(backend, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 50 }),
          fc.integer({ min: 1, max: 50 }),
          fc.integer(),
          (m, n, seed) => {
            const a = randomNormal(m, n, createRng(seed));
            const { q, r } = qr(a);
            const k = Math.min(m, n);
            assert.equal(q.cols, k);
            assert.equal(r.rows, k);
            assert.ok(diffNorm(matmul64(q, r), a) <= 20 * Math.max(m, n) * EPS * fro(a));
            assert.ok(orthonormalityError(q) <= 20 * m * EPS);
            for (let i = 0; i < k; i++) for (let j = 0; j < i; j++) assert.equal(r.data[i * n + j], 0);
          },
        ),
        { numRuns: 40 },
      );
      // Shapes that take the blocked path (panels of 32 with a trailing block), tall and wide.
      for (const [m, n] of [[200, 90], [90, 200], [130, 130]]) {
        const a = randomNormal(m, n, createRng(m + n));
        const { q, r } = qr(a);
        assert.ok(diffNorm(matmul64(q, r), a) <= 20 * Math.max(m, n) * EPS * fro(a));
        assert.ok(orthonormalityError(q) <= 20 * m * EPS);
      }
      assert.throws(
        () => qr(matrix64(2, 2, new Float64Array([1, 2, Infinity, 0]))),
        (e: Error) => e instanceof NumericError && /^qr/.test(e.message),
      );
    });
  });
}

test("createRng: reproducible, uniform in [0, 1), normal with mean 0 and variance 1", () => {
  const a = createRng(42), b = createRng(42), c = createRng(43);
  const xs = Array.from({ length: 5 }, () => a.next());
  assert.deepEqual(xs, Array.from({ length: 5 }, () => b.next()));
  assert.notDeepEqual(xs, Array.from({ length: 5 }, () => c.next()));
  const r = createRng(7);
  let mean = 0, sq = 0, umin = 1, umax = 0;
  const N = 100000;
  for (let i = 0; i < N; i++) {
    const z = r.normal();
    mean += z / N;
    sq += z * z / N;
    const u = r.next();
    umin = Math.min(umin, u);
    umax = Math.max(umax, u);
  }
  // Standard errors: 1/√N ≈ 0.003 for the mean, √(2/N) ≈ 0.0045 for the variance.
  assert.ok(Math.abs(mean) < 0.015 && Math.abs(sq - 1) < 0.025, `mean ${mean}, var ${sq}`);
  assert.ok(umin >= 0 && umin < 1e-3 && umax < 1 && umax > 1 - 1e-3);
});

test("gramAccumulate float32-blocks: within float32 rounding of the float64 sums, exactly symmetric", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 700 }),
      fc.integer({ min: 1, max: 48 }),
      fc.integer(),
      (t, n, seed) => {
        const x32 = toFloat32(randomNormal(t, n, createRng(seed)));
        const fast = matrix64(n, n), exact = matrix64(n, n);
        gramAccumulate(fast, x32, 1 / t, { precision: "float32-blocks" });
        gramAccumulate(exact, x32, 1 / t);
        // Each 256-token block sums in float32: error ≤ 256·2⁻²⁴ relative to Σ|x_i x_j| ≤ ‖G‖-ish.
        assert.ok(diffNorm(fast, exact) <= 256 * 2 ** -24 * fro(exact) + 1e-300);
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < i; j++) assert.equal(fast.data[i * n + j], fast.data[j * n + i]);
        }
      },
    ),
    { numRuns: 25 },
  );
});
