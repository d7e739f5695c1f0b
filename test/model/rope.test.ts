/**
 * RoPE: both conventions are rotations that encode relative position, and the two agree once q/k rows are
 * permuted as llama.cpp's converter does — checked on vectors and on a whole model.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { applyRope, cachedRopeTables, permuteQK, ropeFrequencies, ropeTables } from "../../src/model/rope.ts";
import { ShapeError } from "../../src/errors.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";
import { memoryReader, randomWeights, TINY } from "./_random_model.ts";
import { forwardHidden } from "../../src/model/llama.ts";
import { linearPrefix } from "../../src/model/names.ts";

const vec = (n: number) =>
  fc.array(fc.float({ min: -4, max: 4, noNaN: true }), { minLength: n, maxLength: n });

function rope(
  x: number[],
  heads: number,
  hd: number,
  pos: number,
  style: "halves" | "interleaved",
): Float32Array {
  const m: Matrix = { rows: 1, cols: x.length, data: Float32Array.from(x) };
  applyRope(m, heads, hd, ropeTables(64, hd, 10000), style, () => pos);
  return m.data;
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

test("rope: interleaved RoPE on permuted rows equals halves RoPE on unpermuted rows", () => {
  fc.assert(
    fc.property(vec(2 * 8), fc.nat({ max: 63 }), (x, pos) => {
      const heads = 2, hd = 8;
      const halves = rope(x, heads, hd, pos, "halves");
      // permuting a row vector of q is permuting the rows of a (heads·hd)×1 weight
      const px = permuteQK({ rows: x.length, cols: 1, data: Float32Array.from(x) }, heads).data;
      const inter = rope(Array.from(px), heads, hd, pos, "interleaved");
      const back = permuteQK({ rows: x.length, cols: 1, data: inter }, heads, true).data;
      for (let i = 0; i < x.length; i++) assert.ok(Math.abs(back[i] - halves[i]) < 1e-5);
    }),
  );
});

test("rope: rotations keep norms, and q·k depends only on the position difference", () => {
  for (const style of ["halves", "interleaved"] as const) {
    fc.assert(
      fc.property(
        vec(8),
        vec(8),
        fc.nat({ max: 30 }),
        fc.nat({ max: 30 }),
        fc.nat({ max: 30 }),
        (q, k, a, b, s) => {
          const r = rope(q, 1, 8, a, style);
          assert.ok(Math.abs(Math.hypot(...r) - Math.hypot(...q)) < 1e-4 * (1 + Math.hypot(...q)));
          const d1 = dot(rope(q, 1, 8, a + s, style), rope(k, 1, 8, b + s, style));
          const d0 = dot(rope(q, 1, 8, a, style), rope(k, 1, 8, b, style));
          assert.ok(Math.abs(d1 - d0) < 1e-3 * (1 + Math.hypot(...q) * Math.hypot(...k)));
        },
      ),
    );
  }
});

test("rope: permuteQK is a permutation and its inverse undoes it", () => {
  const w: Matrix = { rows: 16, cols: 3, data: Float32Array.from({ length: 48 }, (_, i) => i) };
  const p = permuteQK(w, 2);
  assert.deepEqual([...p.data].sort((a, b) => a - b), [...w.data]);
  assert.deepEqual(permuteQK(p, 2, true).data, w.data);
  // row 1 of a head in the interleaved layout is row hd/2 of the halves layout
  assert.deepEqual(Array.from(p.data.subarray(3, 6)), Array.from(w.data.subarray(4 * 3, 5 * 3)));
});

test("rope: a model with halves RoPE equals the same model with permuted q/k and interleaved RoPE", async () => {
  const weights = randomWeights(TINY, 7);
  const permuted = new Map(weights);
  for (let i = 0; i < TINY.numLayers; i++) {
    for (
      const [name, heads] of [["self_attn.q_proj", TINY.numHeads], [
        "self_attn.k_proj",
        TINY.numKvHeads,
      ]] as const
    ) {
      const key = `${linearPrefix(i, name)}.weight`, t = weights.get(key)!;
      permuted.set(key, {
        shape: t.shape,
        data: permuteQK({ rows: t.shape[0], cols: t.shape[1], data: t.data }, heads).data,
      });
    }
  }
  const ids = [Int32Array.from({ length: 20 }, (_, i) => (i * 7 + 3) % TINY.vocabSize)];
  const hf = await forwardHidden({ spec: TINY, reader: memoryReader(weights) }, ids);
  const gg = await forwardHidden({
    spec: { ...TINY, ropeStyle: "interleaved" },
    reader: memoryReader(permuted),
  }, ids);
  const wrong = await forwardHidden({ spec: TINY, reader: memoryReader(permuted) }, ids);
  let maxDiff = 0, wrongDiff = 0;
  for (let i = 0; i < hf.data.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(hf.data[i] - gg.data[i]));
    wrongDiff = Math.max(wrongDiff, Math.abs(hf.data[i] - wrong.data[i]));
  }
  assert.ok(maxDiff < 1e-4, `max difference ${maxDiff}`);
  assert.ok(wrongDiff > 1e-2, "mixing conventions must change the result");
});

test("rope scaling: llama3 keeps high frequencies, divides low ones by the factor, interpolates between", () => {
  // Llama 3.2's settings
  const scaling = {
    type: "llama3",
    factor: 32,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositions: 8192,
  } as const;
  const base = ropeFrequencies(64, 500000), f = ropeFrequencies(64, 500000, scaling);
  let kept = 0, divided = 0, mixed = 0;
  for (let i = 0; i < 32; i++) {
    const wavelen = (2 * Math.PI) / base[i];
    if (wavelen < 8192 / 4) {
      assert.equal(f[i], base[i]);
      kept++;
    } else if (wavelen > 8192) {
      assert.ok(Math.abs(f[i] - base[i] / 32) < 1e-15);
      divided++;
    } else {
      assert.ok(f[i] < base[i] && f[i] > base[i] / 32);
      mixed++;
    }
    if (i > 0) assert.ok(f[i] < f[i - 1], "frequencies decrease");
  }
  assert.ok(kept > 0 && divided > 0 && mixed > 0, `${kept} ${divided} ${mixed}`);
  const lin = ropeFrequencies(8, 10000, { type: "linear", factor: 4 });
  ropeFrequencies(8, 10000).forEach((b, i) => assert.ok(Math.abs(lin[i] - b / 4) < 1e-15));
  // linear scaling by k is RoPE at position p/k
  const x = [1, 2, 3, 4, 5, 6, 7, 8];
  const m1: Matrix = { rows: 1, cols: 8, data: Float32Array.from(x) };
  const m2: Matrix = { rows: 1, cols: 8, data: Float32Array.from(x) };
  applyRope(m1, 1, 8, ropeTables(64, 8, 10000, { type: "linear", factor: 4 }), "halves", () => 40);
  applyRope(m2, 1, 8, ropeTables(64, 8, 10000), "halves", () => 10);
  for (let i = 0; i < 8; i++) assert.ok(Math.abs(m1.data[i] - m2.data[i]) < 1e-5);
});

test("rope tables: sized by the positions a pass uses, never by max_position_embeddings; cached, grown by doubling", async () => {
  // A config may declare 2^31 positions: tables that size would be 2^31·headDim floats before any check.
  const theta = 12345.5, spec = { ...TINY, maxPositions: 2 ** 31, ropeTheta: theta }; // theta: a cache key of its own
  const ids = [Int32Array.from({ length: 20 }, (_, i) => (i * 5 + 1) % TINY.vocabSize)];
  const h = await forwardHidden({ spec, reader: memoryReader(randomWeights(TINY, 3)) }, ids);
  assert.ok(h.data.every(Number.isFinite));
  const t = cachedRopeTables(20, TINY.headDim, theta);
  assert.equal(t.positions, 64, "the pass built tables for its own 20 positions (at least 64), not 2^31");
  assert.equal(cachedRopeTables(64, TINY.headDim, theta), t, "reused while large enough");
  assert.equal(cachedRopeTables(65, TINY.headDim, theta).positions, 128, "doubles when a longer pass comes");
  const big = cachedRopeTables(1000, TINY.headDim, theta);
  assert.equal(big.positions, 1000);
  const fresh = ropeTables(1000, TINY.headDim, theta);
  assert.deepEqual(big.cos, fresh.cos);
  assert.deepEqual(big.sin, fresh.sin);
  for (const bad of [-1, 1.5, NaN, Infinity]) {
    assert.throws(() => cachedRopeTables(bad, TINY.headDim, theta), ShapeError, String(bad));
  }
});
