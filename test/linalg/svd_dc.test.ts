/**
 * Properties of the paths the SVD takes from order 48 on: divide-and-conquer bidiagonal SVD (deflation of
 * tiny z and of equal σ, the secular roots, Löwner's z) and, beyond 96 columns, the blocked
 * bidiagonalisation. Both backends; the two must agree.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import type { Matrix64 } from "../../src/linalg/matrix.ts";
import { orthonormalityError, reconstruct } from "../../src/linalg/qr.ts";
import { createRng, randomNormal } from "../../src/linalg/random.ts";
import { svd } from "../../src/linalg/svd.ts";
import {
  BACKENDS,
  checkSigma,
  checkSvd,
  fro,
  rowsAsColumns,
  withBackend,
  withSingularValues,
} from "./factor_helpers.ts";

/** An m×n (m ≥ n) upper bidiagonal matrix from d and e (zero rows below). */
function bidiagonal(m: number, d: number[], e: number[]): Matrix64 {
  const n = d.length, a = new Float64Array(m * n);
  for (let i = 0; i < n; i++) {
    a[i * n + i] = d[i];
    if (i + 1 < n) a[i * n + i + 1] = e[i];
  }
  return { rows: m, cols: n, data: a };
}

for (const backend of BACKENDS) {
  test(`svd (${backend}), orders 40–140: random shapes, fast-check properties`, async () => {
    await withBackend(backend, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 40, max: 140 }),
          fc.integer({ min: 40, max: 140 }),
          fc.integer(),
          (m, n, seed) => {
            const a = randomNormal(m, n, createRng(seed));
            checkSvd(a, svd(a), `${m}×${n}`);
          },
        ),
        { numRuns: 12 },
      );
    });
  });

  test(`svd (${backend}), divide and conquer: clusters, exact zeros, condition 1e12, known σ`, async () => {
    await withBackend(backend, () => {
      for (const [m, n, seed] of [[130, 120, 1], [120, 130, 2], [200, 110, 3], [150, 150, 4]]) {
        const r = Math.min(m, n);
        const graded = Array.from({ length: r }, (_, i) => 10 ** (-12 * i / (r - 1)));
        const a = withSingularValues(m, n, graded, seed);
        const res = svd(a);
        checkSvd(a, res, `graded ${m}×${n}`);
        checkSigma(res.s, graded, `graded ${m}×${n}`);
        // Clusters of equal σ (deflation by rotation) and a block of exact zeros (tiny z).
        const clustered = graded.map((_, i) => i < r / 3 ? 2 : i < (2 * r) / 3 ? 1e-6 : 0);
        const b = withSingularValues(m, n, clustered, seed + 10);
        const rb = svd(b);
        checkSvd(b, rb, `clustered ${m}×${n}`);
        checkSigma(rb.s, clustered, `clustered ${m}×${n}`);
      }
    });
  });
}

test("svd, divide and conquer: bidiagonal inputs (zeros, equal and graded diagonals, tiny couplings)", () => {
  const n = 100, rng = createRng(11);
  const cases: [string, number[], number[]][] = [
    ["identity", Array(n).fill(1), Array(n - 1).fill(0)],
    ["equal d, tiny e", Array(n).fill(1), Array.from({ length: n - 1 }, () => 1e-17 * rng.normal())],
    [
      "zero diagonal",
      Array.from({ length: n }, (_, i) => i % 3 === 0 ? 0 : rng.normal()),
      Array.from(
        { length: n - 1 },
        () => rng.normal(),
      ),
    ],
    [
      "graded",
      Array.from({ length: n }, (_, i) => 10 ** (-i / 10)),
      Array.from({ length: n - 1 }, (_, i) => 10 ** (-i / 10)),
    ],
    [
      "sparse",
      Array.from({ length: n }, () => rng.next() < 0.3 ? 0 : rng.normal()),
      Array.from(
        { length: n - 1 },
        () => rng.next() < 0.3 ? 0 : rng.normal(),
      ),
    ],
  ];
  for (const [label, d, e] of cases) {
    for (const m of [n, n + 37]) {
      const a = bidiagonal(m, d, e);
      const res = svd(a);
      checkSvd(a, res, `${label} ${m}×${n}`);
      if (e.every((v) => v === 0)) checkSigma(res.s, d.map(Math.abs), label, 1e-13, 1e-13);
    }
  }
  // A diagonal with repeated and zero entries: σ exactly known.
  const diag = Array.from({ length: n }, (_, i) => [3, 3, 0, -2, 1e-9][i % 5]);
  const res = svd(bidiagonal(n, diag, Array(n - 1).fill(0)));
  checkSigma(res.s, diag.map(Math.abs), "diagonal", 1e-13, 1e-13);
});

test("svd, divide and conquer: rank 1, a single (subnormal) entry, the zero matrix", () => {
  const rng = createRng(31);
  const x = randomNormal(200, 1, rng), y = randomNormal(1, 150, rng);
  const rank1 = { rows: 200, cols: 150, data: new Float64Array(200 * 150) };
  for (let i = 0; i < 200; i++) for (let j = 0; j < 150; j++) rank1.data[i * 150 + j] = x.data[i] * y.data[j];
  const r1 = svd(rank1);
  checkSvd(rank1, r1, "rank 1");
  assert.ok(Math.abs(r1.s[0] - fro(x) * fro(y)) <= 1e-13 * r1.s[0], "rank 1: σ₁ = ‖x‖·‖y‖");
  assert.ok(r1.s[1] <= 1e-14 * r1.s[0], `rank 1: σ₂ = ${r1.s[1]}`);
  for (const v of [1e-310, 2.5, 0]) {
    const a = { rows: 100, cols: 100, data: new Float64Array(10000) };
    a.data[55] = v;
    const res = svd(a);
    assert.equal(res.s[0], v, `single entry ${v}`);
    assert.ok(res.s.slice(1).every((t) => t === 0), `single entry ${v}: other σ are 0`);
    assert.ok(orthonormalityError(res.u) <= 1e-14 && orthonormalityError(rowsAsColumns(res.vt)) <= 1e-14);
    const back = reconstruct(res.u, res.s, res.vt);
    assert.ok(back.data.every((t, i) => Math.abs(t - a.data[i]) <= 1e-15 * v), `single entry ${v}: A = UΣVᵀ`);
  }
});

test("svd: the TypeScript and WASM paths agree beyond the divide-and-conquer and blocking thresholds", async () => {
  if (BACKENDS.length < 2) return;
  const a = randomNormal(190, 130, createRng(21));
  const [ts, wasm] = [
    await withBackend("ts", () => svd(a)),
    await withBackend("wasm", () => svd(a)),
  ];
  for (let i = 0; i < 130; i++) {
    assert.ok(Math.abs(ts.s[i] - wasm.s[i]) <= 1e-13 * ts.s[0], `σ${i}: ${ts.s[i]} vs ${wasm.s[i]}`);
  }
  // Singular vectors agree up to sign (the spectrum of a random matrix is simple).
  for (let q = 0; q < 130; q += 13) {
    let dot = 0;
    for (let j = 0; j < 130; j++) dot += ts.vt.data[q * 130 + j] * wasm.vt.data[q * 130 + j];
    assert.ok(Math.abs(Math.abs(dot) - 1) < 1e-9, `v${q}: |⟨ts, wasm⟩| = ${Math.abs(dot)}`);
  }
});
