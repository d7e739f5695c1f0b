// ONNX parity: the exported decoder, run by onnxruntime-web (wasm backend, no network), gives our forward pass's
// logits within 1e-4 on stories260K (GGUF, interleaved RoPE, GQA) and tinylm-brown (Hugging Face, halves
// RoPE, GQA), dense and compressed (svdllm 20 %, compressed here with the library); and one step of cached
// decoding (past_key_values fed back) equals the full pass.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { compress } from "../../src/pipeline/compress.ts";
import { loadModel } from "../../src/model/load.ts";
import type { LoadedModel } from "../../src/model/load.ts";
import { FIXTURES, HF_FIXTURES } from "./_fixtures.ts";
import { feeds, maxAbsDiff, onnxBytes, onnxPerplexity, ort, ourLogits, session } from "./_onnx.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { STORIES, storiesText, tempDir } from "../pipeline/_helpers.ts";
import { BROWN, BROWN_VALID } from "./_onnx.ts";
const TOL = 1e-4;

/** Full-pass and cached-step parity of `model` in onnxruntime-web. */
async function checkParity(model: LoadedModel, text: string, label: string): Promise<void> {
  const ids = model.tokenizer.encode(text, { bos: true }).slice(0, 40);
  const s = await session(await onnxBytes(model));
  try {
    const ours = await ourLogits(model, ids), V = model.spec.vocabSize;
    const full = await s.run(feeds(model, ids, 0));
    assert.deepEqual(full.logits.dims, [1, ids.length, V]);
    const dFull = maxAbsDiff(full.logits.data as Float32Array, ours);
    assert.ok(dFull < TOL, `${label}: full pass differs by ${dFull}`);
    // prefix without a cache, then the last token with the prefix's present key/values as the past
    const n = ids.length - 1;
    const pre = await s.run(feeds(model, ids.subarray(0, n), 0));
    assert.deepEqual(pre["present.0.key"].dims, [1, model.spec.numKvHeads, n, model.spec.headDim]);
    const step = await s.run(feeds(model, ids.subarray(n), n, pre as Record<string, ort.Tensor>));
    assert.deepEqual(step["present.0.value"].dims, [1, model.spec.numKvHeads, n + 1, model.spec.headDim]);
    const dStep = maxAbsDiff(step.logits.data as Float32Array, ours.subarray(n * V));
    assert.ok(dStep < TOL, `${label}: cached step differs from the full pass by ${dStep}`);
  } finally {
    await s.release();
  }
}

/** Compress `input` with svdllm 20 % (small calibration) into a temp folder; returns it. */
async function compressed(input: string, text: string): Promise<string> {
  const out = join(await tempDir("svdllm-onnx-"), "svdllm20");
  await compress(input, out, {
    method: "svdllm",
    ratio: { removed: 0.2 },
    calibration: { text, samples: 8, seqlen: 128, seed: 1 },
  });
  return out;
}

for (
  const [name, path, textOf] of [
    ["stories260K", STORIES, storiesText],
    ["tinylm-brown", BROWN, () => readFile(BROWN_VALID, "utf8")],
  ] as const
) {
  const present = existsSync(path) && (name !== "tinylm-brown" || existsSync(BROWN_VALID));
  test(`onnx parity: ${name} dense and svdllm 20 %, full pass and cached step, onnxruntime-web`, {
    skip: present ? false : `${path} absent`,
  }, async () => {
    const text = (await textOf()).slice(0, 200_000);
    const dense = await loadModel(path);
    try {
      await checkParity(dense, text, `${name} dense`);
    } finally {
      await dense.close();
    }
    const dir = await compressed(path, text);
    const small = await loadModel(dir);
    try {
      assert.ok(small.reader.has("model.layers.0.mlp.down_proj.svd_a"), "the model was not compressed");
      await checkParity(small, text, `${name} svdllm 20 %`);
    } finally {
      await small.close();
      await rm(join(dir, ".."), { recursive: true, force: true });
    }
  });
}

test("onnx dtypes: stories260K perplexity (bundled text, window 512) f32 equals ours to 1e-4; f16, int8 within 0.5 %", async () => {
  const m = await loadModel(STORIES);
  try {
    const text = await readFile(new URL("../../data/tinystories-valid.part1.txt", import.meta.url), "utf8");
    const ids = m.tokenizer.encode(text, { bos: true });
    const ours = await perplexity(m, ids, { window: 512 });
    for (const dtype of ["f32", "f16", "int8"] as const) {
      const s = await session(await onnxBytes(m, dtype));
      try {
        const r = await onnxPerplexity(s, m, ids, 512);
        assert.equal(r.predicted, ours.predicted);
        const tol = dtype === "f32" ? 1e-4 : 5e-3 * ours.ppl;
        assert.ok(Math.abs(r.ppl - ours.ppl) < tol, `${dtype}: ppl ${r.ppl} vs ours ${ours.ppl}`);
      } finally {
        await s.release();
      }
    }
  } finally {
    await m.close();
  }
});

test("onnx attention_mask: a left-padded row of a batch gives the logits of the same tokens run alone", async () => {
  const m = await loadModel(STORIES);
  const s = await session(await onnxBytes(m));
  try {
    const a = m.tokenizer.encode("Once upon a time, there was a big dog.", { bos: true });
    const b = a.subarray(0, a.length - 4), pad = a.length - b.length, T = a.length, V = m.spec.vocabSize;
    const ids = new BigInt64Array(2 * T), mask = new BigInt64Array(2 * T), pos = new BigInt64Array(2 * T);
    for (let t = 0; t < T; t++) {
      ids[t] = BigInt(a[t]), mask[t] = 1n, pos[t] = BigInt(t);
      const real = t >= pad; // row 1: `pad` padding positions, then b
      ids[T + t] = real ? BigInt(b[t - pad]) : 0n,
        mask[T + t] = real ? 1n : 0n,
        pos[T + t] = real ? BigInt(t - pad) : 1n;
    }
    const f = feeds(m, a, 0);
    for (let i = 0; i < m.spec.numLayers; i++) {
      for (const kv of ["key", "value"]) {
        f[`past_key_values.${i}.${kv}`] = new ort.Tensor("float32", new Float32Array(0), [
          2,
          m.spec.numKvHeads,
          0,
          m.spec.headDim,
        ]);
      }
    }
    f.input_ids = new ort.Tensor("int64", ids, [2, T]);
    f.attention_mask = new ort.Tensor("int64", mask, [2, T]);
    f.position_ids = new ort.Tensor("int64", pos, [2, T]);
    const out = (await s.run(f)).logits.data as Float32Array;
    assert.ok(out.every(Number.isFinite), "padding rows must stay finite");
    assert.ok(maxAbsDiff(out.subarray(0, T * V), await ourLogits(m, a)) < 1e-4);
    assert.ok(maxAbsDiff(out.subarray((T + pad) * V), await ourLogits(m, b)) < 1e-4);
  } finally {
    await s.release();
    await m.close();
  }
});

// The Hugging Face fixtures (see _fixtures.ts) cover what the two real models do not.
for (const name of HF_FIXTURES) {
  test(`onnx parity: fixture ${name}, full pass and cached step within 1e-4`, async () => {
    const m = await loadModel(join(FIXTURES, name));
    try {
      await checkParity(
        m,
        "The quick brown fox jumps over the lazy dog. It was a sunny day in the park.",
        name,
      );
    } finally {
      await m.close();
    }
  });
}
