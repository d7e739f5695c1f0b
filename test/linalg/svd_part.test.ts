/**
 * The partial factorisations SVD-LLM uses: `svdPart` (all σ, only the leading vectors asked for), `qrR` and
 * `qrCompact` (R alone; Q applied as reflectors), `matmulLowerInto` (A·L for lower triangular L). Each must
 * agree with the full factorisation or product up to rounding, on both backends.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { gemm64 } from "../../src/linalg/factor_kernels.ts";
import type { Matrix64 } from "../../src/linalg/matrix.ts";
import { qr, qrCompact, qrR } from "../../src/linalg/qr.ts";
import { createRng, randomNormal } from "../../src/linalg/random.ts";
import { svd, svdPart } from "../../src/linalg/svd.ts";
import { matmulLowerInto } from "../../src/linalg/trmm.ts";
import { BACKENDS, diffNorm, EPS, fro, withBackend } from "./factor_helpers.ts";

/** |⟨x, y⟩| for column j of u1 and column j of u2 (m×k each): 1 when equal up to sign. */
function columnAlignment(u1: Matrix64, u2: Matrix64, j: number): number {
  let dot = 0;
  for (let i = 0; i < u1.rows; i++) dot += u1.data[i * u1.cols + j] * u2.data[i * u2.cols + j];
  return Math.abs(dot);
}

function rowsT(v: Matrix64): Matrix64 {
  const out = new Float64Array(v.rows * v.cols);
  for (let i = 0; i < v.rows; i++) {
    for (let j = 0; j < v.cols; j++) out[j * v.rows + i] = v.data[i * v.cols + j];
  }
  return { rows: v.cols, cols: v.rows, data: out };
}

for (const backend of BACKENDS) {
  test(`svdPart (${backend}): σ equal to svd's, leading vectors equal up to sign (QR-iteration and D&C sizes)`, () => {
    withBackend(backend, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 2, max: 140 }),
          fc.integer({ min: 2, max: 140 }),
          fc.double({ min: 0, max: 1, noNaN: true }),
          fc.double({ min: 0, max: 1, noNaN: true }),
          fc.integer({ min: 0, max: 1 << 30 }),
          (m, n, fl, fr, seed) => {
            // Distinct, well separated σ so that the singular vectors are determined up to sign.
            const r = Math.min(m, n);
            const a = randomNormal(m, n, createRng(seed));
            const full = svd(a);
            const kl = Math.floor(fl * r), kr = Math.floor(fr * r);
            const part = svdPart(a, { left: kl, right: kr });
            const tol = 50 * Math.max(m, n) * EPS;
            for (let i = 0; i < r; i++) assert.ok(Math.abs(part.s[i] - full.s[i]) <= tol * full.s[0]);
            assert.equal(part.u === undefined, kl === 0);
            assert.equal(part.vt === undefined, kr === 0);
            // Vectors of well-separated σ (gap ≥ 1e-3·σ₁ on both sides) must match.
            const sep = (j: number) =>
              (j === 0 || full.s[j - 1] - full.s[j] > 1e-3 * full.s[0]) &&
              (j === r - 1 || full.s[j] - full.s[j + 1] > 1e-3 * full.s[0]);
            if (part.u) {
              assert.equal(part.u.rows, m);
              assert.equal(part.u.cols, kl);
              const fu = { rows: m, cols: kl, data: new Float64Array(m * kl) };
              for (let i = 0; i < m; i++) {
                for (let j = 0; j < kl; j++) fu.data[i * kl + j] = full.u.data[i * r + j];
              }
              for (let j = 0; j < kl; j++) {
                if (sep(j)) assert.ok(Math.abs(columnAlignment(part.u, fu, j) - 1) < 1e-8);
              }
            }
            if (part.vt) {
              assert.equal(part.vt.rows, kr);
              assert.equal(part.vt.cols, n);
              const pv = rowsT(part.vt),
                fv = rowsT({ rows: kr, cols: n, data: full.vt.data.slice(0, kr * n) });
              for (let j = 0; j < kr; j++) {
                if (sep(j)) assert.ok(Math.abs(columnAlignment(pv, fv, j) - 1) < 1e-8);
              }
            }
          },
        ),
        { numRuns: 25 },
      );
    });
  });

  test(`qrR, qrCompact (${backend}): R as qr's, (Q·Y)ᵀ as the product with qr's Q`, () => {
    withBackend(backend, () => {
      for (const [m, n, k] of [[120, 40, 7], [300, 100, 37], [90, 90, 90], [40, 70, 5]]) {
        const a = randomNormal(m, n, createRng(m + n));
        const f = qr(a), r = Math.min(m, n);
        assert.ok(diffNorm(qrR(a), f.r) <= 10 * m * EPS * fro(f.r));
        const c = qrCompact(a);
        assert.ok(diffNorm(c.r, f.r) <= 10 * m * EPS * fro(f.r));
        const yt = randomNormal(k, r, createRng(k));
        const want = gemm64(yt, f.q, { transB: true }); // Yᵀ·Qᵀ = (Q·Y)ᵀ, k×m
        const got = c.qTimesT(yt);
        assert.equal(got.rows, k);
        assert.equal(got.cols, m);
        assert.ok(diffNorm(got, want) <= 20 * m * EPS * fro(want), `${m}×${n}: (Q·Y)ᵀ differs`);
      }
      assert.throws(() =>
        qrCompact(randomNormal(10, 4, createRng(1))).qTimesT(randomNormal(2, 5, createRng(2)))
      );
    });
  });

  test(`matmulLowerInto (${backend}): A·L equal to the full product for lower triangular L`, () => {
    withBackend(backend, () => {
      for (const [rows, n] of [[7, 3], [100, 64], [130, 257], [64, 700]]) {
        const a = randomNormal(rows, n, createRng(rows));
        const l = randomNormal(n, n, createRng(n));
        for (let i = 0; i < n; i++) l.data.fill(0, i * n + i + 1, (i + 1) * n);
        const want = gemm64(a, l);
        const got = matmulLowerInto(a, l, { rows, cols: n, data: new Float64Array(rows * n) });
        assert.ok(diffNorm(got, want) <= 10 * n * EPS * fro(want), `${rows}×${n}`);
      }
      assert.throws(() =>
        matmulLowerInto(
          randomNormal(2, 3, createRng(1)),
          randomNormal(2, 2, createRng(1)),
          randomNormal(2, 3, createRng(1)),
        )
      );
    });
  });
}
