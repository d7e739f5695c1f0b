/**
 * The forward pass: low-rank linears, the observer hook's inputs, batching and causality, the KV-cached path
 * against the full pass, shape checks on load, and loadModel on both formats.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { memoryReader, randomWeights, TINY } from "./_random_model.ts";
import {
  applyLinear,
  BLOCK_FIELD,
  BlockScratch,
  embed,
  finalLogits,
  forwardBlock,
  forwardBlockCached,
  forwardBlockFrom,
  forwardBlockInPlace,
  forwardHidden,
  type Linear,
  loadBlock,
  loadHead,
  newLayerCache,
  observeBlock,
  rmsNorm,
  silu,
  tokenNll,
  traceBlock,
} from "../../src/model/llama.ts";
import { initLinalg, linalgInfo } from "../../src/linalg/backend.ts";
import { LINEAR_NAMES, type LinearName, linearPrefix } from "../../src/model/names.ts";
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

test("forwardBlockInPlace with a reused scratch equals forwardBlock exactly, batch after batch", async () => {
  const block = await loadBlock(model.reader, TINY, 0);
  const head = await loadHead(model.reader, TINY);
  // A low-rank o and gate too: their scratch holds the rank-wide middle product.
  const low = (l: Linear, r: number): Linear => {
    const w = (l as { weight: Matrix }).weight;
    const a = { rows: w.rows, cols: r, data: w.data.slice(0, w.rows * r) };
    const b = { rows: r, cols: w.cols, data: w.data.slice(0, r * w.cols) };
    return { kind: "lowrank", a, b };
  };
  const mixed = { ...block, o: low(block.o, 3), gate: low(block.gate, 5) };
  const scratch = new BlockScratch();
  for (const [b, lens] of [[block, [7, 5]], [mixed, [6, 9]], [block, [4, 4]]] as const) {
    for (const seq of lens) {
      const x = embed(
        head,
        TINY,
        [0, 1].map((w) => Int32Array.from({ length: seq }, (_, t) => (w * 3 + t * 7) % TINY.vocabSize)),
      );
      const layout = { batch: 2, seq };
      const seenRef = new Map<LinearName, Float32Array>(), seen = new Map<LinearName, Float32Array>();
      const ref = forwardBlock(TINY, b, x, layout, (n, m) => seenRef.set(n, m.data.slice()));
      const y = { rows: x.rows, cols: x.cols, data: x.data.slice() };
      forwardBlockInPlace(TINY, b, y, layout, (n, m) => seen.set(n, m.data.slice()), scratch);
      assert.deepEqual(y.data, ref.data);
      assert.deepEqual(seen, seenRef);
      const seenObs = new Map<LinearName, Float32Array>();
      const before = x.data.slice();
      observeBlock(TINY, b, x, layout, (n, m) => seenObs.set(n, m.data.slice()), scratch);
      assert.deepEqual(x.data, before); // observing leaves the input alone
      assert.deepEqual(seenObs, seenRef);
    }
  }
  assert.ok(scratch.bytes > 0);
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
  { timeout: 600_000 },
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

test("silu: x·σ(x) on both sides of 0", () => {
  fc.assert(
    fc.property(fc.double({ min: -100, max: 100, noNaN: true }), (x) => {
      const want = x / (1 + Math.exp(-x));
      assert.ok(Math.abs(silu(x) - want) <= 1e-8 * (1 + Math.abs(want)), `x = ${x}`);
    }),
  );
});

test("generate: the latent KV cache (ASVD) gives the same tokens as the full cache, with a smaller cache", async () => {
  // k/v replaced by random rank-2 factors (bias on k too, so the rebuild must add it back before RoPE)
  const w = randomWeights(TINY, 11);
  const kv = TINY.numKvHeads * TINY.headDim, r = 2;
  for (let i = 0; i < TINY.numLayers; i++) {
    for (const name of ["self_attn.k_proj", "self_attn.v_proj"] as const) {
      const p = linearPrefix(i, name);
      w.delete(`${p}.weight`);
      w.set(`${p}.svd_a`, { shape: [kv, r], data: mat(kv, r, i * 2 + 1).data });
      w.set(`${p}.svd_b`, { shape: [r, TINY.hiddenSize], data: mat(r, TINY.hiddenSize, i * 2 + 2).data });
    }
    w.set(`${linearPrefix(i, "self_attn.k_proj")}.bias`, { shape: [kv], data: mat(1, kv, 40 + i).data });
  }
  const low = { spec: TINY, reader: memoryReader(w) };
  const prompt = Int32Array.of(1, 7, 3, 9);
  let fullSize = 0, latentSize = 0;
  const full = await generate(low, prompt, 12, { stopAtEos: false, onCacheSize: (n) => (fullSize = n) });
  const latent = await generate(low, prompt, 12, {
    stopAtEos: false,
    kvCache: "latent",
    onCacheSize: (n) => (latentSize = n),
  });
  assert.deepEqual(Array.from(latent), Array.from(full));
  assert.equal(fullSize, TINY.numLayers * 2 * kv);
  assert.equal(latentSize, TINY.numLayers * 2 * r);
  // step by step, the block's outputs agree to rounding
  const block = await loadBlock(low.reader, TINY, 1), head = await loadHead(low.reader, TINY);
  const cf = newLayerCache(TINY, 10), cl = newLayerCache(TINY, 10, "latent", block);
  for (const ids of [prompt, Int32Array.of(5), Int32Array.of(6), Int32Array.of(2)]) {
    const x = embed(head, TINY, [ids]);
    assert.ok(
      maxAbsDiff(forwardBlockCached(TINY, block, x, cl).data, forwardBlockCached(TINY, block, x, cf).data) <
        1e-5,
    );
  }
  // and on a dense model the latent mode is the plain cache, un-rotated until use
  const dense = await generate(model, prompt, 8, { stopAtEos: false, kvCache: "latent" });
  assert.deepEqual(Array.from(dense), Array.from(await generate(model, prompt, 8, { stopAtEos: false })));
});

test("qwen2-style q/k/v biases: required by the spec, applied in both the full and the cached pass", async () => {
  const spec = { ...TINY, attentionBias: true };
  const w = randomWeights(spec, 5);
  const m = { spec, reader: memoryReader(w) };
  const prompt = Int32Array.of(1, 2, 3);
  const fast = await generate(m, prompt, 6, { stopAtEos: false });
  let ids = prompt;
  for (let k = 0; k < 6; k++) {
    const logits = await nextTokenLogits(m, ids);
    const next = logits.indexOf(Math.max(...logits));
    assert.equal(fast[k], next);
    ids = Int32Array.from([...ids, next]);
  }
  // the biases matter
  const noBias = new Map(w);
  for (const k of w.keys()) {
    if (k.endsWith(".bias")) {
      noBias.set(k, { shape: w.get(k)!.shape, data: new Float32Array(w.get(k)!.shape[0]) });
    }
  }
  const a = await nextTokenLogits(m, prompt),
    b = await nextTokenLogits({ spec, reader: memoryReader(noBias) }, prompt);
  assert.ok(maxAbsDiff(a, b) > 1e-3);
  const missing = new Map(w);
  missing.delete(`${linearPrefix(0, "self_attn.v_proj")}.bias`);
  await assert.rejects(loadBlock(memoryReader(missing), spec, 0), /v_proj\.bias is missing/);
});

test("loadHead: a tied head is the embedding; an untied one must exist", async () => {
  const w = randomWeights(TINY, 9);
  w.delete("lm_head.weight");
  const tied = await loadHead(memoryReader(w), { ...TINY, tieWordEmbeddings: true });
  assert.equal(tied.lmHead, tied.embed);
  await assert.rejects(
    loadHead(memoryReader(w), TINY),
    (e: Error) => e instanceof ShapeError && /lm_head\.weight/.test(e.message),
  );
});

test("sliding window: rows see only the last W positions, in the full and the cached pass alike", async () => {
  const spec = { ...TINY, slidingWindow: 3 };
  const m = { spec, reader: memoryReader(randomWeights(TINY, 21)) };
  // a token more than W−1 positions back cannot matter… in one block; stacked blocks widen the reach to L·(W−1)
  const ids = Int32Array.of(1, 4, 9, 16, 25, 36 % TINY.vocabSize, 8, 3, 5, 7, 11);
  const changed = Int32Array.from(ids);
  changed[0] = 2;
  const a = await forwardHidden(m, [ids]), b = await forwardHidden(m, [changed]);
  const reach = TINY.numLayers * (3 - 1), d = TINY.hiddenSize;
  assert.ok(maxAbsDiff(a.data.subarray((reach + 1) * d), b.data.subarray((reach + 1) * d)) < 1e-6);
  assert.ok(
    maxAbsDiff(a.data.subarray(reach * d, (reach + 1) * d), b.data.subarray(reach * d, (reach + 1) * d)) >
      1e-4,
  );
  const full = await forwardHidden({ spec: TINY, reader: m.reader }, [ids]);
  assert.ok(maxAbsDiff(full.data.subarray(-d), a.data.subarray(-d)) > 1e-4, "the window changes the result");
  // KV-cached decoding applies the same window
  const fast = await generate(m, ids.subarray(0, 4), 8, { stopAtEos: false });
  let cur = ids.subarray(0, 4);
  for (let k = 0; k < 8; k++) {
    const logits = await nextTokenLogits(m, cur);
    const next = logits.indexOf(Math.max(...logits));
    assert.equal(fast[k], next, `step ${k}`);
    cur = Int32Array.from([...cur, next]);
  }
});

test("forward: the wasm kernels (fused attention, SwiGLU, log-sum-exp) agree with the TypeScript path", async () => {
  assert.equal(linalgInfo().backend, "wasm");
  // head widths: 4 (vector tails only), 36 and 40 (a 32-wide chunk plus tails); odd lengths; a sliding window
  const specs = [
    TINY,
    { ...TINY, numHeads: 2, numKvHeads: 1, headDim: 36, hiddenSize: 24 },
    { ...TINY, numHeads: 2, numKvHeads: 2, headDim: 40, hiddenSize: 20, slidingWindow: 5 },
  ];
  for (const spec of specs) {
    const m = { spec, reader: memoryReader(randomWeights(spec, 7)) };
    const head = await loadHead(m.reader, spec), block = await loadBlock(m.reader, spec, 0);
    const windows = [0, 1, 2].map((w) =>
      Int32Array.from({ length: 13 }, (_, t) => (w * 7 + t * 5) % spec.vocabSize)
    );
    const x = embed(head, spec, windows), layout = { batch: 3, seq: 13 };
    const targets = Int32Array.from(
      { length: 39 },
      (_, t) => (t % 13 === 12 ? -1 : (t * 3) % spec.vocabSize),
    );
    const run = () => {
      const y = forwardBlock(spec, block, x, layout);
      const cache = newLayerCache(spec, 13);
      forwardBlockCached(spec, block, { rows: 9, cols: x.cols, data: x.data.subarray(0, 9 * x.cols) }, cache);
      const step = forwardBlockCached(spec, block, {
        rows: 4,
        cols: x.cols,
        data: x.data.subarray(9 * x.cols, 13 * x.cols),
      }, cache);
      return { y, step, nll: tokenNll(spec, head, y, targets) };
    };
    const wasm = run();
    await initLinalg({ backend: "ts" });
    let ts;
    try {
      ts = run();
    } finally {
      await initLinalg({ backend: "auto" });
    }
    assert.ok(maxAbsDiff(wasm.y.data, ts.y.data) < 1e-5, `block output, head width ${spec.headDim}`);
    assert.ok(maxAbsDiff(wasm.step.data, ts.step.data) < 1e-5, `cached pass, head width ${spec.headDim}`);
    assert.ok(maxAbsDiff(wasm.step.data, wasm.y.data.subarray(9 * x.cols, 13 * x.cols)) < 1e-5);
    for (let i = 0; i < 39; i++) {
      if (targets[i] < 0) assert.ok(Number.isNaN(wasm.nll[i]));
      else assert.ok(Math.abs(wasm.nll[i] - ts.nll[i]) < 1e-5, `nll ${i}: ${wasm.nll[i]} vs ${ts.nll[i]}`);
    }
  }
});

test("forward: a NaN input shows in its own window from its position on, and nowhere else", async () => {
  const head = await loadHead(model.reader, TINY), block = await loadBlock(model.reader, TINY, 0);
  const x = embed(head, TINY, [Int32Array.of(1, 2, 3, 4, 5, 6), Int32Array.of(6, 5, 4, 3, 2, 1)]);
  const d = TINY.hiddenSize;
  x.data[3 * d + 2] = NaN; // window 0, position 3
  const y = forwardBlock(TINY, block, x, { batch: 2, seq: 6 });
  for (let r = 0; r < 12; r++) {
    const row = y.data.subarray(r * d, (r + 1) * d);
    if (r >= 3 && r < 6) assert.ok(row.some(Number.isNaN), `row ${r} should be NaN`);
    if (r >= 6) assert.ok(row.every(Number.isFinite), `row ${r} (other window) should be finite`);
  }
});

test("traceBlock / forwardBlockFrom: the trace is the block's pass; re-running from any linear gives the same", async () => {
  const head = await loadHead(model.reader, TINY), block = await loadBlock(model.reader, TINY, 1);
  const x = embed(head, TINY, [Int32Array.of(3, 1, 4, 1, 5, 9, 2), Int32Array.of(2, 7, 1, 8, 2, 8, 1)]);
  const layout = { batch: 2, seq: 7 };
  const dense = forwardBlock(TINY, block, x, layout);
  const trace = traceBlock(TINY, block, x, layout);
  assert.deepEqual(trace.out.data, dense.data);
  for (const [i, l] of LINEAR_NAMES.entries()) {
    assert.deepEqual(forwardBlockFrom(TINY, block, x, layout, trace, l).data, dense.data, l);
    // the block with this one linear replaced (a random rank-2 factor pair): the same as its full pass
    const w = block[BLOCK_FIELD[l]] as Linear & { kind: "dense" };
    const low: Linear = { kind: "lowrank", a: mat(w.weight.rows, 2, i + 1), b: mat(2, w.weight.cols, i + 9) };
    const modified = { ...block, [BLOCK_FIELD[l]]: low };
    const want = forwardBlock(TINY, modified, x, layout);
    const got = forwardBlockFrom(TINY, modified, x, layout, trace, l);
    assert.ok(maxAbsDiff(got.data, want.data) < 1e-6, l);
    assert.ok(maxAbsDiff(got.data, dense.data) > 1e-3, `${l}: the replacement must matter`);
  }
});

test("wasm SwiGLU kernel: silu(g)·u to float32 accuracy over the whole float range, NaN kept", async () => {
  const { wasmRuntime } = await import("../../src/linalg/wasm/runtime.ts");
  const rt = wasmRuntime()!;
  const g = Float32Array.from({ length: 4001 }, (_, i) => (i - 2000) * 0.05); // −100…100, odd length: tail
  g.set([NaN, Infinity, -Infinity, -87.4, -87.3, 88.7, 88.8, 1e-30], 0);
  const u = Float32Array.from(g, (_, i) => 1 + (i % 7) * 0.25);
  const out = rt.scoped((s) => {
    const pg = s.putF32(g), pu = s.putF32(u);
    rt.fn("ssilu_mul")(pg, pu, g.length);
    return rt.getF32(pg, g.length);
  });
  for (let i = 0; i < g.length; i++) {
    const want = silu(g[i]) * u[i];
    // ±Inf inputs: not specified further. Below x ≈ −88, exp(−x) overflows float32 and silu flushes to −0
    // (|silu| < 1e-35 there).
    if (Number.isNaN(g[i])) assert.ok(Number.isNaN(out[i]));
    else if (Number.isFinite(g[i])) {
      const err = Math.abs(out[i] - want);
      assert.ok(err <= 4e-7 * Math.abs(want) + 1e-35, `silu(${g[i]}): ${out[i]} vs ${want}`);
    }
  }
});

test("observeBlock: the observer sees exactly what forwardBlock shows it", async () => {
  const head = await loadHead(model.reader, TINY), block = await loadBlock(model.reader, TINY, 0);
  const x = embed(head, TINY, [
    Int32Array.of(4, 8, 15, 16, 23),
    Int32Array.of(42, 4, 8, 15, 16).map((t) => t % 40),
  ]);
  const layout = { batch: 2, seq: 5 };
  const full = new Map<LinearName, Float32Array>(), only = new Map<LinearName, Float32Array>();
  forwardBlock(TINY, block, x, layout, (l, input) => full.set(l, input.data.slice()));
  const before = x.data.slice();
  observeBlock(TINY, block, x, layout, (l, input) => only.set(l, input.data.slice()));
  assert.equal(only.size, 7);
  for (const [l, data] of full) assert.deepEqual(only.get(l), data, l);
  assert.deepEqual(x.data, before, "x is not modified");
});
