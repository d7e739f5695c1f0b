// transformers.js (@huggingface/transformers, on onnxruntime-node) loads the exported compressed tinylm-brown
// (svdllm 20 %, compressed here) from a local folder with no network: its tokenizer gives our ids, its greedy
// continuations of the reference prompts equal our `generate` token for token (and as text through
// `pipeline("text-generation")`), and its perplexity on brown-valid equals ours.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { compress } from "../../src/pipeline/compress.ts";
import { exportOnnx } from "../../src/export/onnx.ts";
import { loadModel } from "../../src/model/load.ts";
import { generate } from "../../src/eval/generate.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { logSumExp } from "../../src/model/llama.ts";
import { tempDir } from "../pipeline/_helpers.ts";
import { BROWN, BROWN_VALID, SHARED_DIR } from "./_onnx.ts";

const present = existsSync(BROWN_VALID) && existsSync(join(BROWN, "reference.json"));

// deno-lint-ignore no-explicit-any
type Any = any;

test("transformers.js runs the exported compressed tinylm-brown: same ids, same greedy tokens, same ppl", {
  skip: present ? false : "tinylm-brown absent",
}, async () => {
  let tjs: Any;
  try {
    tjs = await import("@huggingface/transformers");
  } catch (e) {
    console.log(`skip: @huggingface/transformers does not load here: ${(e as Error).message}`);
    return;
  }
  const { AutoModelForCausalLM, AutoTokenizer, env, pipeline, Tensor } = tjs;
  env.allowRemoteModels = false;
  const parent = await tempDir("svdllm-tjs-");
  try {
    const small = join(parent, "svdllm20"), onnx = join(parent, "svdllm20-onnx");
    const calib = await readFile(join(SHARED_DIR, "data/brown-calib.txt"), "utf8");
    await compress(BROWN, small, {
      method: "svdllm",
      ratio: { removed: 0.2 },
      calibration: { text: calib.slice(0, 100_000), samples: 8, seqlen: 128, seed: 1 },
    });
    await exportOnnx(small, onnx);
    env.localModelPath = parent + "/";
    const model = await AutoModelForCausalLM.from_pretrained("svdllm20-onnx", { dtype: "fp32" });
    const tokenizer = await AutoTokenizer.from_pretrained("svdllm20-onnx");
    const ours = await loadModel(small);
    try {
      const ids64 = (ids: Int32Array) =>
        new Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]);
      const ones = (n: number) => new Tensor("int64", new BigInt64Array(n).fill(1n), [1, n]);
      const ref = JSON.parse(readFileSync(join(BROWN, "reference.json"), "utf8"));
      for (const p of ref.prompts as { text: string }[]) {
        const ids = ours.tokenizer.encode(p.text, { bos: true });
        assert.deepEqual(
          Array.from(tokenizer.encode(p.text) as number[]),
          Array.from(ids),
          `ids of ${p.text}`,
        );
        const out = await model.generate({
          input_ids: ids64(ids),
          attention_mask: ones(ids.length),
          max_new_tokens: 12,
          do_sample: false,
        });
        const theirs = (out.tolist()[0] as bigint[]).slice(ids.length).map(Number);
        const mine = Array.from(await generate(ours, ids, 12, { stopAtEos: false }));
        assert.deepEqual(
          theirs,
          mine.slice(0, theirs.length),
          `greedy continuation of ${JSON.stringify(p.text)}`,
        );
        assert.ok(theirs.length === 12 || theirs.at(-1) === ours.spec.eosTokenId);
      }
      // what a user writes: pipeline("text-generation") on the folder, text in, text out
      const gen = await pipeline("text-generation", "svdllm20-onnx", { dtype: "fp32" });
      const prompt = "The jury said", ids = ours.tokenizer.encode(prompt, { bos: true });
      const [{ generated_text }] = await gen(prompt, { max_new_tokens: 12, do_sample: false });
      const cont = await generate(ours, ids, 12, { stopAtEos: false });
      assert.equal(generated_text, ours.tokenizer.decode(Int32Array.from([...ids.subarray(1), ...cont])));
      await gen.dispose();
      // perplexity, papers' protocol: BOS once, windows of 256 from position 0
      const all = ours.tokenizer.encode(await readFile(BROWN_VALID, "utf8"), { bos: true }).slice(0, 2048);
      const window = 256, V = ours.spec.vocabSize;
      let nll = 0, n = 0;
      for (let w0 = 0; w0 + 1 < all.length; w0 += window) {
        const win = all.subarray(w0, Math.min(w0 + window, all.length));
        const { logits } = await model({ input_ids: ids64(win), attention_mask: ones(win.length) });
        const data = logits.data as Float32Array;
        for (let t = 0; t + 1 < win.length; t++) {
          nll += logSumExp(data, t * V, V) - data[t * V + win[t + 1]], n++;
        }
      }
      const theirsPpl = Math.exp(nll / n), mine = await perplexity(ours, all, { window });
      assert.equal(n, mine.predicted);
      console.log(`tinylm-brown svdllm 20 %: ppl transformers.js ${theirsPpl}, ours ${mine.ppl}`);
      assert.ok(Math.abs(theirsPpl - mine.ppl) < 1e-4, `ppl ${theirsPpl} vs ${mine.ppl}`);
      await model.dispose();
    } finally {
      await ours.close();
    }
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});
