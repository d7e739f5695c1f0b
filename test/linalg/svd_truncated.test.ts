import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
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
  tail,
  withBackend,
  withSingularValues,
} from "./factor_helpers.ts";

/** Unit roundoff of float32. */
const EPS32 = 2 ** -24;

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
  test(`svdTruncated (${backend}): float32 input, float32 products, Eckart–Young to 1e-7`, async () => {
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
        // precision "f64" is the all-float64 path: the σ of the same float32 matrix to ~1e-12.
        const res64 = svdTruncated(a, k, { seed, precision: "f64" });
        checkRankK(a, exact, k, res64, decay === 0.5 ? 1e-5 : 1e-7);
        for (let i = 0; i < k; i++) assert.ok(Math.abs(res64.s[i] - exact[i]) <= 1e-12 * exact[0]);
      }
    });
  });

  test(`svdTruncated (${backend}): float32 products agree with the float64 path (property)`, async () => {
    await withBackend(backend, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 60, max: 220 }),
          fc.integer({ min: 60, max: 220 }),
          fc.integer({ min: 1, max: 12 }),
          fc.double({ min: 0.5, max: 0.99, noNaN: true }),
          fc.boolean(),
          fc.integer({ min: 0, max: 1000 }),
          (m, n, k, decay, f32Input, seed) => {
            const r = Math.min(m, n);
            const sigma = Array.from({ length: r }, (_, i) => decay ** i);
            const a64 = withSingularValues(m, n, sigma, seed);
            const a = f32Input ? toFloat32(a64) : a64;
            const exact = f32Input ? svd(a).s : Float64Array.from(sigma);
            const res32 = svdTruncated(a, k, { seed });
            const res64 = svdTruncated(a, k, { seed, precision: "f64" });
            // Same bases' quality on both paths: orthonormal U, V, Eckart–Young within the randomized
            // excess (HMT: ~(σ_l/σ_k)^(2q+1) = decay^90, up to 0.4 relative for the flattest spectra here, whose
            // sketches skip the orthonormalisation between Aᵀ and A in float32) and
            // the float32 rounding, second order in the error (first order in the σ: √n·ε₃₂·σ₁ ≈ 1e-6).
            const best = tail(exact, k), rounding = 4 * Math.sqrt(r) * EPS32 * exact[0];
            const excess = Math.max(1e-7, 2 * decay ** 90, (rounding / best) ** 2);
            checkRankK(a, exact, k, res32, excess);
            checkRankK(a, exact, k, res64, excess);
            // The leading σ agree with the float64 path to ~1e-5 relative (~√n·ε₃₂ measured).
            for (let i = 0; i < k; i++) {
              if (sigma[i] < 0.1) break;
              const rel = Math.abs(res32.s[i] - res64.s[i]) / res64.s[i];
              assert.ok(rel <= 1e-5, `${m}×${n} k=${k}: σ${i} f32 ${res32.s[i]} vs f64 ${res64.s[i]}`);
            }
          },
        ),
        { numRuns: 12 },
      );
    });
  });

  test(`svdTruncated (${backend}): ill-conditioned A (σ over 1e8), float32 products stay near Eckart–Young`, async () => {
    await withBackend(backend, () => {
      // σ from 1 to 1e-8: Y = A·Z spans κ ≈ 1e8 after the power iterations, so the float32 CholeskyQR fails
      // and falls back to Householder in float64. Directions below ~1e-6·σ₁ drown in float32 rounding, so
      // the f32 result is only required near the optimum relative to ‖A‖: |err − best| ≲ √n·ε₃₂·‖A‖_F.
      const [m, n, k] = [240, 180, 40];
      const sigma = Array.from({ length: n }, (_, i) => 10 ** (-8 * i / (n - 1)));
      const a = withSingularValues(m, n, sigma, 21);
      const norm = fro(a), best = tail(sigma, k);
      const res32 = svdTruncated(a, k, { seed: 5 });
      assert.ok(orthonormalityError(res32.u) < 1e-12 && orthonormalityError(rowsAsColumns(res32.vt)) < 1e-12);
      const err32 = diffNorm(a, reconstruct(res32.u, res32.s, res32.vt));
      assert.ok(err32 >= best * (1 - 1e-10), "below the Eckart–Young optimum?");
      assert.ok(err32 - best <= 4 * Math.sqrt(n) * EPS32 * norm, `f32: error ${err32} vs optimum ${best}`);
      // The first 20 σ are past the randomized error ((σ_l/σ_20)^(2q+1) = 10^(-8·30·9/179) ≈ 1e-12): the
      // float32 path has them to √n·ε₃₂·σ₁, the float64 path to ~1e-10 relative.
      const res64 = svdTruncated(a, k, { seed: 5, precision: "f64" });
      for (let i = 0; i < 20; i++) {
        assert.ok(Math.abs(res32.s[i] - sigma[i]) <= 4 * Math.sqrt(n) * EPS32 * sigma[0], `f32 σ${i}`);
        assert.ok(Math.abs(res64.s[i] - sigma[i]) <= 1e-10 * sigma[i], `f64 σ${i}`);
      }
    });
  });
}

test("svdTruncated: low-rank input (rank < k + oversample) is recovered on every path", () => {
  // Y = A·Ω has rank 3 < l = 15: the Gram matrix is singular, CholeskyQR fails, Householder QR takes over.
  // float64 products recover a float64 A to ~ε; float32 products to ~float32 rounding of A.
  const [m, n, k] = [150, 200, 5];
  const a = withSingularValues(m, n, [3, 2, 1], 11);
  const runs: [Matrix<Float32Array | Float64Array>, SvdTruncatedOptions, number][] = [
    [a, { precision: "f64" }, 1e-12],
    [a, { precision: "f64", powerIterations: 0 }, 1e-12],
    [a, {}, 1e-6],
    [a, { powerIterations: 0 }, 1e-6],
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

test("svdTruncated: precision option validated; same seed same result in float32", () => {
  const a = toFloat32(withSingularValues(120, 100, Array.from({ length: 100 }, (_, i) => 0.9 ** i), 9));
  assert.deepEqual(svdTruncated(a, 5, { seed: 3 }).s, svdTruncated(a, 5, { seed: 3 }).s);
  // @ts-expect-error: a wrong value must be rejected at run time too
  assert.throws(() => svdTruncated(a, 5, { precision: "float16" }), OptionError);
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
