// A GGUF SentencePiece vocabulary (stories260K) as tokenizer.json: through @huggingface/tokenizers (the package
// transformers.js uses) it gives our tokenizer's ids on the bundled text and on random text, and decodes back;
// a vocabulary that is not SentencePiece-style is refused by name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import fc from "../_fc.ts";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { openGguf } from "../../src/io/gguf.ts";
import { tokenizerFromGguf } from "../../src/tokenize/from_gguf.ts";
import { hfTokenizerFromJson } from "../../src/tokenize/hf.ts";
import { ggufToHfTokenizer } from "../../src/tokenize/gguf_to_hf.ts";
import { OptionError } from "../../src/errors.ts";
import { compress } from "../../src/pipeline/compress.ts";
import { ROOT, STORIES, tempDir } from "../pipeline/_helpers.ts";
import { rm } from "node:fs/promises";

async function storiesVocab() {
  const g = await openGguf(STORIES);
  try {
    return { ours: tokenizerFromGguf(g.kv), files: ggufToHfTokenizer(g.kv), kv: g.kv };
  } finally {
    await g.close();
  }
}

test("GGUF → tokenizer.json: id-exact with our tokenizer on the bundled text, through @huggingface/tokenizers", async () => {
  const { ours, files } = await storiesVocab();
  const hf = new HfTokenizer(files.tokenizerJson, files.tokenizerConfig);
  const text = await readFile(join(ROOT, "data/tinystories-valid.part1.txt"), "utf8");
  const want = Array.from(ours.encode(text));
  assert.ok(want.length > 1000);
  assert.deepEqual(hf.encode(text, { add_special_tokens: false }).ids, want);
  for (const line of text.split("\n").slice(0, 200)) {
    assert.deepEqual(hf.encode(line, { add_special_tokens: false }).ids, Array.from(ours.encode(line)), line);
  }
  // with special tokens, BOS first (as LLaMA's tokenizer does), and the text decodes back
  assert.deepEqual(
    hf.encode("Once upon a time").ids,
    Array.from(ours.encode("Once upon a time", { bos: true })),
  );
  assert.equal(hf.decode(want.slice(0, 200), { skip_special_tokens: true }), ours.decode(want.slice(0, 200)));
  // our loader's tokenizer.json path gives the same ids and special tokens
  const again = hfTokenizerFromJson(files.tokenizerJson, files.tokenizerConfig);
  assert.equal(again.bosId, ours.bosId);
  assert.equal(again.eosId, ours.eosId);
  assert.deepEqual(
    Array.from(again.encode(text.slice(0, 3000))),
    Array.from(ours.encode(text.slice(0, 3000))),
  );
});

test("GGUF → tokenizer.json: id-exact on random text (unknown characters as byte fallback)", async () => {
  const { ours, files } = await storiesVocab();
  const hf = new HfTokenizer(files.tokenizerJson, files.tokenizerConfig);
  const chars = [..."abcdefghijklmnopqrstuvwxyzTOS .,!?'\"\n\t-0123456789éü中😀"];
  fc.assert(
    fc.property(fc.array(fc.constantFrom(...chars), { maxLength: 60 }), (cs) => {
      const s = cs.join("");
      assert.deepEqual(hf.encode(s, { add_special_tokens: false }).ids, Array.from(ours.encode(s)));
    }),
    { numRuns: 300 },
  );
});

test("a compressed stories260K folder's tokenizer.json: transformers.js AutoTokenizer gives our ids", {
  timeout: 600_000,
}, async () => {
  // deno-lint-ignore no-explicit-any
  let tjs: any;
  try {
    tjs = await import("@huggingface/transformers");
  } catch (e) {
    console.log(`skip: @huggingface/transformers does not load here: ${(e as Error).message}`);
    return;
  }
  const dir = await tempDir("svdllm-hftok-");
  try {
    await compress(STORIES, join(dir, "stories-svd"), { method: "svd", ratio: { removed: 0.3 } });
    tjs.env.allowRemoteModels = false;
    tjs.env.localModelPath = dir + "/";
    const tok = await tjs.AutoTokenizer.from_pretrained("stories-svd");
    const { ours } = await storiesVocab();
    const text = (await readFile(join(ROOT, "data/tinystories-valid.part1.txt"), "utf8")).slice(0, 5000);
    const ids: number[] = tok.encode(text, { add_special_tokens: false });
    assert.deepEqual(ids, Array.from(ours.encode(text)));
    assert.deepEqual(
      tok.encode("Once upon a time"),
      Array.from(ours.encode("Once upon a time", { bos: true })),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("bad input: a vocabulary that is not SentencePiece, or is malformed, is refused by name", async () => {
  const { kv } = await storiesVocab();
  const with_ = (k: string, v: unknown) => new Map([...kv, [k, v]]) as typeof kv;
  assert.throws(
    () => ggufToHfTokenizer(with_("tokenizer.ggml.model", "gpt2")),
    (e) => e instanceof OptionError && /tokenizer\.ggml\.model "gpt2" is not supported/.test(e.message),
  );
  assert.throws(
    () => ggufToHfTokenizer(with_("tokenizer.ggml.scores", new Float32Array(3))),
    /tokenizer\.ggml\.scores must be 512 float32 values/,
  );
  const tokens = [...(kv.get("tokenizer.ggml.tokens") as string[])];
  tokens[10] = tokens[11];
  assert.throws(() => ggufToHfTokenizer(with_("tokenizer.ggml.tokens", tokens)), /appears at ids 10 and 11/);
});
