/**
 * FWSVD with the Kronecker-factored (K-FAC) Fisher, F ≈ E[x xᵀ] ⊗ E[dy dyᵀ]: the factors minimise the
 * Fisher-weighted error tr((W − AB)ᵀ G_out (W − AB) G_in) over all rank-k products (Eckart–Young in the weighted
 * norm, checked against an independent float64 evaluation of the trace), that minimum is the σ tail of
 * L_oᵀ·W·L_i, and the known special cases hold: G_out = I is SVD-LLM, diagonal factors are the diagonal
 * two-sided FWSVD.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { compressFwsvd, compressFwsvdKfac, type KfacFactors } from "../../src/methods/fwsvd.ts";
import { compressSvd } from "../../src/methods/svd.ts";
import { compressSvdLlm } from "../../src/methods/svdllm.ts";
import { ShapeError } from "../../src/errors.ts";
import { type Matrix, type Matrix64, matrix64 } from "../../src/linalg/matrix.ts";
import { createRng } from "../../src/linalg/random.ts";
import { gramOf, product, randomActivations, randomWeight, relDiff } from "./_synthetic.ts";

/** tr(Eᵀ G_o E G_i) with E = W − AB (or W − P for a given product P), in float64, straight from the definition. */
function fisherError(w: Matrix, p: Matrix, f: KfacFactors): number {
  const m = w.rows, n = w.cols, go = f.output.data, gi = f.input.data;
  const e = Float64Array.from(w.data, (v, i) => v - p.data[i]);
  let s = 0;
  for (let i = 0; i < m; i++) {
    for (let i2 = 0; i2 < m; i2++) {
      for (let j = 0; j < n; j++) {
        for (let j2 = 0; j2 < n; j2++) s += e[i * n + j] * go[i * m + i2] * e[i2 * n + j2] * gi[j2 * n + j];
      }
    }
  }
  return Math.sqrt(Math.max(s, 0));
}

function factorsOf(m: number, n: number, seed: number): KfacFactors {
  return {
    input: gramOf(randomActivations(4 * n + 3, n, seed + 1)),
    output: gramOf(randomActivations(4 * m + 3, m, seed + 2)),
  };
}

const shapes = fc.tuple(fc.integer({ min: 2, max: 10 }), fc.integer({ min: 2, max: 10 }), fc.nat());

test("fwsvd kfac: the weighted error is the σ tail of L_oᵀ·W·L_i and no rank-k product does better", () => {
  fc.assert(
    fc.property(shapes, ([m, n, seed]) => {
      const w = randomWeight(m, n, seed), k = 1 + (seed % Math.min(m, n)), f = factorsOf(m, n, seed);
      const r = compressFwsvdKfac(w, f, k, { damping: 0, outputDamping: 0 });
      assert.equal(r.report.shift, 0);
      const best = fisherError(w, product(r.a, r.b), f);
      const s = r.report.singularValues;
      const tail = Math.sqrt(s.slice(k).reduce((t, v) => t + v * v, 0));
      const scale = Math.sqrt(s.reduce((t, v) => t + v * v, 0));
      assert.ok(Math.abs(best - tail) <= 1e-4 * scale, `error ${best} vs σ tail ${tail}`);
      // Every other rank-k product is at least as far, in the weighted norm: plain SVD, SVD-LLM (input side
      // only), diagonal two-sided FWSVD, and random rank-k perturbations of the optimum.
      const others: Matrix[] = [
        product(compressSvd(w, k).a, compressSvd(w, k).b),
        (({ a, b }) => product(a, b))(compressSvdLlm(w, { gram: f.input }, k)),
        (({ a, b }) => product(a, b))(compressFwsvd(w, diag(f.output), k, "both", diag(f.input))),
      ];
      const rng = createRng(seed + 9);
      for (let t = 0; t < 3; t++) {
        const a = { ...r.a, data: r.a.data.map((v) => v + 0.05 * rng.normal()) };
        const b = { ...r.b, data: r.b.data.map((v) => v + 0.05 * rng.normal()) };
        others.push(product(a, b));
      }
      for (const p of others) assert.ok(best <= fisherError(w, p, f) + 1e-5 * scale);
    }),
    { numRuns: 25 },
  );
});

function diag(g: Matrix64): Float64Array {
  return Float64Array.from({ length: g.rows }, (_, i) => g.data[i * g.cols + i]);
}

function identity(n: number): Matrix64 {
  const g = matrix64(n, n);
  for (let i = 0; i < n; i++) g.data[i * n + i] = 1;
  return g;
}

function diagonal(d: Float64Array): Matrix64 {
  const g = matrix64(d.length, d.length);
  d.forEach((v, i) => (g.data[i * d.length + i] = v));
  return g;
}

test("fwsvd kfac: G_out = I is SVD-LLM; diagonal factors are the diagonal two-sided FWSVD", () => {
  fc.assert(
    fc.property(shapes, ([m, n, seed]) => {
      const w = randomWeight(m, n, seed), k = 1 + (seed % Math.min(m, n)), f = factorsOf(m, n, seed);
      const kf = compressFwsvdKfac(w, { input: f.input, output: identity(m) }, k, {
        damping: 0,
        outputDamping: 0,
      });
      const sl = compressSvdLlm(w, { gram: f.input }, k);
      assert.ok(relDiff(product(kf.a, kf.b), product(sl.a, sl.b)) < 1e-4);
      const rng = createRng(seed);
      const dOut = Float64Array.from({ length: m }, () => Math.exp(2 * rng.normal()));
      const dIn = Float64Array.from({ length: n }, () => Math.exp(2 * rng.normal()));
      const kd = compressFwsvdKfac(w, { input: diagonal(dIn), output: diagonal(dOut) }, k, {
        damping: 0,
        outputDamping: 0,
      });
      const fd = compressFwsvd(w, dOut, k, "both", dIn);
      assert.ok(relDiff(product(kd.a, kd.b), product(fd.a, fd.b)) < 1e-4);
    }),
    { numRuns: 25 },
  );
});

test("fwsvd kfac: damping λ weights with G + λ·mean(diag G)·I; bad factors and damping are refused", () => {
  const w = randomWeight(6, 5, 1), f = factorsOf(6, 5, 1);
  const lambda = 0.3;
  const damped = (g: Matrix64) => {
    const mean = diag(g).reduce((s, v) => s + v, 0) / g.rows;
    const d = { ...g, data: g.data.slice() };
    for (let i = 0; i < g.rows; i++) d.data[i * g.cols + i] += lambda * mean;
    return d;
  };
  const a = compressFwsvdKfac(w, f, 2, { damping: lambda, outputDamping: lambda });
  const b = compressFwsvdKfac(w, { input: damped(f.input), output: damped(f.output) }, 2, {
    damping: 0,
    outputDamping: 0,
  });
  assert.ok(relDiff(product(a.a, a.b), product(b.a, b.b)) < 1e-5);
  // The output damping alone moves the weighting towards SVD-LLM's whitening (G_out ∝ I) as it grows.
  const sl = product(
    compressSvdLlm(w, { gram: f.input }, 2, { damping: 0 }).a,
    compressSvdLlm(w, { gram: f.input }, 2, { damping: 0 }).b,
  );
  const towards = [0, 1, 100, 1e6].map((od) => {
    const k = compressFwsvdKfac(w, f, 2, { damping: 0, outputDamping: od });
    return relDiff(product(k.a, k.b), sl);
  });
  assert.ok(towards[3] < 1e-4 && towards[0] > 1e-2, `${towards}`);
  assert.ok(towards[0] > towards[1] && towards[1] > towards[2], `${towards}`);
  assert.throws(
    () => compressFwsvdKfac(w, { input: f.output, output: f.input }, 2),
    (e) =>
      e instanceof ShapeError &&
      /K-FAC factors 5×5 \(output\) and 6×6 \(input\) for a weight of 6×5/.test(e.message),
  );
  assert.throws(
    () => compressFwsvdKfac(w, f, 2, { damping: -1 }),
    /damping must be a finite number ≥ 0, got -1/,
  );
  assert.throws(() => compressFwsvd(w, new Float64Array(6), 2, "both"), /needs the input features' Fisher/);
});
