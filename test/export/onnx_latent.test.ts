// ASVD's KV-cache mode exported: the ONNX cache holds the rank-r latents of the low-rank k/v projections
// (present batch×1×total×r). Logits equal our forward pass within 1e-4, a cached step equals the full pass,
// greedy decoding through the latent cache equals our generate with a latent cache, and the cache bytes per
// token measured on the runtime's present tensors equal our accounting and are smaller than the full cache's.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { compress } from "../../src/pipeline/compress.ts";
import { loadModel } from "../../src/model/load.ts";
import { generate } from "../../src/eval/generate.ts";
import { cacheShape } from "../../src/export/graph.ts";
import { weightPlan } from "../../src/export/onnx.ts";
import { exportOnnx } from "../../src/export/onnx.ts";
import { OptionError } from "../../src/errors.ts";
import { feeds, maxAbsDiff, onnxBytes, type ort, ourLogits, session } from "./_onnx.ts";
import { STORIES, storiesText, tempDir } from "../pipeline/_helpers.ts";

/** Bytes the present tensors of one run hold per cached position. */
function cacheBytesPerToken(out: ort.InferenceSession.OnnxValueMapType, total: number): number {
  let floats = 0;
  for (const [name, t] of Object.entries(out)) if (name.startsWith("present.")) floats += t.data.length;
  return (floats * 4) / total;
}

test("onnx latent KV cache (ASVD kv-cache mode, half the cache): parity, cached decoding, bytes per token", async () => {
  const parent = await tempDir("svdllm-onnx-latent-");
  try {
    const dir = join(parent, "asvd-kv");
    const text = (await storiesText()).slice(0, 200_000);
    await compress(STORIES, dir, {
      method: "asvd",
      kvCache: true,
      ratio: { kept: 0.5 },
      calibration: { text, samples: 8, seqlen: 128, seed: 1 },
    });
    const m = await loadModel(dir);
    const s = await session(await onnxBytes(m, "f32", "latent"));
    const full = await session(await onnxBytes(m, "f32", "full"));
    try {
      const plan = weightPlan(m),
        shape = (i: number, k: "key" | "value") => cacheShape(plan, m.spec, "latent", i, k);
      const rank = shape(0, "key")[1];
      assert.ok(rank < m.spec.numKvHeads * m.spec.headDim, `k_proj rank ${rank} is not below the kv width`);
      const ids = m.tokenizer.encode(text.slice(0, 300), { bos: true }).slice(0, 40), n = ids.length - 1;
      const ours = await ourLogits(m, ids), V = m.spec.vocabSize;
      const r = await s.run(feeds(m, ids, 0, undefined, shape));
      assert.ok(maxAbsDiff(r.logits.data as Float32Array, ours) < 1e-4, "latent full pass");
      assert.deepEqual(r["present.0.key"].dims, [1, 1, ids.length, rank]);
      const pre = await s.run(feeds(m, ids.subarray(0, n), 0, undefined, shape));
      const step = await s.run(feeds(m, ids.subarray(n), n, pre as Record<string, ort.Tensor>, shape));
      const dStep = maxAbsDiff(step.logits.data as Float32Array, ours.subarray(n * V));
      assert.ok(dStep < 1e-4, `latent cached step differs by ${dStep}`);

      // greedy decoding through the latent cache = our generate with a latent cache
      const prompt = m.tokenizer.encode("Once upon a time", { bos: true });
      let floatsPerToken = 0;
      const mine = Array.from(
        await generate(m, prompt, 16, {
          kvCache: "latent",
          stopAtEos: false,
          onCacheSize: (f) => floatsPerToken = f,
        }),
      );
      const theirs: number[] = [];
      let out = await s.run(feeds(m, prompt, 0, undefined, shape)), past = prompt.length;
      while (theirs.length < 16) {
        const l = out.logits.data as Float32Array, off = l.length - V;
        let best = 0;
        for (let j = 1; j < V; j++) if (l[off + j] > l[off + best]) best = j;
        theirs.push(best);
        out = await s.run(feeds(m, Int32Array.of(best), past++, out as Record<string, ort.Tensor>, shape));
      }
      assert.deepEqual(theirs, mine);
      // bytes per token, measured on the runtime's present tensors
      const latentBytes = cacheBytesPerToken(out, past);
      assert.equal(latentBytes, floatsPerToken * 4);
      const fullOut = await full.run(feeds(m, ids, 0));
      const fullBytes = cacheBytesPerToken(fullOut, ids.length);
      assert.equal(fullBytes, m.spec.numLayers * 2 * m.spec.numKvHeads * m.spec.headDim * 4);
      console.log(
        `KV cache per token: full ${fullBytes} B, latent ${latentBytes} B (${
          (latentBytes / fullBytes).toFixed(3)
        })`,
      );
      assert.ok(latentBytes < 0.6 * fullBytes);
    } finally {
      await s.release();
      await full.release();
      await m.close();
    }
    // a dense model has no latent to cache: refused by name, nothing written
    await assert.rejects(
      exportOnnx(STORIES, join(parent, "x"), { kvCache: "latent" }),
      (e: Error) => e instanceof OptionError && /kvCache "latent" needs low-rank k\/v/.test(e.message),
    );
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});
