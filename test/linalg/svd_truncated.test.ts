import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { OptionError } from "../../src/errors.ts";
import { type Matrix, type Matrix64, toFloat32, toFloat64 } from "../../src/linalg/matrix.ts";
import { orthonormalityError, reconstruct } from "../../src/linalg/qr.ts";
import { gemm64 } from "../../src/linalg/factor_kernels.ts";
import { svd, type SvdResult } from "../../src/linalg/svd.ts";
import { orthonormalize, svdTruncated, type SvdTruncatedOptions } from "../../src/linalg/svd_truncated.ts";
import {
  BACKENDS,
  diffNorm,
  EPS,
  fro,
  rowsAsColumns,
  withBackend,
  withSingularValues,
} from "./factor_helpers.ts";

/** Unit roundoff of float32. */
const EPS32 = 2 ** -24;

/** sqrt(Σ_{i≥k} σ_i²). */
function tail(s: ArrayLike<number>, k: number): number {
  let t = 0;
  for (let i = k; i < s.length; i++) t += s[i] * s[i];
  return Math.sqrt(t);
}

/**
 * Shapes, float64 outputs, orthonormal U and V, Eckart–Young within `excess` of the optimum of `a`, whose
 * exact singular values are `exact`.
 */
function checkRankK(
  a: Matrix<Float32Array | Float64Array>,
  exact: ArrayLike<number>,
  k: number,
  res: SvdResult,
  excess: number,
): void {
  const label = `${a.rows}×${a.cols} k=${k}`;
  assert.equal(res.u.rows, a.rows);
  assert.equal(res.u.cols, k);
  assert.equal(res.vt.rows, k);
  assert.equal(res.vt.cols, a.cols);
  assert.ok(res.u.data instanceof Float64Array && res.vt.data instanceof Float64Array);
  // The final basis is re-orthonormalised in float64 whatever the sketch precision.
  assert.ok(orthonormalityError(res.u) < 1e-12, `${label}: UᵀU ≠ I (${orthonormalityError(res.u)})`);
  assert.ok(orthonormalityError(rowsAsColumns(res.vt)) < 1e-12, `${label}: VᵀV ≠ I`);
  const best = tail(exact, k);
  const err = diffNorm(toFloat64(a), reconstruct(res.u, res.s, res.vt));
  assert.ok(err >= best * (1 - 1e-10), `${label}: below the Eckart–Young optimum?`);
  assert.ok(err <= best * (1 + excess), `${label}: error ${err} vs optimum ${best}`);
}

/** m, n, k, seed, σ_i = decay^i. */
const F32_CASES = [[160, 100, 8, 1, 0.8], [100, 160, 10, 2, 0.8], [160, 100, 8, 3, 0.5]];

for (const backend of BACKENDS) {
  test(`svdTruncated (${backend}): float32 input takes the float32 sketch, Eckart–Young to 1e-7`, async () => {
    await withBackend(backend, () => {
      // 0.5^i: Y = A·Z has κ ≈ 2^17, too ill-conditioned for the float32 Gram; the float64 fallback runs.
      for (const [m, n, k, seed, decay] of F32_CASES) {
        const r = Math.min(m, n);
        const a = toFloat32(withSingularValues(m, n, Array.from({ length: r }, (_, i) => decay ** i), seed));
        const exact = svd(a).s; // of the float32 matrix itself
        const res = svdTruncated(a, k, { seed });
        // Errors of the sketch (float32 products, float32 bases) move the Eckart–Young error only to second
        // order: (√m·ε₃₂·σ₁ / tail)² ≈ (1e-6 / 1e-3)² = 1e-6 at worst here, ~1e-11 measured; 1e-7 for 0.8^i
        // (tail ≈ 0.1·σ₁) and 1e-5 for 0.5^i.
        checkRankK(a, exact, k, res, decay === 0.5 ? 1e-5 : 1e-7);
        // The float32 projection QᵀA moves the σ to first order: ~√m·ε₃₂·σ₁ (3e-8·σ₁ measured).
        const f32Err = Math.max(...Array.from({ length: k }, (_, i) => Math.abs(res.s[i] - exact[i])));
        assert.ok(f32Err <= 4 * Math.sqrt(m) * EPS32 * exact[0], `${m}×${n}: σ off by ${f32Err}`);
        // sketch "float64" is the all-float64 path: the σ of the same float32 matrix to ~1e-12.
        const res64 = svdTruncated(a, k, { seed, sketch: "float64" });
        checkRankK(a, exact, k, res64, decay === 0.5 ? 1e-5 : 1e-7);
        for (let i = 0; i < k; i++) assert.ok(Math.abs(res64.s[i] - exact[i]) <= 1e-12 * exact[0]);
      }
    });
  });

  test(`svdTruncated (${backend}): sketch "float32" on float64 input keeps float64 σ accuracy`, async () => {
    await withBackend(backend, () => {
      const [m, n, k] = [260, 220, 10];
      const sigma = Array.from({ length: n }, (_, i) => 0.8 ** i);
      const a = withSingularValues(m, n, sigma, 7);
      const res = svdTruncated(a, k, { seed: 7, sketch: "float32" });
      // QᵀA is float64 here, so only the basis carries float32 error δ ~ 1e-7, and the σ of QᵀA move by
      // O(δ²): the same 1e-9 relative as the float64 path (measured ~1e-14).
      for (let i = 0; i < k; i++) assert.ok(Math.abs(res.s[i] - sigma[i]) <= 1e-9 * sigma[i], `σ${i}`);
      checkRankK(a, sigma, k, res, 1e-7);
    });
  });
}

test("svdTruncated: low-rank input (rank < k + oversample) is recovered exactly on every sketch path", () => {
  // Y = A·Ω has rank 3 < l = 15: the Gram matrix is singular, CholeskyQR fails, Householder QR takes over.
  // A float64 A with a float32 sketch still gets ~ε, since its last product A·Z is float64.
  const [m, n, k] = [150, 200, 5];
  const a = withSingularValues(m, n, [3, 2, 1], 11);
  const runs: [Matrix<Float32Array | Float64Array>, SvdTruncatedOptions, number][] = [
    [a, {}, 1e-12],
    [a, { sketch: "float32" }, 1e-12],
    [a, { sketch: "float32", powerIterations: 0 }, 1e-12],
    [toFloat32(a), {}, 1e-6],
  ];
  for (const [input, opts, tol] of runs) {
    const res = svdTruncated(input, k, { seed: 4, ...opts });
    const label = `${input.data.constructor.name} ${JSON.stringify(opts)}`;
    assert.ok(orthonormalityError(res.u) < 1e-12, label);
    assert.ok(orthonormalityError(rowsAsColumns(res.vt)) < 1e-12, label);
    for (const [i, want] of [3, 2, 1, 0, 0].entries()) {
      assert.ok(Math.abs(res.s[i] - want) <= tol * 3, `${label}: σ${i} = ${res.s[i]}`);
    }
    const err = diffNorm(toFloat64(input), reconstruct(res.u, res.s, res.vt));
    assert.ok(err <= tol * fro(input), `${label}: error ${err}`);
  }
});

test("svdTruncated: sketch option validated; same seed same result in float32", () => {
  const a = toFloat32(withSingularValues(120, 100, Array.from({ length: 100 }, (_, i) => 0.9 ** i), 9));
  assert.deepEqual(svdTruncated(a, 5, { seed: 3 }).s, svdTruncated(a, 5, { seed: 3 }).s);
  // @ts-expect-error: a wrong value must be rejected at run time too
  assert.throws(() => svdTruncated(a, 5, { sketch: "float16" }), OptionError);
});

test("orthonormalize: orthonormal basis of the same span, ill-conditioned and rank-deficient Y included", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 12 }),
      fc.integer({ min: 0, max: 30 }),
      fc.double({ min: 0, max: 14, noNaN: true }),
      fc.integer({ min: 0, max: 3 }),
      fc.integer({ min: 0, max: 1000 }),
      (l, extra, decades, zeros, seed) => {
        const n = l + extra;
        // σ from 1 down to 10^-decades, the last `zeros` exactly 0 (rank-deficient Y).
        const sigma = Array.from(
          { length: l },
          (_, i) => i >= l - zeros ? 0 : 10 ** (-decades * i / Math.max(1, l - 1)),
        );
        const y = withSingularValues(n, l, sigma, seed);
        for (const passes of [1, 2]) {
          const q = orthonormalize(y, passes);
          assert.equal(q.rows, n);
          assert.equal(q.cols, l);
          // Two passes: ~ε always. One pass: ~κ²·ε when CholeskyQR succeeds, else Householder's ~ε.
          const cond = sigma[0] / Math.max(sigma[l - 1], 1e-300);
          const orthTol = passes === 2
            ? 100 * n * EPS
            : Math.max(100 * n * EPS, Math.min(1, cond * cond * 1e3 * EPS));
          assert.ok(orthonormalityError(q) <= orthTol, `passes ${passes}: ${orthonormalityError(q)}`);
          if (passes === 1) continue;
          // Same span: Y − Q·QᵀY vanishes.
          const qty = gemm64(q, y, { transA: true });
          const back: Matrix64 = gemm64(q, qty);
          assert.ok(diffNorm(y, back) <= 1e3 * n * EPS * Math.max(fro(y), 1e-300), `passes ${passes}: span`);
        }
      },
    ),
    { numRuns: 60 },
  );
});
