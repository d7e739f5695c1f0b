/**
 * The forward pass: low-rank linears, the observer hook's inputs, batching and causality, the KV-cached path
 * against the full pass, shape checks on load, and loadModel on both formats.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { memoryReader, randomWeights, TINY } from "./_random_model.ts";
import {
  applyLinear,
  embed,
  expNeg,
  finalLogits,
  forwardBlock,
  forwardBlockCached,
  forwardHidden,
  type Linear,
  loadBlock,
  loadHead,
  newLayerCache,
  rmsNorm,
} from "../../src/model/llama.ts";
import { type LinearName, linearPrefix } from "../../src/model/names.ts";
import { matmul } from "../../src/linalg/gemm.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";
import { ShapeError } from "../../src/errors.ts";
import { generate, nextTokenLogits } from "../../src/eval/generate.ts";
import { loadModel } from "../../src/model/load.ts";

const STORIES = new URL("../../models/stories260K/stories260K.gguf", import.meta.url).pathname;
const model = { spec: TINY, reader: memoryReader(randomWeights(TINY)) };

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const mat = (rows: number, cols: number, seed: number): Matrix => ({
  rows,
  cols,
  data: Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(seed * 13.7 + i * 0.61)),
});

test("linear: a low-rank linear computes (A·B)·x, with its bias", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 1, max: 5 }),
      fc.nat({ max: 100 }),
      (t, r, s) => {
        const a = mat(7, r, s), b = mat(r, 6, s + 1), x = mat(t, 6, s + 2), bias = mat(1, 7, s + 3).data;
        const low: Linear = { kind: "lowrank", a, b, bias };
        const dense: Linear = { kind: "dense", weight: matmul(a, b), bias };
        assert.ok(maxAbsDiff(applyLinear(low, x).data, applyLinear(dense, x).data) < 1e-5);
      },
    ),
  );
});

test("forwardBlock: the observer sees each linear's exact input", async () => {
  const block = await loadBlock(model.reader, TINY, 0);
  const head = await loadHead(model.reader, TINY);
  const x = embed(head, TINY, [Int32Array.of(1, 5, 9, 3, 7)]);
  const seen = new Map<LinearName, Matrix>();
  const y = forwardBlock(TINY, block, x, { batch: 1, seq: 5 }, (name, input) => seen.set(name, input));
  assert.equal(seen.size, 7);
  const n = rmsNorm(x, block.inputNorm, TINY.rmsNormEps);
  for (const q of ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"] as const) {
    assert.ok(maxAbsDiff(seen.get(q)!.data, n.data) < 1e-6);
  }
  // out = x + o(att) + down(mlp_in): rebuild it from the observed inputs
  const mid = applyLinear(block.o, seen.get("self_attn.o_proj")!);
  const down = applyLinear(block.down, seen.get("mlp.down_proj")!);
  const rebuilt = x.data.map((v, i) => v + mid.data[i] + down.data[i]);
  assert.ok(maxAbsDiff(rebuilt, y.data) < 1e-5);
  const hMid = { rows: x.rows, cols: x.cols, data: x.data.map((v, i) => v + mid.data[i]) };
  assert.ok(
    maxAbsDiff(seen.get("mlp.gate_proj")!.data, rmsNorm(hMid, block.postNorm, TINY.rmsNormEps).data) < 1e-5,
  );
  assert.equal(seen.get("mlp.down_proj")!.cols, TINY.intermediateSize);
});

test("forward: windows in a batch do not see each other, and attention is causal", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.nat({ max: TINY.vocabSize - 1 }), { minLength: 12, maxLength: 12 }),
      fc.array(fc.nat({ max: TINY.vocabSize - 1 }), { minLength: 12, maxLength: 12 }),
      fc.nat({ max: 11 }),
      async (a, b, cut) => {
        const wa = Int32Array.from(a), wb = Int32Array.from(b);
        const both = await forwardHidden(model, [wa, wb]);
        const alone = await forwardHidden(model, [wb]);
        assert.ok(maxAbsDiff(both.data.subarray(12 * 16), alone.data) < 1e-5);
        // changing tokens after `cut` leaves rows 0..cut unchanged
        const changed = Int32Array.from(wa);
        for (let i = cut + 1; i < 12; i++) changed[i] = (changed[i] + 1) % TINY.vocabSize;
        const c = await forwardHidden(model, [changed]);
        assert.ok(
          maxAbsDiff(c.data.subarray(0, (cut + 1) * 16), both.data.subarray(0, (cut + 1) * 16)) < 1e-6,
        );
      },
    ),
    { numRuns: 15 },
  );
});

test("forwardBlockCached: prefill plus one-token steps equal the full window", async () => {
  const block = await loadBlock(model.reader, TINY, 1);
  const head = await loadHead(model.reader, TINY);
  const ids = Int32Array.of(1, 4, 8, 15, 16, 23, 42 % TINY.vocabSize, 3);
  const full = forwardBlock(TINY, block, embed(head, TINY, [ids]), { batch: 1, seq: ids.length });
  const cache = newLayerCache(TINY, ids.length);
  const parts = [forwardBlockCached(TINY, block, embed(head, TINY, [ids.subarray(0, 5)]), cache)];
  for (let t = 5; t < ids.length; t++) {
    parts.push(forwardBlockCached(TINY, block, embed(head, TINY, [ids.subarray(t, t + 1)]), cache));
  }
  const stitched = new Float32Array(full.data.length);
  let off = 0;
  for (const p of parts) {
    stitched.set(p.data, off);
    off += p.data.length;
  }
  assert.ok(maxAbsDiff(stitched, full.data) < 1e-5);
  assert.throws(
    () => forwardBlockCached(TINY, block, embed(head, TINY, [ids.subarray(0, 1)]), cache),
    ShapeError,
  );
});

test(
  "generate: KV-cached greedy decoding equals the argmax of full forward passes",
  { timeout: 30_000 },
  async () => {
    const stories = await loadModel(STORIES);
    for (const m of [model, stories]) {
      const prompt = Int32Array.of(1, 5, 9);
      const fast = await generate(m, prompt, 10, { stopAtEos: false });
      let ids = prompt;
      for (let k = 0; k < 10; k++) {
        const logits = await nextTokenLogits(m, ids);
        const next = logits.indexOf(Math.max(...logits));
        assert.equal(fast[k], next, `step ${k}`);
        ids = Int32Array.from([...ids, next]);
      }
    }
    await stories.close();
  },
);

test("loadBlock: a wrong shape or a missing tensor is a ShapeError naming the tensor", async () => {
  const w = randomWeights(TINY);
  const key = `${linearPrefix(1, "mlp.up_proj")}.weight`;
  w.set(key, {
    shape: [TINY.intermediateSize + 1, TINY.hiddenSize],
    data: new Float32Array((TINY.intermediateSize + 1) * TINY.hiddenSize),
  });
  await assert.rejects(
    loadBlock(memoryReader(w), TINY, 1),
    (e: Error) => e instanceof ShapeError && e.message.includes(key),
  );
  w.delete(key);
  await assert.rejects(
    loadBlock(memoryReader(w), TINY, 1),
    (e: Error) => e instanceof ShapeError && e.message.includes("mlp.up_proj"),
  );
  // factor pair accepted in place of the weight, and mismatched ranks refused
  const p = linearPrefix(1, "mlp.up_proj");
  w.set(`${p}.svd_a`, {
    shape: [TINY.intermediateSize, 3],
    data: new Float32Array(TINY.intermediateSize * 3),
  });
  w.set(`${p}.svd_b`, { shape: [3, TINY.hiddenSize], data: new Float32Array(3 * TINY.hiddenSize) });
  const block = await loadBlock(memoryReader(w), TINY, 1);
  assert.equal(block.up.kind, "lowrank");
  w.set(`${p}.svd_b`, { shape: [4, TINY.hiddenSize], data: new Float32Array(4 * TINY.hiddenSize) });
  await assert.rejects(
    loadBlock(memoryReader(w), TINY, 1),
    (e: Error) => e instanceof ShapeError && e.message.includes("svd_b"),
  );
});

test("loadModel: stories260K GGUF under Hugging Face names, interleaved RoPE, untied head", async () => {
  const m = await loadModel(STORIES);
  try {
    assert.equal(m.spec.ropeStyle, "interleaved");
    assert.equal(m.spec.tieWordEmbeddings, false);
    assert.ok(m.reader.has("model.layers.4.mlp.down_proj.weight"));
    assert.deepEqual(m.reader.info("model.layers.0.self_attn.k_proj.weight").shape, [32, 64]);
    assert.equal(m.tokenizer.vocabSize, 512);
    const head = await loadHead(m.reader, m.spec);
    const h = await forwardHidden(m, [Int32Array.of(1, 400, 300)]);
    const logits = finalLogits(m.spec, head, h);
    assert.equal(logits.cols, 512);
    assert.ok(logits.data.every(Number.isFinite));
  } finally {
    await m.close();
  }
});

test("expNeg: e^x to 1e-8 relative on [-87, 0], 0 below", () => {
  fc.assert(
    fc.property(fc.double({ min: -87, max: 0, noNaN: true }), (x) => {
      assert.ok(Math.abs(expNeg(x) / Math.exp(x) - 1) < 1e-8, `x = ${x}`);
    }),
    { numRuns: 2000 },
  );
  assert.equal(expNeg(0), 1);
  assert.equal(expNeg(-1000), 0);
});
