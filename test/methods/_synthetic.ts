// Synthetic layers for method tests: a weight with a decaying spectrum and activations whose channels have
// very different scales and correlations (as real LLM activations do: a few outlier channels).
import { createRng } from "../../src/linalg/random.ts";
import type { Matrix, Matrix64 } from "../../src/linalg/matrix.ts";
import { GramObserver } from "../../src/calib/gram.ts";
import { AbsMeanObserver } from "../../src/calib/abs_mean.ts";

export function randomWeight(m: number, n: number, seed: number): Matrix {
  const rng = createRng(seed);
  const d = new Float32Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) d[i * n + j] = rng.normal() / Math.sqrt(n);
  return { rows: m, cols: n, data: d };
}

/** T×n activations: mixing of n latent normals, channel j scaled by 1 + 10·[j % 7 == 0]. */
export function randomActivations(t: number, n: number, seed: number, dead: number[] = []): Matrix {
  const rng = createRng(seed);
  const mix = new Float64Array(n * n);
  for (let i = 0; i < n * n; i++) mix[i] = rng.normal() / Math.sqrt(n);
  for (let i = 0; i < n; i++) mix[i * n + i] += 1;
  const x = new Float32Array(t * n);
  const z = new Float64Array(n);
  for (let r = 0; r < t; r++) {
    for (let i = 0; i < n; i++) z[i] = rng.normal();
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += z[i] * mix[i * n + j];
      x[r * n + j] = s * (j % 7 === 0 ? 11 : 1);
    }
    for (const j of dead) x[r * n + j] = 0;
  }
  return { rows: t, cols: n, data: x };
}

export function gramOf(x: Matrix, batch = 37): Matrix64 {
  const o = new GramObserver("synthetic", x.cols);
  for (let r = 0; r < x.rows; r += batch) {
    const e = Math.min(x.rows, r + batch);
    o.addBatch({ rows: e - r, cols: x.cols, data: x.data.subarray(r * x.cols, e * x.cols) });
  }
  return o.gram();
}

export function absMeanOf(x: Matrix): Float64Array {
  const o = new AbsMeanObserver("synthetic", x.cols);
  o.addBatch(x);
  return o.mean();
}

/** ‖(W − AB) Xᵀ‖_F directly, in float64. */
export function dataLoss(w: Matrix, a: Matrix, b: Matrix, x: Matrix): number {
  const m = w.rows, n = w.cols, k = a.cols;
  const e = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let q = 0; q < k; q++) s += a.data[i * k + q] * b.data[q * n + j];
      e[i * n + j] = w.data[i * n + j] - s;
    }
  }
  let tot = 0;
  for (let t = 0; t < x.rows; t++) {
    for (let i = 0; i < m; i++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += e[i * n + j] * x.data[t * n + j];
      tot += s * s;
    }
  }
  return Math.sqrt(tot);
}

export function relDiff(a: Matrix, b: Matrix): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.data.length; i++) {
    num += (a.data[i] - b.data[i]) ** 2;
    den += b.data[i] ** 2;
  }
  return Math.sqrt(num / den);
}

export function product(a: Matrix, b: Matrix): Matrix {
  const m = a.rows, k = a.cols, n = b.cols;
  const d = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let q = 0; q < k; q++) s += a.data[i * k + q] * b.data[q * n + j];
      d[i * n + j] = s;
    }
  }
  return { rows: m, cols: n, data: d };
}
