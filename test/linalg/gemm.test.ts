import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { gemmInto, matmul, matmul64 } from "../../src/linalg/gemm.ts";
import { linalgInfo } from "../../src/linalg/backend.ts";
import { type FloatArray, type Matrix, matrix, matrix64, transpose } from "../../src/linalg/matrix.ts";
import { ShapeError } from "../../src/errors.ts";
import { fillUniform } from "../../src/linalg/random.ts";

const EPS32 = 2 ** -23;
const EPS64 = 2 ** -52;

/** Deterministic pseudo-random values from a seed (xorshift, {@link fillUniform}), in [-scale, scale]. */
function fill<T extends FloatArray>(out: T, seed: number, scale = 1, integers = false): T {
  if (!integers) return fillUniform(out, seed, scale);
  const u = fillUniform(new Float64Array(out.length), seed); // 2u − 1, u uniform in [0, 1)
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(((u[i] + 1) / 2) * (2 * scale + 1)) - scale;
  return out;
}

/** Reference op(A)·op(B) in float64 by the definition, with no blocking or packing. */
function reference(a: Matrix<FloatArray>, b: Matrix<FloatArray>, ta: boolean, tb: boolean): Float64Array {
  const m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols, n = tb ? b.rows : b.cols;
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) {
        const av = ta ? a.data[p * a.cols + i] : a.data[i * a.cols + p];
        const bv = tb ? b.data[j * b.cols + p] : b.data[p * b.cols + j];
        s += av * bv;
      }
      out[i * n + j] = s;
    }
  }
  return out;
}

function maxAbs(d: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < d.length; i++) m = Math.max(m, Math.abs(d[i]));
  return m;
}

function maxDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  assert.equal(x.length, y.length);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  return m;
}

const dim = fc.oneof(fc.integer({ min: 1, max: 70 }), fc.constantFrom(1, 2, 3, 5, 7, 13, 31, 61, 67));
const shape = fc.record({ m: dim, n: dim, k: dim, ta: fc.boolean(), tb: fc.boolean(), seed: fc.nat() });

function operands<T extends FloatArray>(
  make: (r: number, c: number) => Matrix<T>,
  s: { m: number; n: number; k: number; ta: boolean; tb: boolean; seed: number },
  integers: boolean,
) {
  const a = make(s.ta ? s.k : s.m, s.ta ? s.m : s.k);
  const b = make(s.tb ? s.n : s.k, s.tb ? s.k : s.n);
  fill(a.data, s.seed, integers ? 8 : 1 + (s.seed % 5), integers);
  fill(b.data, s.seed + 7, integers ? 8 : 1, integers);
  return { a, b };
}

test("the wasm backend is active at import (no initLinalg call)", () => {
  const info = linalgInfo();
  assert.equal(info.backend, "wasm", "WebAssembly SIMD should load in Deno and Bun");
  assert.equal(info.simd, true);
  assert.equal(info.threads, 1);
});

test("known products: x·Wᵀ, identity on both sides, a 2×3·3×2 by hand", () => {
  for (const backend of ["wasm", "ts"] as const) {
    const x = matrix(1, 2, new Float32Array([1, 2]));
    const w = matrix(3, 2, new Float32Array([1, 0, 0, 1, 1, 1]));
    assert.deepEqual(Array.from(matmul(x, w, { transB: true, backend }).data), [1, 2, 3]);
    const a = matrix(2, 3, new Float32Array([1, 2, 3, 4, 5, 6]));
    const b = matrix(3, 2, new Float32Array([7, 8, 9, 10, 11, 12]));
    assert.deepEqual(Array.from(matmul(a, b, { backend }).data), [58, 64, 139, 154]);
    // Aᵀ·Bᵀ = (B·A)ᵀ: B·A = [[39,54,69],[49,68,87],[59,82,105]].
    assert.deepEqual(
      Array.from(matmul(a, b, { transA: true, transB: true, backend }).data),
      [39, 49, 59, 54, 68, 82, 69, 87, 105],
    );
    const n = 37;
    const eye = matrix(n, n);
    for (let i = 0; i < n; i++) eye.data[i * n + i] = 1;
    const r = matrix(n, 23, fill(new Float32Array(n * 23), 3));
    assert.deepEqual(matmul(eye, r, { backend }).data, r.data);
    const rt = matrix(23, n, fill(new Float32Array(n * 23), 4));
    assert.deepEqual(matmul(rt, eye, { backend }).data, rt.data);
    assert.deepEqual(matmul(eye, rt, { transB: true, backend }).data, transpose(rt).data);
  }
});

test("wasm float32 equals TS exactly on small integers (every shape 1..70, every transpose)", () => {
  // Integer products and sums below 2^24 are exact in float32, so any indexing slip shows as a difference.
  fc.assert(
    fc.property(shape, (s) => {
      const { a, b } = operands(matrix, s, true);
      const w = matmul(a, b, { transA: s.ta, transB: s.tb, backend: "wasm" });
      const t = matmul(a, b, { transA: s.ta, transB: s.tb, backend: "ts" });
      assert.equal(w.rows, s.m);
      assert.equal(w.cols, s.n);
      assert.deepEqual(w.data, t.data);
      assert.deepEqual(Array.from(t.data), Array.from(reference(a, b, s.ta, s.tb)));
    }),
    { numRuns: 150 },
  );
});

test("wasm float32 agrees with the float64 definition within k·ε·max|a|·max|b|", () => {
  fc.assert(
    fc.property(shape, (s) => {
      const { a, b } = operands(matrix, s, false);
      const ref = reference(a, b, s.ta, s.tb);
      const tol = 4 * s.k * EPS32 * maxAbs(a.data) * maxAbs(b.data);
      for (const backend of ["wasm", "ts"] as const) {
        const c = matmul(a, b, { transA: s.ta, transB: s.tb, backend });
        const d = maxDiff(c.data, ref);
        assert.ok(d <= tol, `${backend} ${JSON.stringify(s)}: error ${d} > ${tol}`);
      }
    }),
    { numRuns: 100 },
  );
});

test("matmul64 (wasm dgemm) agrees with the definition within k·ε64·max|a|·max|b|", () => {
  fc.assert(
    fc.property(shape, (s) => {
      const { a, b } = operands(matrix64, s, false);
      const ref = reference(a, b, s.ta, s.tb);
      const tol = 4 * s.k * EPS64 * maxAbs(a.data) * maxAbs(b.data);
      for (const backend of ["wasm", "ts"] as const) {
        const c = matmul64(a, b, { transA: s.ta, transB: s.tb, backend });
        assert.ok(c.data instanceof Float64Array);
        const d = maxDiff(c.data, ref);
        assert.ok(d <= tol, `${backend} ${JSON.stringify(s)}: error ${d} > ${tol}`);
      }
    }),
    { numRuns: 100 },
  );
});

test("blocking edges: sizes across the kernel's panel and cache-block boundaries", () => {
  // k > 256 crosses a k-block (beta handling between blocks), m > 128 an A block, n > 2048 a B block.
  for (const [m, n, k] of [[131, 9, 257], [4, 2051, 3], [129, 17, 513], [3, 5, 600]]) {
    for (const [ta, tb] of [[false, false], [true, true], [false, true], [true, false]]) {
      const s = { m, n, k, ta, tb, seed: m + n + k };
      const { a, b } = operands(matrix64, s, false);
      const c = matmul64(a, b, { transA: ta, transB: tb, backend: "wasm" });
      const d = maxDiff(c.data, reference(a, b, ta, tb));
      const scale = k * maxAbs(a.data) * maxAbs(b.data);
      assert.ok(d <= 4 * EPS64 * scale, `${m}×${n}×${k} ${ta} ${tb}: error ${d}`);
      const a32 = matrix(a.rows, a.cols, Float32Array.from(a.data));
      const b32 = matrix(b.rows, b.cols, Float32Array.from(b.data));
      const c32 = matmul(a32, b32, { transA: ta, transB: tb, backend: "wasm" });
      const d32 = maxDiff(c32.data, reference(a32, b32, ta, tb));
      assert.ok(d32 <= 4 * EPS32 * scale, `f32 ${m}×${n}×${k} ${ta} ${tb}: error ${d32}`);
    }
  }
});

test("gemmInto: C ← alpha·op(A)·op(B) + beta·C for both types and backends; beta = 0 never reads C", () => {
  fc.assert(
    fc.property(
      shape,
      fc.constantFrom(1, -1, 0.5, 0),
      fc.constantFrom(0, 1, -2),
      fc.boolean(),
      (s, alpha, beta, f64) => {
        const make = f64 ? matrix64 : matrix;
        const { a, b } = operands(make as (r: number, c: number) => Matrix<FloatArray>, s, true);
        const ref = reference(a, b, s.ta, s.tb);
        const c0 = fill(f64 ? new Float64Array(s.m * s.n) : new Float32Array(s.m * s.n), s.seed + 1, 8, true);
        if (beta === 0) c0[0] = NaN; // must not leak into the result
        for (const backend of ["wasm", "ts"] as const) {
          const c = { rows: s.m, cols: s.n, data: c0.slice() } as Matrix<FloatArray>;
          const out = gemmInto(a, b, c, { transA: s.ta, transB: s.tb, alpha, beta, backend });
          assert.equal(out, c);
          for (let i = 0; i < ref.length; i++) {
            const want = alpha * ref[i] + (beta === 0 ? 0 : beta * c0[i]);
            // === rather than Object.is: the sign of a zero result is not part of the contract.
            assert.ok(c.data[i] === want, `${backend} f64=${f64} at ${i}: ${c.data[i]} ≠ ${want}`);
          }
        }
      },
    ),
    { numRuns: 80 },
  );
});

test("shape errors name the operation and both shapes", () => {
  const a = matrix(2, 3), b = matrix(2, 3);
  assert.throws(() => matmul(a, b), (e) => e instanceof ShapeError && /matmul: .*2×3.*2×3/.test(e.message));
  assert.throws(() => matmul64(matrix64(2, 3), matrix64(4, 2)), ShapeError);
  assert.throws(() => gemmInto(a, b, matrix(3, 3), { transB: true, backend: "ts" }), ShapeError);
  assert.throws(
    () => gemmInto(a, b, matrix64(2, 2) as unknown as Matrix, { transB: true }),
    /one element type/,
  );
  // Empty dimensions are legal: a k = 0 product is all zeros.
  assert.deepEqual(Array.from(matmul(matrix(2, 0), matrix(0, 3)).data), [0, 0, 0, 0, 0, 0]);
  assert.equal(matmul(matrix(0, 4), matrix(4, 5)).data.length, 0);
});
