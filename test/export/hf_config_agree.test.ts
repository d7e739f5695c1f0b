// The two config.json writers, the compressed folder's (`compress`) and the ONNX folder's (`exportOnnx`),
// build the architecture's fields with one function (`specConfig`). Here the files they write agree on every
// field both hold, for a GGUF-sourced model (where both come from the spec alone) and for every Hugging Face
// fixture (where the compressed folder keeps the source's config and the export writes the spec's values over
// it: a disagreement would be a field the spec reads differently from transformers).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { exportOnnx } from "../../src/export/onnx.ts";
import { denseConfig, specConfig } from "../../src/model/hf_config.ts";
import { loadModel } from "../../src/model/load.ts";
import { compress } from "../../src/pipeline/compress.ts";
import { STORIES, tempDir } from "../pipeline/_helpers.ts";
import { FIXTURES, HF_FIXTURES } from "./_fixtures.ts";

/** config.json of `input` compressed (svd, dense types restored) and exported to ONNX. */
async function bothConfigs(input: string): Promise<[Record<string, unknown>, Record<string, unknown>]> {
  const parent = await tempDir("svdllm-config-");
  try {
    const folder = join(parent, "compressed"), onnx = join(parent, "onnx");
    await compress(input, folder, { method: "svd", ratio: { removed: 0.5 }, force: true });
    await exportOnnx(input, onnx);
    const read = async (dir: string) => JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    // The compressed folder names its own model type (svd_llama, with an auto_map): undone as `merge` does.
    return [denseConfig(await read(folder)), await read(onnx)];
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
}

/** Every key both configs hold, with the one's value where the other's differs. */
function disagreements(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  return Object.keys(a).filter((k) => k in b && !isDeepStrictEqual(a[k], b[k])).map((k) =>
    `${k}: compressed ${JSON.stringify(a[k])}, onnx ${JSON.stringify(b[k])}`
  );
}

test("config.json: compress and exportOnnx agree on every shared field of a GGUF-sourced model", async () => {
  const [compressed, onnx] = await bothConfigs(STORIES);
  assert.deepEqual(disagreements(compressed, onnx), []);
  // Both are built from the spec alone: every architecture field is in both.
  const m = await loadModel(STORIES);
  try {
    for (const k of Object.keys(specConfig(m.spec))) {
      assert.ok(k in compressed && k in onnx, `${k} missing from a GGUF-sourced config.json`);
    }
    assert.equal(onnx.architectures?.toString(), "LlamaForCausalLM");
    assert.equal(onnx.vocab_size, m.spec.vocabSize);
  } finally {
    await m.close();
  }
});

for (const name of HF_FIXTURES) {
  test(`config.json: compress and exportOnnx agree on every shared field of fixture ${name}`, async () => {
    const [compressed, onnx] = await bothConfigs(join(FIXTURES, name));
    assert.deepEqual(disagreements(compressed, onnx), []);
    const source = JSON.parse(await readFile(join(FIXTURES, name, "config.json"), "utf8"));
    for (const k of ["model_type", "hidden_size", "num_hidden_layers", "num_key_value_heads", "vocab_size"]) {
      assert.ok(k in compressed && k in onnx, `${k} missing from ${name}'s config.json`);
      assert.deepEqual(onnx[k], source[k], `${name}: ${k} differs from the source's config.json`);
    }
  });
}
