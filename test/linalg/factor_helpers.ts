/**
 * Shared fixtures of the factorisation tests: matrices with known singular values, norms, and a way to run
 * a test body under every available backend (TypeScript, and WASM when it loaded).
 *
 * @module
 */
import assert from "node:assert/strict";
import { initLinalg } from "../../src/linalg/backend.ts";
import { type Matrix, type Matrix64, transpose } from "../../src/linalg/matrix.ts";
import { orthonormalityError, qr, reconstruct } from "../../src/linalg/qr.ts";
import { createRng, randomNormal, type Rng } from "../../src/linalg/random.ts";
import type { SvdResult } from "../../src/linalg/svd.ts";
import { wasmRuntime } from "../../src/linalg/wasm/runtime.ts";

/** Machine epsilon of float64. */
export const EPS = 2 ** -52;

/** The backends to test: always "ts", plus "wasm" when the kernels loaded. */
export const BACKENDS: ("ts" | "wasm")[] = wasmRuntime() ? ["ts", "wasm"] : ["ts"];

/** Run `fn` with the given backend active, restoring the default afterwards. */
export async function withBackend<T>(backend: "ts" | "wasm", fn: () => T | Promise<T>): Promise<T> {
  await initLinalg({ backend });
  try {
    return await fn();
  } finally {
    await initLinalg({ backend: "auto" });
  }
}

/** A random m×r matrix with orthonormal columns (r ≤ m). */
export function randomOrthonormal(m: number, r: number, rng: Rng): Matrix64 {
  return qr(randomNormal(m, r, rng)).q;
}

/** A = U·diag(sigma)·Vᵀ with random orthonormal U (m×r), V (n×r), r = sigma.length ≤ min(m, n). */
export function withSingularValues(m: number, n: number, sigma: ArrayLike<number>, seed: number): Matrix64 {
  const rng = createRng(seed);
  const r = sigma.length;
  const u = randomOrthonormal(m, r, rng), v = randomOrthonormal(n, r, rng);
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let q = 0; q < r; q++) {
      const f = u.data[i * r + q] * sigma[q];
      if (f === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j] += f * v.data[j * r + q];
    }
  }
  return { rows: m, cols: n, data: out };
}

/** Frobenius norm of A − B. */
export function diffNorm(
  a: Matrix<Float32Array | Float64Array>,
  b: Matrix<Float32Array | Float64Array>,
): number {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += (a.data[i] - b.data[i]) ** 2;
  return Math.sqrt(s);
}

/** Frobenius norm. */
export function fro(a: Matrix<Float32Array | Float64Array>): number {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += a.data[i] * a.data[i];
  return Math.sqrt(s);
}

/** Vᵀ given as r×n → V n×r, for orthonormality checks of rows. */
export function rowsAsColumns(vt: Matrix64): Matrix64 {
  return transpose(vt);
}

/** Every structural property of a thin SVD of `a`, with tolerances scaled by size. */
export function checkSvd(a: Matrix64, res: SvdResult, label: string): void {
  const m = a.rows, n = a.cols, r = Math.min(m, n);
  const tol = 20 * Math.max(m, n) * EPS;
  assert.equal(res.u.rows, m);
  assert.equal(res.u.cols, r);
  assert.equal(res.s.length, r);
  assert.equal(res.vt.rows, r);
  assert.equal(res.vt.cols, n);
  const norm = fro(a), err = diffNorm(a, reconstruct(res.u, res.s, res.vt));
  assert.ok(err <= tol * Math.max(norm, 1e-300), `${label}: A ≠ UΣVᵀ (${err / norm})`);
  assert.ok(orthonormalityError(res.u) <= tol, `${label}: UᵀU ≠ I (${orthonormalityError(res.u)})`);
  assert.ok(orthonormalityError(rowsAsColumns(res.vt)) <= tol, `${label}: VᵀV ≠ I`);
  for (let i = 0; i < r; i++) {
    assert.ok(res.s[i] >= 0, `${label}: σ${i} < 0`);
    if (i > 0) assert.ok(res.s[i] <= res.s[i - 1], `${label}: σ not descending at ${i}`);
  }
}

/**
 * Known σ (`want`, in any order): |got − want| ≤ absTol·σ₁ for all (absolute ~ε·‖A‖ for the small ones),
 * and ≤ relTol·σᵢ for σᵢ ≥ 1e-3·σ₁ (relative accuracy for the big ones).
 */
export function checkSigma(
  got: Float64Array,
  want: readonly number[],
  label: string,
  absTol = 1e-12,
  relTol = 1e-10,
): void {
  const sorted = [...want].sort((x, y) => y - x);
  for (let i = 0; i < sorted.length; i++) {
    const err = Math.abs(got[i] - sorted[i]);
    assert.ok(err <= absTol * sorted[0], `${label}: σ${i} = ${got[i]}, want ${sorted[i]} (abs)`);
    if (sorted[i] >= 1e-3 * sorted[0]) {
      assert.ok(err <= relTol * sorted[i], `${label}: σ${i} = ${got[i]}, want ${sorted[i]}`);
    }
  }
}

/** sqrt(Σ_{i≥k} σ_i²): the Frobenius error of the best rank-k approximation (Eckart–Young). */
export function tail(s: ArrayLike<number>, k: number): number {
  let t = 0;
  for (let i = k; i < s.length; i++) t += s[i] * s[i];
  return Math.sqrt(t);
}
