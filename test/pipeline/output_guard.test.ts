// Output destinations that would damage the input: refused before any work, the input left whole.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { compress, compressModel } from "../../src/pipeline/compress.ts";
import { merge } from "../../src/pipeline/merge.ts";
import { FormatError, OptionError } from "../../src/errors.ts";
import { listing, openModelInput, STORIES, syntheticFolder, tempDir } from "./_helpers.ts";

const SLOW = { timeout: 600_000 };

test(
  "an output inside the input folder is refused, even with overwrite: the input stays whole",
  SLOW,
  async () => {
    const dir = await tempDir();
    try {
      const src = await syntheticFolder(dir, "model");
      const weights = join(src, "model.safetensors");
      const before = (await stat(weights)).size;
      const model = await openModelInput(src);
      try {
        for (const output of [weights, join(src, "config.json"), join(src, "sub")]) {
          await assert.rejects(
            compressModel(model, output, {
              method: "svd",
              ratio: { removed: 0.2 },
              force: true,
              overwrite: true,
            }, {
              inputPath: src,
            }),
            (e: Error) =>
              e instanceof OptionError && /^compress: .*lies inside the input folder/.test(e.message),
          );
        }
      } finally {
        await model.reader.close();
      }
      await assert.rejects(
        merge(src, weights, { overwrite: true }),
        (e: Error) => e instanceof OptionError && /^merge: .*lies inside the input folder/.test(e.message),
      );
      await assert.rejects(
        merge(src, src, { overwrite: true }),
        (e: Error) => e instanceof OptionError && /^merge: .*would overwrite the input/.test(e.message),
      );
      assert.ok((await stat(weights)).isFile());
      assert.equal((await stat(weights)).size, before);
      assert.deepEqual(await listing(src), ["config.json", "model.safetensors"]);
      // An empty output path is refused before any work (it used to fail on the final rename).
      await assert.rejects(
        compress(src, "", { method: "svd", ratio: { removed: 0.2 }, force: true }),
        (e: Error) => e instanceof OptionError && /output must be a folder path/.test(e.message),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);

test("merge refuses a dense model and a GGUF file before writing anything", SLOW, async () => {
  const dir = await tempDir();
  try {
    const src = await syntheticFolder(dir, "dense");
    const out = join(dir, "merged");
    await assert.rejects(
      merge(src, out),
      (e: Error) => e instanceof FormatError && /merge: no low-rank factors .* dense already/.test(e.message),
    );
    await assert.rejects(
      merge(STORIES, out),
      (e: Error) => e instanceof OptionError && /^merge: .*stories260K\.gguf is a GGUF file/.test(e.message),
    );
    assert.deepEqual(await listing(dir), ["dense"], "nothing written beside the input");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
