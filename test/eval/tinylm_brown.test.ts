/**
 * tinylm-brown against its reference.json (PyTorch float32 outputs): tokenizer ids, greedy continuations,
 * last-position logits and the per-window-BOS window NLLs. Skips when ../shared is absent.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { loadModel } from "../../src/model/load.ts";
import { generate, nextTokenLogits } from "../../src/eval/generate.ts";
import { perplexity, windowNll } from "../../src/eval/perplexity.ts";
import { logSumExp } from "../../src/model/llama.ts";

const DIR = new URL("../../../shared/models/tinylm-brown/", import.meta.url).pathname;
const VALID = new URL("../../../shared/data/brown-valid.txt", import.meta.url).pathname;
const present = existsSync(DIR + "reference.json") && existsSync(VALID);
if (!present) console.log("skip tinylm-brown tests: ../shared/models/tinylm-brown or brown-valid.txt absent");

interface Prompt {
  text: string;
  input_ids: number[];
  greedy_next_8: number[];
  last_position_logits_first8: number[];
  last_position_logsumexp: number;
}

test("tinylm-brown: prompt ids, greedy continuations and last-position logits match reference.json", {
  skip: !present,
  timeout: 600_000,
}, async () => {
  const ref = JSON.parse(readFileSync(DIR + "reference.json", "utf8"));
  const m = await loadModel(DIR);
  try {
    assert.equal(m.spec.ropeStyle, "halves");
    for (const p of ref.prompts as Prompt[]) {
      const ids = m.tokenizer.encode(p.text, { bos: true });
      assert.deepEqual(Array.from(ids), p.input_ids, p.text);
      const logits = await nextTokenLogits(m, ids);
      for (let j = 0; j < 8; j++) {
        assert.ok(
          Math.abs(logits[j] - p.last_position_logits_first8[j]) < 1e-3,
          `${p.text}: logit ${j} ${logits[j]}`,
        );
      }
      const lse = logSumExp(logits, 0, logits.length);
      assert.ok(Math.abs(lse - p.last_position_logsumexp) < 1e-3, `${p.text}: logsumexp ${lse}`);
      const next = await generate(m, ids, 8, { stopAtEos: false });
      assert.deepEqual(Array.from(next), p.greedy_next_8, p.text);
    }
  } finally {
    await m.close();
  }
});

test("tinylm-brown: brown-valid ids and per-window NLL (per-window-BOS protocol) match reference.json", {
  skip: !present,
  timeout: 600_000,
}, async () => {
  const ref = JSON.parse(readFileSync(DIR + "reference.json", "utf8")).brown_valid;
  const m = await loadModel(DIR);
  try {
    // "tokenized as a whole WITHOUT <s>; first 2048 tokens cut into 8 windows w of 256; input [1] + w[:-1],
    // all 256 tokens of w predicted"
    const all = m.tokenizer.encode(readFileSync(VALID, "utf8"));
    assert.equal(all.length, 33958);
    assert.deepEqual(
      Array.from(all.subarray(0, ref.first_2048_token_ids_head.length)),
      ref.first_2048_token_ids_head,
    );
    const n = ref.window as number, inputs: Int32Array[] = [], targets: Int32Array[] = [];
    for (let s = 0; s + n <= ref.n_tokens; s += n) {
      const w = all.subarray(s, s + n);
      const input = new Int32Array(n);
      input[0] = m.tokenizer.bosId;
      input.set(w.subarray(0, n - 1), 1);
      inputs.push(input);
      targets.push(w);
    }
    const nll = await windowNll(m, inputs, targets, { batchTokens: 1024 }); // 2 batches: batching exercised
    let total = 0;
    nll.forEach((v, w) => {
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      total += mean;
      assert.ok(
        Math.abs(mean - ref.per_window_mean_nll[w]) < 1e-3,
        `window ${w}: ${mean} vs ${ref.per_window_mean_nll[w]}`,
      );
    });
    assert.ok(Math.abs(total / nll.length - ref.mean_nll) < 1e-3);
  } finally {
    await m.close();
  }
});

test("tinylm-brown: dense ppl 118.85 on the first 20,000 brown-valid tokens in the peers' protocol", {
  skip: !present,
  timeout: 600_000,
}, async () => {
  // shared/docs/methods.md's yardstick: one BOS, windows of 256, full windows only (the reference code's
  // numel // seqlen): 78 windows, 19,968 tokens
  const m = await loadModel(DIR);
  try {
    const ids = m.tokenizer.encode(readFileSync(VALID, "utf8"), { bos: true }).subarray(0, 20000);
    const r = await perplexity(m, ids, { window: 256, dropPartial: true });
    assert.equal(r.windows, 78);
    assert.ok(Math.abs(r.ppl - 118.85) < 0.01, `ppl ${r.ppl}`);
  } finally {
    await m.close();
  }
});
