/**
 * Bad-input corpus, GGUF files: metadata sizes that would drive allocations, counts and lengths no file can
 * hold, overlapping tensor data, integer weights, malformed BPE merges, a FIFO. Each case is generated from a
 * small valid GGUF built from the test fixture (or the bundled stories260K) and must be refused with one line
 * naming the file and the problem.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { openGguf } from "../../src/io/gguf.ts";
import { loadModel } from "../../src/model/load.ts";
import type { KvValue } from "../model/_gguf_builder.ts";
import { afterGgufString, assertRefused, setU32, setU64, STORIES, tempDir, tinyGguf } from "./_corpus.ts";

/** Write `bytes` as `name` in a fresh folder and expect loadModel to refuse it with `problem`. */
async function refused(bytes: Uint8Array, problem: RegExp, name = "bad.gguf"): Promise<void> {
  const t = await tempDir();
  try {
    const p = join(t.dir, name);
    await writeFile(p, bytes);
    await assertRefused(() => loadModel(p), p, problem, p);
  } finally {
    await t.cleanup();
  }
}

test("gguf: the generated base model loads (control for every case below)", async () => {
  const t = await tempDir();
  try {
    const p = join(t.dir, "tiny.gguf");
    await writeFile(p, await tinyGguf());
    const m = await loadModel(p);
    assert.equal(m.spec.numLayers, 2);
    assert.equal(m.tokenizer.bosId, 1);
    await m.close();
  } finally {
    await t.cleanup();
  }
});

const u32 = (value: number): KvValue => ({ type: "u32", value });
const metadataCases: [string, Record<string, KvValue | undefined>, RegExp][] = [
  [
    "block_count 1e9",
    { "llama.block_count": u32(1e9) },
    /"llama\.block_count" is 1000000000, above the limit/,
  ],
  ["block_count 3 (2 blocks present)", { "llama.block_count": u32(3) }, /config says 3 blocks .* hold 2/],
  [
    "block_count 0",
    { "llama.block_count": u32(0) },
    /"llama\.block_count" must be a positive integer, got 0/,
  ],
  [
    "context_length 2^31",
    { "llama.context_length": u32(2 ** 31) },
    /"llama\.context_length" is 2147483648, above/,
  ],
  [
    "context_length 2^24",
    { "llama.context_length": u32(2 ** 24) },
    /"llama\.context_length" is 16777216, above/,
  ],
  [
    "embedding_length 2^32−1",
    { "llama.embedding_length": u32(2 ** 32 - 1) },
    /"llama\.embedding_length" .* above/,
  ],
  [
    "feed_forward_length missing",
    { "llama.feed_forward_length": undefined },
    /"llama\.feed_forward_length" is missing/,
  ],
  [
    "head_count 2^31",
    { "llama.attention.head_count": u32(2 ** 31) },
    /"llama\.attention\.head_count" .* above/,
  ],
  ["vocab_size 1e9", { "llama.vocab_size": u32(1e9) }, /"llama\.vocab_size" is 1000000000, above the limit/],
  [
    "bos_token_id outside the vocabulary",
    { "tokenizer.ggml.bos_token_id": u32(5000) },
    /"tokenizer\.ggml\.bos_token_id" is 5000, outside the vocabulary \(vocab size 101\)/,
  ],
  [
    "eos_token_id outside the vocabulary",
    { "tokenizer.ggml.eos_token_id": u32(101) },
    /"tokenizer\.ggml\.eos_token_id" is 101, outside the vocabulary/,
  ],
  [
    "a gpt2 vocabulary with a three-token merge",
    {
      "tokenizer.ggml.model": { type: "string", value: "gpt2" },
      "tokenizer.ggml.merges": { type: "strings", value: ["p0 p1 p2"] },
    },
    /GGUF tokenizer\.ggml\.merges: BPE merge 0 is "p0 p1 p2": expected two tokens/,
  ],
  [
    "a gpt2 vocabulary merging into a token it lacks",
    {
      "tokenizer.ggml.model": { type: "string", value: "gpt2" },
      "tokenizer.ggml.merges": { type: "strings", value: ["p0 p1"] },
    },
    /BPE merge 0 \("p0 p1"\) makes the token "p0p1", which is not in the vocabulary/,
  ],
];

for (const [name, overrides, problem] of metadataCases) {
  test(`gguf: ${name} is refused naming the file`, async () => {
    await refused(await tinyGguf(overrides), problem);
  });
}

test("gguf: overlapping tensor data is refused", async () => {
  const bytes = await tinyGguf();
  const g = await openGguf(bytes);
  const [first, second] = g.tensorNames;
  await g.close();
  // tensor info: name · u32 n_dims · u64 ne[n_dims] · u32 type · u64 offset; point the second at the first
  const at = afterGgufString(bytes, second);
  const nDims = new DataView(bytes.buffer).getUint32(at, true);
  setU64(bytes, at + 4 + 8 * nDims + 4, 0n);
  await refused(bytes, new RegExp(`tensors "${first}" .* and "${second}" .* overlap`));
});

test("gguf: an integer (I32) tensor where a weight is expected is refused naming it", async () => {
  const bytes = await tinyGguf();
  const at = afterGgufString(bytes, "output_norm.weight");
  const nDims = new DataView(bytes.buffer).getUint32(at, true);
  setU32(bytes, at + 4 + 8 * nDims, 26); // ggml I32: same size as F32, would be read as garbage floats
  await refused(bytes, /tensor model\.norm\.weight has the integer dtype I32/);
});

test("gguf: a quantized tensor type is refused naming the tensor and the type", async () => {
  const bytes = await tinyGguf();
  const at = afterGgufString(bytes, "output_norm.weight");
  const nDims = new DataView(bytes.buffer).getUint32(at, true);
  setU32(bytes, at + 4 + 8 * nDims, 12);
  await refused(bytes, /tensor "output_norm\.weight" has type Q4_K, which this library cannot read/);
});

test("gguf: a tensor count of 2^40 is refused before any loop", async () => {
  const bytes = await tinyGguf();
  setU64(bytes, 8, 2n ** 40n);
  await refused(bytes, /header claims \d+ key\/values and 1099511627776 tensors, more than/);
});

test("gguf: a key/value count of 2^50 is refused before any loop", async () => {
  const bytes = await tinyGguf();
  setU64(bytes, 16, 2n ** 50n);
  await refused(bytes, /header claims 1125899906842624 key\/values/);
});

test("gguf: a string length of 2^52 is refused", async () => {
  const bytes = await tinyGguf();
  setU64(bytes, 24, 2n ** 52n); // the first key's length
  await refused(bytes, /key of metadata entry 0 length .* is too large|past the end of the file/);
});

test("gguf: an array length of 2^40 strings is refused", async () => {
  const bytes = await tinyGguf();
  const at = afterGgufString(bytes, "tokenizer.ggml.tokens"); // u32 type 9 · u32 element type · u64 length
  setU64(bytes, at + 8, 2n ** 40n);
  await refused(
    bytes,
    /metadata "tokenizer\.ggml\.tokens": array of 1099511627776 strings .* runs past the end/,
  );
});

test("gguf: an array length of 2^40 floats is refused", async () => {
  const bytes = await tinyGguf();
  const at = afterGgufString(bytes, "tokenizer.ggml.scores");
  setU64(bytes, at + 8, 2n ** 40n);
  await refused(
    bytes,
    /metadata "tokenizer\.ggml\.scores" at offset \d+ needs 4398046511104 bytes, past the end of the file/,
  );
});

test("gguf: a truncated stories260K is refused naming the file", async () => {
  const bytes = new Uint8Array(await readFile(STORIES));
  await refused(bytes.subarray(0, Math.floor(bytes.length / 2)), /outside the data section|truncated/);
});

test("gguf: a safetensors file named .gguf is refused as not a GGUF file", async () => {
  const st = await readFile(new URL("../fixtures/models/llama-gqa-tiny/model.safetensors", import.meta.url));
  await refused(new Uint8Array(st), /not a GGUF file: magic is/);
});

test(
  "gguf: a FIFO named .gguf is refused, not read forever",
  { skip: process.platform === "win32" },
  async () => {
    const t = await tempDir();
    try {
      const p = join(t.dir, "pipe.gguf");
      execFileSync("mkfifo", [p]);
      await assertRefused(() => loadModel(p), p, /not a regular file/);
      await assertRefused(() => openGguf(p), p, /not a regular file/);
    } finally {
      await t.cleanup();
    }
  },
);

test("gguf: a tokenizer_gguf.json (a compressed GGUF model's vocabulary) with an out-of-vocabulary BOS is refused", async () => {
  const { tokenizerFromGgufJson } = await import("../../src/tokenize/from_gguf.ts");
  const pieces = ["<unk>", "<s>", "</s>", "a"];
  const base = {
    "tokenizer.ggml.model": "llama",
    "tokenizer.ggml.tokens": pieces,
    "tokenizer.ggml.scores": [0, 0, 0, -1],
    "tokenizer.ggml.token_type": [2, 3, 3, 1],
  };
  assert.equal(tokenizerFromGgufJson({ ...base, "tokenizer.ggml.bos_token_id": 1 }, "t.json").bosId, 1);
  assert.equal(
    tokenizerFromGgufJson({ ...base, "tokenizer.ggml.bos_token_id": 0xffffffff }, "t.json").bosId,
    -1,
  );
  await assertRefused(
    () =>
      Promise.resolve().then(() =>
        tokenizerFromGgufJson({ ...base, "tokenizer.ggml.bos_token_id": 7 }, "t.json")
      ),
    "t.json",
    /GGUF tokenizer\.ggml\.bos_token_id is 7, outside the vocabulary of 4 tokens/,
  );
  await assertRefused(
    () =>
      Promise.resolve().then(() =>
        tokenizerFromGgufJson(
          {
            ...base,
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.merges": [],
            "tokenizer.ggml.eos_token_id": 4,
          },
          "t.json",
        )
      ),
    "t.json",
    /GGUF tokenizer\.ggml\.eos_token_id is 4, outside the vocabulary of 4 tokens/,
  );
});
