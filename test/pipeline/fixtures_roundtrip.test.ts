/**
 * The compressed-model format carries every architecture detail through (Qwen2 biases, tied embeddings,
 * sharded inputs, GQA): the factored model and its merged dense copy give the same logits, and the biases and
 * untouched tensors arrive bit for bit.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compress } from "../../src/pipeline/compress.ts";
import { merge } from "../../src/pipeline/merge.ts";
import { loadModel } from "../../src/model/load.ts";
import { allLogits, maxAbsDiff, ROOT } from "../model/_hf_fixtures.ts";

for (const name of ["qwen2-tiny", "llama-tied-tiny", "llama-sharded-tiny"]) {
  test(`compress, reload, merge: ${name} keeps biases and untouched tensors, factored = merged`, async () => {
    const dir = await mkdtemp(join(tmpdir(), "svd-llm-fixture-"));
    const src = await loadModel(join(ROOT, name));
    try {
      const out = join(dir, "svd"), dense = join(dir, "dense");
      await compress(join(ROOT, name), out, { method: "svd", ratio: { removed: 0.2 } });
      await merge(out, dense);
      const f = await loadModel(out), d = await loadModel(dense);
      try {
        for (const t of src.reader.tensors()) {
          const factored = /\.(q|k|v|o|gate|up|down)_proj\.weight$/.test(t.name);
          assert.equal(f.reader.has(t.name), !factored, `${t.name} in the compressed model`);
          if (!factored) {
            assert.deepEqual(
              await f.reader.read(t.name),
              await src.reader.read(t.name),
              `${t.name} unchanged`,
            );
          }
        }
        assert.equal(f.spec.attentionBias, src.spec.attentionBias);
        assert.equal(f.spec.tieWordEmbeddings, src.spec.tieWordEmbeddings);
        const ids = [Int32Array.from({ length: 12 }, (_, i) => (i * 7 + 3) % src.spec.vocabSize)];
        const [lf] = await allLogits(f, ids),
          [ld] = await allLogits(d, ids),
          [ls] = await allLogits(src, ids);
        assert.ok(maxAbsDiff(lf, ld) <= 1e-4, "factored and merged logits agree");
        assert.ok(maxAbsDiff(lf, ls) > 1e-6, "compression changed the model at all");
      } finally {
        await f.close();
        await d.close();
      }
    } finally {
      await src.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
}
