import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { OptionError, ShapeError } from "../../src/errors.ts";
import { matmul, matmul64 } from "../../src/linalg/gemm.ts";
import { ResidentMatrix } from "../../src/linalg/resident.ts";
import { createRng, randomNormal } from "../../src/linalg/random.ts";
import { toFloat32 } from "../../src/linalg/matrix.ts";
import { BACKENDS, withBackend } from "./factor_helpers.ts";

for (const backend of BACKENDS) {
  test(`ResidentMatrix (${backend}): op(A)·X equals matmul of the converted A, many products per matrix`, async () => {
    await withBackend(backend, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 70 }),
          fc.integer({ min: 1, max: 70 }),
          fc.integer({ min: 1, max: 9 }),
          fc.boolean(),
          fc.integer({ min: 0, max: 1000 }),
          (m, n, l, f32Input, seed) => {
            const rng = createRng(seed);
            const a64 = randomNormal(m, n, rng);
            const input = f32Input ? toFloat32(a64) : a64;
            const a32 = toFloat32(a64), aIn64 = { ...input, data: Float64Array.from(input.data) };
            const x = randomNormal(n, l, rng), xt = randomNormal(m, l, rng);
            const r32 = new ResidentMatrix(input, "f32"), r64 = new ResidentMatrix(input, "f64");
            try {
              // Same kernels as matmul on the same (converted) values: equal to float32 accumulation error.
              for (let rep = 0; rep < 2; rep++) {
                const got = r32.mul(toFloat32(x)), want = matmul(a32, toFloat32(x));
                const gotT = r32.mul(toFloat32(xt), true),
                  wantT = matmul(a32, toFloat32(xt), { transA: true });
                assert.equal(got.rows, m);
                assert.equal(gotT.rows, n);
                for (let i = 0; i < want.data.length; i++) {
                  assert.ok(Math.abs(got.data[i] - want.data[i]) <= 1e-4 * (1 + Math.abs(want.data[i])));
                }
                for (let i = 0; i < wantT.data.length; i++) {
                  assert.ok(Math.abs(gotT.data[i] - wantT.data[i]) <= 1e-4 * (1 + Math.abs(wantT.data[i])));
                }
                const got64 = r64.mul(x), want64 = matmul64(aIn64, x);
                for (let i = 0; i < want64.data.length; i++) {
                  assert.ok(
                    Math.abs(got64.data[i] - want64.data[i]) <= 1e-12 * (1 + Math.abs(want64.data[i])),
                  );
                }
              }
            } finally {
              r32.dispose();
              r64.dispose();
            }
          },
        ),
        { numRuns: 40 },
      );
    });
  });
}

test("ResidentMatrix: wrong shapes, element types and precisions are rejected; disposed matrices throw", () => {
  const a = randomNormal(4, 3, createRng(1));
  // @ts-expect-error: a wrong value must be rejected at run time too
  assert.throws(() => new ResidentMatrix(a, "f16"), OptionError);
  const r = new ResidentMatrix(a, "f32");
  assert.throws(() => r.mul(toFloat32(randomNormal(4, 2, createRng(2)))), ShapeError); // needs 3 rows
  // @ts-expect-error: float64 X for a float32 matrix
  assert.throws(() => r.mul(randomNormal(3, 2, createRng(2))), ShapeError);
  assert.equal(r.mul(toFloat32(randomNormal(4, 2, createRng(2))), true).rows, 3);
  r[Symbol.dispose]();
  r.dispose(); // idempotent
  assert.throws(() => r.mul(toFloat32(randomNormal(3, 2, createRng(2)))), /disposed/);
});
