// Model folders whose parts disagree or are not what they claim: refused with the file and the problem named.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { FormatError } from "../../src/errors.ts";
import { openFile } from "../../src/io/byte_source.ts";
import { openModelWeights } from "../../src/io/sharded.ts";
import { checkLayerCount, loadModel } from "../../src/model/load.ts";
import { specFromHfConfig } from "../../src/model/spec.ts";
import { compressModel } from "../../src/pipeline/compress.ts";
import { listing, syntheticModel, tempDir } from "../pipeline/_helpers.ts";

test("a config counting fewer blocks than the weights hold is refused (they were dropped silently)", async () => {
  const dir = await tempDir();
  try {
    const src = join(dir, "model");
    await mkdir(src);
    await syntheticModel(src); // 2 blocks
    const config = JSON.parse(await readFile(join(src, "config.json"), "utf8"));
    const reader = await openModelWeights(src);
    try {
      checkLayerCount(reader, specFromHfConfig(config)); // consistent: fine
      const spec = specFromHfConfig({ ...config, num_hidden_layers: 1 });
      const fewer = (e: Error) =>
        e instanceof FormatError && /weights hold 2 blocks .* but the config says 1/.test(e.message);
      assert.throws(() => checkLayerCount(reader, spec), fewer);
      await assert.rejects(
        compressModel({ spec, reader, name: "s" }, join(dir, "out"), {
          method: "svd",
          ratio: { removed: 0.2 },
          force: true,
        }),
        fewer,
      );
    } finally {
      await reader.close();
    }
    assert.deepEqual(await listing(dir), ["model"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("config.json that is not an object, and a folder where a file is expected, are named", async () => {
  const dir = await tempDir();
  try {
    for (const [text, what] of [["null", "null"], ["[1, 2]", "an array"], ["3", "number"]]) {
      await writeFile(join(dir, "config.json"), text);
      await assert.rejects(
        loadModel(dir),
        (e: Error) =>
          e instanceof FormatError && e.message.includes("config.json") &&
          e.message.endsWith(`config.json must hold a JSON object, got ${what}`),
      );
    }
    await mkdir(join(dir, "model.safetensors"));
    await assert.rejects(
      openFile(join(dir, "model.safetensors")),
      (e: Error) =>
        e instanceof FormatError && /model\.safetensors: cannot read: it is a folder/.test(e.message),
    );
    await assert.rejects(
      openModelWeights(dir),
      (e: Error) =>
        e instanceof FormatError && /model\.safetensors: cannot read: it is a folder/.test(e.message),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
