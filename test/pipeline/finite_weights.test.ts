// Non-finite weights: refused where they are read, naming the tensor, never a NaN perplexity or a NaN model.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { compressModel } from "../../src/pipeline/compress.ts";
import { merge } from "../../src/pipeline/merge.ts";
import { NumericError } from "../../src/errors.ts";
import { openModelWeights } from "../../src/io/sharded.ts";
import { checkedReader } from "../../src/io/tensor_reader.ts";
import { listing, openModelInput, syntheticFolder, tempDir } from "./_helpers.ts";

const SLOW = { timeout: 600_000 };

test(
  "NaN or Inf in any weight is refused where it is read, naming the tensor and the element",
  SLOW,
  async () => {
    const dir = await tempDir();
    try {
      // A linear (svd never runs a forward pass: the read names it, not the factorisation).
      const src = await syntheticFolder(dir, "nan-linear", {
        tensor: "model.layers.1.self_attn.k_proj.weight",
        index: 19,
      });
      const reader = checkedReader(await openModelWeights(src));
      assert.equal(checkedReader(reader), reader, "checking twice wraps once");
      await assert.rejects(
        reader.read("model.layers.1.self_attn.k_proj.weight"),
        (e: Error) =>
          e instanceof NumericError &&
          /read model\.layers\.1\.self_attn\.k_proj\.weight from .*model\.safetensors: non-finite value NaN at element 19 \(row 1, column 3\)/
            .test(e.message),
      );
      assert.equal((await reader.read("model.layers.1.self_attn.q_proj.weight")).length, 256);
      await reader.close();
      const model = await openModelInput(src);
      await assert.rejects(
        compressModel(model, join(dir, "o1"), { method: "svd", ratio: { removed: 0.2 }, force: true }, {
          inputPath: src,
        }),
        (e: Error) =>
          e instanceof NumericError && /model\.layers\.1\.self_attn\.k_proj\.weight/.test(e.message),
      );
      await model.reader.close();
      // Tensors no method factors, which used to be copied into a NaN model: the final norm, the embeddings.
      for (const tensor of ["model.norm.weight", "model.embed_tokens.weight", "lm_head.weight"]) {
        const name = tensor.split(".").slice(-2, -1)[0];
        const src2 = await syntheticFolder(dir, `nan-${name}`, { tensor, index: 3 });
        const m2 = await openModelInput(src2);
        await assert.rejects(
          compressModel(m2, join(dir, `o-${name}`), { method: "svd", ratio: { removed: 0.2 }, force: true }, {
            inputPath: src2,
          }),
          (e: Error) => e instanceof NumericError && e.message.includes(`read ${tensor} from`),
        );
        await m2.reader.close();
      }
      // merge reads a compressed folder: one whose final norm holds a NaN is refused the same way.
      const clean = await syntheticFolder(dir, "clean");
      const low = join(dir, "low");
      const m3 = await openModelInput(clean);
      await compressModel(m3, low, { method: "svd", ratio: { removed: 0.2 }, force: true }, {
        inputPath: clean,
      });
      await m3.reader.close();
      await poisonSafetensors(join(low, "model.safetensors"), "model.norm.weight", 3);
      await assert.rejects(
        merge(low, join(dir, "merged")),
        (e: Error) => e instanceof NumericError && e.message.includes("read model.norm.weight from"),
      );
      assert.deepEqual(await listing(dir), [
        "clean",
        "low",
        "nan-embed_tokens",
        "nan-linear",
        "nan-lm_head",
        "nan-norm",
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);

/** Overwrite float32 element `index` of tensor `name` in a safetensors file with NaN. */
async function poisonSafetensors(file: string, name: string, index: number): Promise<void> {
  const bytes = new Uint8Array(await readFile(file));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  assert.equal(header[name].dtype, "F32");
  view.setFloat32(8 + headerLen + header[name].data_offsets[0] + 4 * index, NaN, true);
  await writeFile(file, bytes);
}
