// onnxruntime-node on Node: the exported stories260K, dense and svdllm 20 %, run by a Node process
// (test/export/_ort_node.mjs) gives our forward pass's logits within 1e-4, full pass and one cached step.
// Skipped when no `node` is on the PATH.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { compress } from "../../src/pipeline/compress.ts";
import { exportOnnx } from "../../src/export/onnx.ts";
import { loadModel } from "../../src/model/load.ts";
import { maxAbsDiff, ourLogits } from "./_onnx.ts";
import { STORIES, storiesText, tempDir } from "../pipeline/_helpers.ts";

const SCRIPT = new URL("./_ort_node.mjs", import.meta.url).pathname;
const hasNode = spawnSync("node", ["--version"]).status === 0;

test("onnxruntime-node on Node: stories260K dense and svdllm 20 %, full pass and cached step within 1e-4", {
  skip: hasNode ? false : "node not found",
}, async () => {
  const parent = await tempDir("svdllm-onnx-node-");
  try {
    const small = join(parent, "svdllm20");
    const text = (await storiesText()).slice(0, 200_000);
    await compress(STORIES, small, {
      method: "svdllm",
      ratio: { removed: 0.2 },
      calibration: { text, samples: 8, seqlen: 128, seed: 1 },
    });
    for (const [label, input] of [["dense", STORIES], ["svdllm 20 %", small]]) {
      const out = join(parent, label === "dense" ? "onnx-dense" : "onnx-svdllm");
      await exportOnnx(input, out);
      const m = await loadModel(input);
      try {
        const ids = m.tokenizer.encode(text.slice(0, 300), { bos: true }).slice(0, 48);
        const { numLayers: layers, numKvHeads: kvHeads, headDim, vocabSize: V } = m.spec;
        await writeFile(
          join(parent, "ids.json"),
          JSON.stringify({ ids: Array.from(ids), layers, kvHeads, headDim }),
        );
        const r = spawnSync("node", [
          SCRIPT,
          join(out, "onnx/model.onnx"),
          join(parent, "ids.json"),
          join(parent, "out.bin"),
        ], {
          encoding: "utf8",
        });
        assert.equal(r.status, 0, `node failed: ${r.stderr}`);
        const got = new Float32Array((await readFile(join(parent, "out.bin"))).buffer.slice(0));
        const ours = await ourLogits(m, ids), n = ids.length;
        assert.equal(got.length, (n + 1) * V);
        const dFull = maxAbsDiff(got.subarray(0, n * V), ours);
        const dStep = maxAbsDiff(got.subarray(n * V), ours.subarray((n - 1) * V));
        assert.ok(dFull < 1e-4 && dStep < 1e-4, `${label}: full pass ${dFull}, cached step ${dStep}`);
      } finally {
        await m.close();
      }
    }
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});
