/**
 * GGUF beyond stories260K: Hugging Face reference fixtures converted to GGUF the way llama.cpp's converter does
 * (LLaMA q/k rows permuted for interleaved RoPE; Qwen2 left in place, with biases) must reproduce
 * transformers' logits; and a byte-level BPE ("gpt2") GGUF vocabulary must encode like its tokenizer.json.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { type KvValue, writeGguf } from "./_gguf_builder.ts";
import { loadModel } from "../../src/model/load.ts";
import { hfToGgufName } from "../../src/model/names.ts";
import { permuteQK } from "../../src/model/rope.ts";
import { finalLogits, forwardHidden, loadHead } from "../../src/model/llama.ts";
import { openGguf } from "../../src/io/gguf.ts";
import { tokenizerFromGguf } from "../../src/tokenize/from_gguf.ts";
import { loadHfTokenizer } from "../../src/tokenize/hf.ts";

const FIXTURES = new URL("../fixtures/models/", import.meta.url).pathname;
const BROWN = new URL("../../../shared/models/tinylm-brown/", import.meta.url).pathname;

/** Convert a fixture folder to GGUF bytes, as llama.cpp's converter lays it out. */
async function fixtureAsGguf(name: string, arch: "llama" | "qwen2"): Promise<Uint8Array> {
  const dir = FIXTURES + name;
  const cfg = JSON.parse(readFileSync(`${dir}/config.json`, "utf8"));
  const hf = await loadModel(dir);
  const { spec } = hf;
  const tensors = [];
  for (const t of hf.reader.tensors()) {
    let data = await hf.reader.read(t.name);
    // llama.cpp permutes LLaMA's q/k (weights and biases) for its interleaved-pairs RoPE
    const heads = /q_proj/.test(t.name) ? spec.numHeads : /k_proj/.test(t.name) ? spec.numKvHeads : 0;
    if (arch === "llama" && heads) {
      data = permuteQK({ rows: t.shape[0], cols: t.shape[1] ?? 1, data }, heads).data;
    }
    tensors.push({ name: hfToGgufName(t.name)!, shape: t.shape, data });
  }
  await hf.close();
  const pieces = [
    "<unk>",
    "<s>",
    "</s>",
    ...Array.from({ length: spec.vocabSize - 3 }, (_, i) => `w${i + 3}`),
  ];
  const a = arch;
  const kv: Record<string, KvValue> = {
    "general.architecture": { type: "string", value: arch },
    [`${a}.context_length`]: { type: "u32", value: spec.maxPositions },
    [`${a}.embedding_length`]: { type: "u32", value: spec.hiddenSize },
    [`${a}.feed_forward_length`]: { type: "u32", value: spec.intermediateSize },
    [`${a}.block_count`]: { type: "u32", value: spec.numLayers },
    [`${a}.attention.head_count`]: { type: "u32", value: spec.numHeads },
    [`${a}.attention.head_count_kv`]: { type: "u32", value: spec.numKvHeads },
    [`${a}.attention.key_length`]: { type: "u32", value: spec.headDim },
    [`${a}.rope.dimension_count`]: { type: "u32", value: spec.headDim },
    [`${a}.rope.freq_base`]: { type: "f32", value: spec.ropeTheta },
    [`${a}.attention.layer_norm_rms_epsilon`]: { type: "f32", value: cfg.rms_norm_eps },
    "tokenizer.ggml.model": { type: "string", value: "llama" },
    "tokenizer.ggml.tokens": { type: "strings", value: pieces },
    "tokenizer.ggml.scores": { type: "f32s", value: new Float32Array(pieces.length) },
    "tokenizer.ggml.token_type": { type: "i32s", value: pieces.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : 1)) },
    "tokenizer.ggml.bos_token_id": { type: "u32", value: 1 },
    "tokenizer.ggml.eos_token_id": { type: "u32", value: 2 },
  };
  return writeGguf(kv, tensors);
}

for (const [name, arch] of [["llama-gqa-tiny", "llama"], ["qwen2-tiny", "qwen2"]] as const) {
  test(`GGUF ${arch}: ${name} converted as llama.cpp does matches transformers' logits`, async () => {
    const ref = JSON.parse(readFileSync(`${FIXTURES}${name}/reference.json`, "utf8"));
    const tmp = mkdtempSync(join(tmpdir(), "gguf-model-"));
    try {
      const path = join(tmp, `${name}.gguf`);
      writeFileSync(path, await fixtureAsGguf(name, arch));
      const m = await loadModel(path);
      try {
        assert.equal(m.spec.ropeStyle, arch === "llama" ? "interleaved" : "halves");
        assert.equal(m.spec.attentionBias, arch === "qwen2");
        const head = await loadHead(m.reader, m.spec);
        let maxErr = 0;
        for (const s of ref.sequences) {
          const h = await forwardHidden(m, [Int32Array.from(s.input_ids)]);
          const logits = finalLogits(m.spec, head, h);
          s.logits_positions.forEach((p: number, k: number) => {
            for (let j = 0; j < logits.cols; j++) {
              maxErr = Math.max(maxErr, Math.abs(logits.data[p * logits.cols + j] - s.logits[k][j]));
            }
          });
        }
        assert.ok(maxErr < 1e-4, `max |logit − transformers| = ${maxErr}`);
      } finally {
        await m.close();
      }
    } finally {
      rmSync(tmp, { recursive: true });
    }
  });
}

test("GGUF gpt2 vocabulary: tinylm-brown's byte-level BPE as GGUF metadata encodes brown-valid identically", {
  skip: !existsSync(BROWN + "tokenizer.json"),
}, async () => {
  const t = JSON.parse(readFileSync(BROWN + "tokenizer.json", "utf8"));
  const tokens: string[] = [];
  for (const [k, v] of Object.entries(t.model.vocab as Record<string, number>)) tokens[v] = k;
  for (const a of t.added_tokens) tokens[a.id] = a.content;
  const bytes = writeGguf({
    "tokenizer.ggml.model": { type: "string", value: "gpt2" },
    "tokenizer.ggml.pre": { type: "string", value: "gpt2" },
    "tokenizer.ggml.tokens": { type: "strings", value: tokens },
    "tokenizer.ggml.merges": { type: "strings", value: t.model.merges },
    "tokenizer.ggml.token_type": { type: "i32s", value: tokens.map((_, i) => (i < 3 ? 3 : 1)) },
    "tokenizer.ggml.bos_token_id": { type: "u32", value: 1 },
    "tokenizer.ggml.eos_token_id": { type: "u32", value: 2 },
  }, []);
  const g = await openGguf(bytes);
  const tok = tokenizerFromGguf(g.kv);
  const hf = await loadHfTokenizer(BROWN);
  const text = readFileSync(new URL("../../../shared/data/brown-valid.txt", import.meta.url).pathname, "utf8")
    .slice(0, 30000);
  assert.deepEqual(tok.encode(text, { bos: true }), hf.encode(text, { bos: true }));
  assert.equal(tok.decode(tok.encode(text)), text);
  assert.equal(tok.bosId, 1);
  const bad = new Map(g.kv);
  bad.set("tokenizer.ggml.pre", "some-new-model");
  assert.throws(
    () => tokenizerFromGguf(bad, "x.gguf"),
    /tokenizer\.ggml\.pre "some-new-model" is not supported/,
  );
  bad.set("tokenizer.ggml.model", "bert");
  assert.throws(() => tokenizerFromGguf(bad, "x.gguf"), /"bert" is not supported/);
});
