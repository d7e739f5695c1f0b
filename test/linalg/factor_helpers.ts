/**
 * Shared fixtures of the factorisation tests: matrices with known singular values, norms, and a way to run
 * a test body under every available backend (TypeScript, and WASM when it loaded).
 *
 * @module
 */
import { initLinalg } from "../../src/linalg/backend.ts";
import { type Matrix, type Matrix64, transpose } from "../../src/linalg/matrix.ts";
import { qr } from "../../src/linalg/qr.ts";
import { createRng, randomNormal, type Rng } from "../../src/linalg/random.ts";
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
