// compress options that used to be accepted silently: refused before any work, naming the option and value.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { compressModel, type CompressOptions } from "../../src/pipeline/compress.ts";
import { OptionError } from "../../src/errors.ts";
import { listing, openModelInput, syntheticFolder, tempDir } from "./_helpers.ts";

test("compress refuses an unknown allocation or dtype and a string ratio, naming the value", async () => {
  const dir = await tempDir();
  try {
    const src = await syntheticFolder(dir, "model");
    const model = await openModelInput(src);
    const ids = Array.from({ length: 200 }, (_, i) => i % 32);
    const base: CompressOptions = {
      method: "asvd",
      ratio: { removed: 0.2 },
      force: true,
      calibration: { ids, samples: 2, seqlen: 16 },
    };
    const cases: [Partial<CompressOptions>, RegExp][] = [
      [{ allocation: "greedy" as CompressOptions["allocation"] }, /allocation must be .* got "greedy"$/],
      [{ dtype: "F8" as CompressOptions["dtype"] }, /dtype must be .* got "F8"$/],
      [{ ratio: { removed: "0.2" as unknown as number } }, /removed must be a number .* got "0\.2"$/],
      [{ calibration: { ...base.calibration, ids: [NaN, ...ids] } }, /position 0 is NaN/],
    ];
    try {
      for (const [opts, re] of cases) {
        await assert.rejects(
          compressModel(model, join(dir, "out"), { ...base, ...opts }, { inputPath: src }),
          (e: Error) => e instanceof OptionError && re.test(e.message),
        );
      }
    } finally {
      await model.reader.close();
    }
    assert.deepEqual(await listing(dir), ["model"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
