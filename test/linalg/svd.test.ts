import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { NumericError, OptionError } from "../../src/errors.ts";
import { toFloat32 } from "../../src/linalg/matrix.ts";
import { orthonormalityError, reconstruct } from "../../src/linalg/qr.ts";
import { createRng, randomNormal } from "../../src/linalg/random.ts";
import { svd } from "../../src/linalg/svd.ts";
import { svdTruncated, truncate } from "../../src/linalg/svd_truncated.ts";
import {
  BACKENDS,
  checkSigma,
  checkSvd,
  diffNorm,
  fro,
  rowsAsColumns,
  tail,
  withBackend,
  withSingularValues,
} from "./factor_helpers.ts";

for (const backend of BACKENDS) {
  test(`svd (${backend}): random shapes, fast-check properties`, async () => {
    await withBackend(backend, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 40 }),
          fc.integer({ min: 1, max: 40 }),
          fc.integer(),
          (m, n, seed) => {
            const a = randomNormal(m, n, createRng(seed));
            checkSvd(a, svd(a), `${m}×${n}`);
          },
        ),
        { numRuns: 40 },
      );
    });
  });

  test(`svd (${backend}): condition 1e10, rank-deficient, known σ, tall/wide/square, Eckart–Young`, async () => {
    await withBackend(backend, () => {
      for (const [m, n, seed] of [[90, 70, 1], [70, 90, 2], [80, 80, 3], [150, 40, 4], [40, 150, 5]]) {
        const r = Math.min(m, n);
        // Geometric decay from 1 to 1e-10 (condition 1e10).
        const sigma = Array.from({ length: r }, (_, i) => 10 ** (-10 * i / (r - 1)));
        const a = withSingularValues(m, n, sigma, seed);
        const res = svd(a);
        checkSvd(a, res, `ill ${m}×${n}`);
        checkSigma(res.s, sigma, `ill ${m}×${n}`);
        // Rank-deficient: the last third of σ are exactly zero, and σ repeated in a cluster.
        const sig2 = sigma.map((v, i) => i >= (2 * r) / 3 ? 0 : i < 5 ? 3 : v);
        const a2 = withSingularValues(m, n, sig2, seed + 100);
        const res2 = svd(a2);
        checkSvd(a2, res2, `rank-deficient ${m}×${n}`);
        checkSigma(res2.s, sig2, `rank-deficient ${m}×${n}`);
        // Eckart–Young: the rank-k truncation leaves exactly the tail of the spectrum.
        for (const k of [1, Math.floor(r / 3), r - 1]) {
          const t = truncate(res, k);
          const err = diffNorm(a, reconstruct(t.u, t.s, t.vt));
          assert.ok(Math.abs(err - tail(sigma, k)) <= 1e-12 * fro(a), `Eckart–Young ${m}×${n} k=${k}`);
        }
      }
    });
  });
}

test("svd: bidiagonal and sparse inputs with exact zeros (zero-diagonal chasing, exact deflation)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 2, max: 30 }),
      fc.integer({ min: 0, max: 10 }),
      fc.integer(),
      fc.boolean(),
      (n, extra, seed, square) => {
        // An upper bidiagonal (plus zero rows when not square) with about a third of its entries zeroed: the
        // Householder steps leave it as is, so the QR iteration meets exact zeros on both diagonals.
        const rng = createRng(seed);
        const m = square ? n : n + extra;
        const a = { rows: m, cols: n, data: new Float64Array(m * n) };
        for (let i = 0; i < n; i++) {
          a.data[i * n + i] = rng.next() < 0.35 ? 0 : rng.normal();
          if (i + 1 < n) a.data[i * n + i + 1] = rng.next() < 0.35 ? 0 : rng.normal();
        }
        checkSvd(a, svd(a), `bidiagonal ${m}×${n}`);
        // Same with whole rows and columns of a dense matrix zeroed.
        const b = randomNormal(m, n, rng);
        for (let i = 0; i < m; i++) if (rng.next() < 0.3) b.data.fill(0, i * n, (i + 1) * n);
        for (let j = 0; j < n; j++) {
          if (rng.next() < 0.3) {
            for (let i = 0; i < m; i++) b.data[i * n + j] = 0;
          }
        }
        checkSvd(b, svd(b), `sparse ${m}×${n}`);
      },
    ),
    { numRuns: 60 },
  );
});

test("svd: float32 input, zero matrix, 1×1, empty", () => {
  const a = randomNormal(30, 20, createRng(7));
  const a32 = toFloat32(a);
  const res = svd(a32);
  const a64 = { rows: 30, cols: 20, data: Float64Array.from(a32.data) };
  checkSvd(a64, res, "float32");
  const z = svd({ rows: 4, cols: 3, data: new Float64Array(12) });
  assert.deepEqual(Array.from(z.s), [0, 0, 0]);
  assert.ok(orthonormalityError(z.u) < 1e-15);
  const one = svd({ rows: 1, cols: 1, data: new Float64Array([-2]) });
  assert.equal(one.s[0], 2);
  assert.equal(one.u.data[0] * one.vt.data[0], -1);
  const empty = svd({ rows: 3, cols: 0, data: new Float64Array(0) });
  assert.equal(empty.s.length, 0);
  assert.equal(empty.u.rows, 3);
});

test("svd: a known decomposition (diagonal with signs and a permutation)", () => {
  // [[0, 2], [-3, 0], [0, 0]]: σ = 3, 2.
  const res = svd({ rows: 3, cols: 2, data: new Float64Array([0, 2, -3, 0, 0, 0]) });
  assert.ok(Math.abs(res.s[0] - 3) < 1e-15 && Math.abs(res.s[1] - 2) < 1e-15);
  assert.ok(Math.abs(Math.abs(res.vt.data[0]) - 1) < 1e-15, "first right vector is ±e1");
});

test("svd, svdTruncated: non-finite input is a NumericError naming the operation", () => {
  for (const bad of [NaN, Infinity, -Infinity]) {
    const a = randomNormal(5, 4, createRng(1));
    a.data[7] = bad;
    assert.throws(() => svd(a), (e: Error) => e instanceof NumericError && /^svd:/.test(e.message));
    assert.throws(
      () => svdTruncated(a, 2),
      (e: Error) => e instanceof NumericError && /svdTruncated/.test(e.message),
    );
  }
});

for (const backend of BACKENDS) {
  for (const precision of ["f64", "f32"] as const) {
    test(`svdTruncated (${backend}, ${precision}): decaying spectra match the exact SVD and Eckart–Young`, async () => {
      await withBackend(backend, () => {
        for (const [m, n, k, seed] of [[300, 200, 10, 1], [200, 300, 12, 2], [400, 120, 8, 3]]) {
          const r = Math.min(m, n);
          // σ_i = 0.8^i: with l = k + 10 and q = 4, HMT's bound puts the excess error at
          // ~(σ_{l}/σ_k)^(2q+1) = 0.8^90 ≈ 2e-9 of the optimum; 1e-7 leaves a margin.
          const sigma = Array.from({ length: r }, (_, i) => 0.8 ** i);
          const a = withSingularValues(m, n, sigma, seed);
          const res = svdTruncated(a, k, { seed, precision });
          assert.equal(res.u.rows, m);
          assert.equal(res.u.cols, k);
          assert.equal(res.vt.rows, k);
          assert.equal(res.vt.cols, n);
          assert.ok(orthonormalityError(res.u) < 1e-12);
          assert.ok(orthonormalityError(rowsAsColumns(res.vt)) < 1e-12);
          // float32 products: the projection QᵀA moves each σ by ~√n·ε₃₂·σ₁ (absolute), ≤ 4e-6·σ₁ here.
          if (precision === "f64") checkSigma(res.s, sigma.slice(0, k), `truncated ${m}×${n}`, 1e-9, 1e-7);
          else {checkSigma(
              res.s,
              sigma.slice(0, k),
              `truncated ${m}×${n} f32`,
              4 * Math.sqrt(r) * 2 ** -24,
              1,
            );}
          const err = diffNorm(a, reconstruct(res.u, res.s, res.vt));
          const best = tail(sigma, k);
          // Eckart–Young: no rank-k matrix beats the tail; the sketch comes within 1e-7 of it (float32 rounding
          // of A and of the products enters only to second order: (1e-6·σ₁ / tail)² ≲ 1e-9 here).
          assert.ok(err >= best * (1 - 1e-10), `below the Eckart–Young optimum?`);
          assert.ok(err <= best * (1 + 1e-7), `${m}×${n}: error ${err} vs optimum ${best}`);
        }
      });
    });
  }
}

test("svdTruncated: same seed same result; large k falls back to the exact SVD; options validated", () => {
  const a = withSingularValues(120, 100, Array.from({ length: 100 }, (_, i) => 0.9 ** i), 9);
  const r1 = svdTruncated(a, 5, { seed: 3 }), r2 = svdTruncated(a, 5, { seed: 3 });
  assert.deepEqual(
    svdTruncated(a, 5, { seed: 3, precision: "f64" }).s,
    svdTruncated(a, 5, { seed: 3, precision: "f64" }).s,
  );
  assert.deepEqual(r1.s, r2.s);
  const big = svdTruncated(a, 45); // l = 55 ≥ 100/2: exact
  const ex = svd(a);
  for (let i = 0; i < 45; i++) assert.ok(Math.abs(big.s[i] - ex.s[i]) <= 1e-14 * ex.s[0]);
  assert.equal(svdTruncated(a, 0).s.length, 0);
  assert.throws(() => svdTruncated(a, 101), OptionError);
  assert.throws(() => svdTruncated(a, 2.5), OptionError);
  assert.throws(() => svdTruncated(a, 2, { oversample: -1 }), OptionError);
  assert.throws(() => svdTruncated(a, 2, { powerIterations: 0.5 }), OptionError);
  // @ts-expect-error: a wrong value must be rejected at run time too
  assert.throws(() => svdTruncated(a, 2, { precision: "f16" }), OptionError);
});
