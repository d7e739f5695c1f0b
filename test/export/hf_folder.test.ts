// A compressed folder no tool misreads: config.json of our own model type with an auto_map to the modeling file
// written beside the weights, reloaded by our loader (and its pre-svd_llama form still loads, computing the
// same); merge gives back a plain LlamaForCausalLM; an unsupported base model type is refused by name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { compress } from "../../src/pipeline/compress.ts";
import { merge } from "../../src/pipeline/merge.ts";
import { loadModel } from "../../src/model/load.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { compressedConfig, denseConfig, modelingFile } from "../../src/model/hf_config.ts";
import { OptionError } from "../../src/errors.ts";
import { SVD_A } from "../../src/model/names.ts";
import { STORIES, storiesText, tempDir } from "../pipeline/_helpers.ts";

const SLOW = { timeout: 600_000 };

async function pplOf(dir: string, text: string): Promise<number> {
  const m = await loadModel(dir);
  try {
    const ids = m.tokenizer.encode(text.slice(0, 4000), { bos: true });
    return (await perplexity(m, ids, { window: 128 })).ppl;
  } finally {
    await m.close();
  }
}

test(
  "compressed folder: svd_llama config with auto_map, modeling file beside it, reloaded by our loader",
  SLOW,
  async () => {
    const dir = await tempDir("svdllm-hf-");
    try {
      const out = join(dir, "svd");
      await compress(STORIES, out, { method: "svd", ratio: { removed: 0.3 } });
      const config = JSON.parse(await readFile(join(out, "config.json"), "utf8"));
      assert.equal(config.model_type, "svd_llama");
      assert.deepEqual(config.architectures, ["SvdLlamaForCausalLM"]);
      assert.deepEqual(config.auto_map, {
        AutoConfig: "modeling_svd_llama.SvdLlamaConfig",
        AutoModelForCausalLM: "modeling_svd_llama.SvdLlamaForCausalLM",
      });
      assert.equal(await readFile(join(out, "modeling_svd_llama.py"), "utf8"), modelingFile("llama"));
      const ranked = Object.values(config.svd_llm.ranks).filter((r) => typeof r === "number");
      assert.ok(ranked.length > 0);

      const text = await storiesText();
      const m = await loadModel(out);
      try {
        assert.equal(m.spec.numLayers, config.num_hidden_layers);
        assert.ok(m.reader.has(`model.layers.0.self_attn.q_proj.${SVD_A}`));
      } finally {
        await m.close();
      }
      const ppl = await pplOf(out, text);
      assert.ok(Number.isFinite(ppl) && ppl > 1);

      // merge: dense again, so a plain LlamaForCausalLM without auto_map or modeling file
      const merged = join(dir, "merged");
      await merge(out, merged);
      const mc = JSON.parse(await readFile(join(merged, "config.json"), "utf8"));
      assert.equal(mc.model_type, "llama");
      assert.deepEqual(mc.architectures, ["LlamaForCausalLM"]);
      assert.equal(mc.auto_map, undefined);
      assert.equal(mc.svd_llm.merged, true);
      assert.ok(!existsSync(join(merged, "modeling_svd_llama.py")));
      const mppl = await pplOf(merged, text);
      assert.ok(Math.abs(mppl - ppl) / ppl < 1e-4, `merged ${mppl} vs factored ${ppl}`);

      // an output written before this change (model_type llama over the same factors) still loads, equally
      await writeFile(
        join(out, "config.json"),
        JSON.stringify({ ...denseConfig(config), svd_llm: config.svd_llm }),
      );
      assert.equal(await pplOf(out, text), ppl);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);

test("compressedConfig / denseConfig: each base type round-trips; svd_ types are not doubled", () => {
  for (const [base, cls] of [["llama", "SvdLlama"], ["mistral", "SvdMistral"], ["qwen2", "SvdQwen2"]]) {
    const cfg = {
      model_type: base,
      architectures: ["X"],
      hidden_size: 8,
      svd_llm: { ranks: { a: 2, b: null } },
    };
    const c = compressedConfig(cfg);
    assert.equal(c.model_type, `svd_${base}`);
    assert.deepEqual(c.architectures, [`${cls}ForCausalLM`]);
    assert.equal(compressedConfig(c).model_type, `svd_${base}`);
    assert.match(modelingFile(base), new RegExp(`class ${cls}ForCausalLM\\(`));
    const d = denseConfig(c);
    assert.equal(d.model_type, base);
    assert.equal(d.auto_map, undefined);
    assert.equal(d.hidden_size, 8);
  }
  assert.deepEqual(denseConfig({ model_type: "llama", x: 1 }), { model_type: "llama", x: 1 });
});

test("bad input: an unsupported base model type or a bad rank is refused by name", () => {
  assert.throws(
    () => compressedConfig({ model_type: "gpt2", svd_llm: { ranks: { a: 2 } } }),
    (e) =>
      e instanceof OptionError &&
      /model_type "gpt2" is not supported \(supported: llama, mistral, qwen2\)/.test(e.message),
  );
  assert.throws(() => modelingFile("phi3"), /model_type "phi3" is not supported/);
  assert.throws(
    () => compressedConfig({ model_type: "llama", svd_llm: { ranks: { "model.layers.0.mlp.up_proj": 0 } } }),
    (e) =>
      e instanceof OptionError &&
      /ranks\["model.layers.0.mlp.up_proj"\] is 0, not a positive integer/.test(e.message),
  );
});
