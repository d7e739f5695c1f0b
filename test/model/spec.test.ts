/** Model spec from config.json and GGUF metadata; tensor-name maps. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { specFromGguf, specFromHfConfig } from "../../src/model/spec.ts";
import { ggufToHfName, hfToGgufName, LINEAR_NAMES, linearPrefix } from "../../src/model/names.ts";
import { openGguf } from "../../src/io/gguf.ts";
import { FormatError, OptionError } from "../../src/errors.ts";

const LLAMA = {
  model_type: "llama",
  hidden_size: 256,
  intermediate_size: 688,
  num_hidden_layers: 6,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 512,
  vocab_size: 4096,
  bos_token_id: 1,
  eos_token_id: 2,
};

test("spec: Hugging Face configs of llama, mistral and qwen2", () => {
  const s = specFromHfConfig(LLAMA);
  assert.equal(s.headDim, 32);
  assert.equal(s.numKvHeads, 4);
  assert.equal(s.ropeStyle, "halves");
  assert.equal(s.attentionBias, false);
  assert.equal(s.tieWordEmbeddings, false);
  const q = specFromHfConfig({
    ...LLAMA,
    model_type: "qwen2",
    tie_word_embeddings: true,
    eos_token_id: [7, 8],
  });
  assert.equal(q.attentionBias, true);
  assert.equal(q.tieWordEmbeddings, true);
  assert.equal(q.eosTokenId, 7);
  const m = specFromHfConfig({
    ...LLAMA,
    model_type: "mistral",
    num_key_value_heads: undefined,
    head_dim: 16,
  });
  assert.equal(m.numKvHeads, 8);
  assert.equal(m.headDim, 16);
  assert.equal(m.maxPositions, 512);
  const slid = specFromHfConfig({ ...LLAMA, model_type: "mistral", sliding_window: 128 });
  assert.equal(slid.slidingWindow, 128);
  assert.equal(slid.maxPositions, 512);
  assert.equal(specFromHfConfig({ ...LLAMA, sliding_window: 128 }).slidingWindow, undefined);
  assert.equal(
    specFromHfConfig({ ...LLAMA, model_type: "qwen2", sliding_window: 128 }).slidingWindow,
    undefined,
  );
  assert.throws(
    () => specFromHfConfig({ ...LLAMA, model_type: "qwen2", use_sliding_window: true, sliding_window: 128 }),
    /sliding/,
  );
  const l3 = specFromHfConfig({
    ...LLAMA,
    rope_scaling: {
      rope_type: "llama3",
      factor: 32,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  });
  assert.deepEqual(l3.ropeScaling, {
    type: "llama3",
    factor: 32,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositions: 8192,
  });
  assert.equal(specFromHfConfig({ ...LLAMA, rope_scaling: { rope_type: "default" } }).ropeScaling, undefined);
  const v5 = specFromHfConfig({
    ...LLAMA,
    rope_theta: undefined,
    rope_parameters: { rope_type: "linear", rope_theta: 5e5, factor: 2 },
  });
  assert.equal(v5.ropeTheta, 5e5);
  assert.deepEqual(v5.ropeScaling, { type: "linear", factor: 2 });
});

test("spec: unsupported or broken configs name the field", () => {
  assert.throws(
    () => specFromHfConfig({ ...LLAMA, model_type: "gpt2" }),
    (e: Error) => e instanceof OptionError && /gpt2/.test(e.message),
  );
  assert.throws(
    () => specFromHfConfig({ ...LLAMA, hidden_size: "big" }),
    (e: Error) => e instanceof FormatError && /hidden_size/.test(e.message),
  );
  assert.throws(() => specFromHfConfig({ ...LLAMA, intermediate_size: undefined }), /intermediate_size/);
  assert.throws(() => specFromHfConfig({ ...LLAMA, num_key_value_heads: 3 }), /not a multiple/);
  assert.throws(
    () => specFromHfConfig({ ...LLAMA, rope_scaling: { type: "dynamic", factor: 2 } }),
    /rope_scaling/,
  );
  assert.throws(
    () => specFromHfConfig({ ...LLAMA, rope_scaling: { rope_type: "llama3", factor: 8 } }),
    (e: Error) => e instanceof FormatError && /rope_scaling\.low_freq_factor/.test(e.message),
  );
  assert.throws(() => specFromHfConfig({ ...LLAMA, hidden_act: "gelu" }), /hidden_act/);
});

test("spec: stories260K GGUF metadata", async () => {
  const g = await openGguf(new URL("../../models/stories260K/stories260K.gguf", import.meta.url).pathname);
  const s = specFromGguf(g.kv, g.name);
  await g.close();
  assert.deepEqual(
    [s.hiddenSize, s.intermediateSize, s.numLayers, s.numHeads, s.numKvHeads, s.headDim, s.vocabSize],
    [64, 172, 5, 8, 4, 8, 512],
  );
  assert.equal(s.ropeStyle, "interleaved");
  assert.equal(s.ropeTheta, 10000);
  assert.equal(s.bosTokenId, 1);
  const bad = new Map(g.kv);
  bad.set("general.architecture", "gpt2");
  assert.throws(() => specFromGguf(bad), OptionError);
  const lin = new Map(g.kv);
  lin.set("llama.rope.scaling.type", "linear");
  lin.set("llama.rope.scaling.factor", 4);
  assert.deepEqual(specFromGguf(lin).ropeScaling, { type: "linear", factor: 4 });
  lin.set("llama.rope.scaling.type", "yarn");
  assert.throws(() => specFromGguf(lin), /yarn/);
  const missing = new Map(g.kv);
  missing.delete("llama.block_count");
  assert.throws(() => specFromGguf(missing), /llama\.block_count/);
});

test("names: GGUF ↔ Hugging Face map", () => {
  assert.equal(ggufToHfName("token_embd.weight"), "model.embed_tokens.weight");
  assert.equal(ggufToHfName("output.weight"), "lm_head.weight");
  assert.equal(ggufToHfName("output_norm.weight"), "model.norm.weight");
  assert.equal(ggufToHfName("blk.12.attn_output.weight"), "model.layers.12.self_attn.o_proj.weight");
  assert.equal(ggufToHfName("blk.0.ffn_norm.weight"), "model.layers.0.post_attention_layernorm.weight");
  assert.equal(ggufToHfName("blk.0.attn_q.bias"), "model.layers.0.self_attn.q_proj.bias");
  assert.equal(ggufToHfName("rope_freqs.weight"), undefined);
  const stems = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
  LINEAR_NAMES.forEach((n, j) => {
    for (const suffix of ["weight", "svd_a", "svd_b", "bias"]) {
      const hf = `${linearPrefix(3, n)}.${suffix}`;
      assert.equal(ggufToHfName(`blk.3.${stems[j]}.${suffix}`), hf);
      assert.equal(hfToGgufName(hf), `blk.3.${stems[j]}.${suffix}`);
    }
  });
  for (const n of ["token_embd.weight", "output.weight", "output_norm.weight", "blk.2.attn_norm.weight"]) {
    assert.equal(hfToGgufName(ggufToHfName(n)!), n);
  }
});
