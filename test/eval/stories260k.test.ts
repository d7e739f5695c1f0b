/**
 * stories260K (bundled GGUF) end to end: the papers' perplexity protocol on the TinyStories sample against the
 * float64 reference (5148 tokens, mean NLL 1.684264, ppl 5.3885) and the known greedy continuation.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { loadModel } from "../../src/model/load.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { generate } from "../../src/eval/generate.ts";

const MODEL = new URL("../../models/stories260K/stories260K.gguf", import.meta.url).pathname;
const TEXT = new URL("../../data/tinystories-valid.part1.txt", import.meta.url).pathname; // bundled copy;

test("stories260K: 5148 tokens, perplexity within 0.1 % of 5.3885 (windows of 512, one BOS)", {
  timeout: 600_000,
}, async () => {
  const m = await loadModel(MODEL);
  try {
    const ids = m.tokenizer.encode(readFileSync(TEXT, "utf8"), { bos: true });
    assert.equal(ids.length, 5148);
    assert.equal(ids[0], m.tokenizer.bosId);
    const events: number[] = [];
    const r = await perplexity(m, ids, { window: 512, onProgress: (e) => events.push(e.done / e.total) });
    assert.equal(r.tokens, 5148);
    assert.equal(r.windows, 11); // 10 full windows + 28 tokens
    assert.equal(r.predicted, 5148 - 11);
    assert.equal(r.nonFinite, 0);
    assert.ok(Math.abs(r.meanNll - 1.684264) < 1e-4, `mean NLL ${r.meanNll}`);
    assert.ok(Math.abs(r.ppl / 5.3885 - 1) < 1e-3, `ppl ${r.ppl}`);
    assert.equal(events[events.length - 1], 1);
    // batching windows must not change the answer: the first 3 windows one at a time
    const three = await perplexity(m, ids.subarray(0, 3 * 512), { window: 512, batchTokens: 512 });
    for (let w = 0; w < 3; w++) assert.ok(Math.abs(three.perWindow[w] - r.perWindow[w]) < 1e-6);
  } finally {
    await m.close();
  }
});

test("stories260K: greedy from BOS + 'Once upon a time' tells of a little girl named Lily", {
  timeout: 600_000,
}, async () => {
  const m = await loadModel(MODEL);
  try {
    const out = await generate(m, m.tokenizer.encode("Once upon a time", { bos: true }), 16);
    const text = m.tokenizer.decode(out);
    assert.match(text, /^, there was a little girl named Lily/, text);
  } finally {
    await m.close();
  }
});
