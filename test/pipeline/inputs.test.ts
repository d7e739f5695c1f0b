// The driver's input checks: calibration text that is not text, a compressed folder's broken config.json in
// merge, URL options reaching the loader, and numeric errors naming the tensor and its file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { FormatError, NumericError } from "../../src/errors.ts";
import { compress, compressModel } from "../../src/pipeline/compress.ts";
import { merge } from "../../src/pipeline/merge.ts";
import { named } from "../../src/pipeline/block_step.ts";
import { memorySink } from "../../src/pipeline/sink.ts";
import { tarBlob } from "../../src/io/file_set.ts";
import { openModelInput, STORIES, syntheticFolder, tempDir } from "./_helpers.ts";

test("compress: binary calibration.text is refused before any work, naming the option", async () => {
  const dir = await tempDir();
  try {
    const out = join(dir, "out");
    for (const text of ["GGUF\u0003\u0000\u0000\u0000", "Once upon\u0000 a time", "   \n"]) {
      await assert.rejects(
        compress(STORIES, out, { method: "svdllm", ratio: { removed: 0.2 }, calibration: { text } }),
        (e: Error) => /calibration\.text/.test(e.message) && !/\n/.test(e.message),
      );
      assert.equal(existsSync(out), false, "nothing written");
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("merge: a broken config.json in the compressed folder is named, and nothing is left", async () => {
  const dir = await tempDir();
  try {
    const src = await syntheticFolder(dir, "model");
    const packed = join(dir, "packed");
    const model = await openModelInput(src);
    try {
      await compressModel(model, packed, { method: "svd", ratio: { removed: 0.2 } }, { inputPath: src });
    } finally {
      await model.reader.close();
    }
    await writeFile(join(packed, "config.json"), '{"model_type": "llama",');
    const dense = join(dir, "dense");
    await assert.rejects(merge(packed, dense), (e: Error) => {
      assert.ok(e instanceof FormatError, e.message);
      assert.match(e.message, /packed[\\/]config\.json: merge: read config\.json: not valid JSON/);
      return true;
    });
    assert.equal(existsSync(dense), false);
    await writeFile(join(packed, "config.json"), "[1, 2]");
    await assert.rejects(
      merge(packed, dense),
      /config\.json: merge: read config\.json must hold a JSON object/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("compress: url options (here a custom fetch) reach the loader of an http(s) model", async () => {
  const seen: string[] = [];
  const fetch = ((input: string | URL | Request) => {
    seen.push(String(input instanceof Request ? input.url : input));
    return Promise.reject(new TypeError("offline test fetch"));
  }) as typeof globalThis.fetch;
  const dir = await tempDir();
  try {
    for (const url of ["http://models.invalid/m.gguf", "http://models.invalid/folder"]) {
      await assert.rejects(
        compress(url, join(dir, "out"), {
          method: "svd",
          ratio: { removed: 0.2 },
          url: { fetch, retries: 0 },
        }),
        /offline test fetch/,
      );
    }
    assert.ok(seen.some((u) => u.startsWith("http://models.invalid/m.gguf")), seen.join());
    assert.ok(seen.some((u) => u.startsWith("http://models.invalid/folder/")), seen.join());
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("named: a NumericError gets the tensor and file in front; other errors pass unchanged", () => {
  const label = "model.layers.3.self_attn.q_proj.weight (m.safetensors)";
  assert.throws(
    () =>
      named(label, () => {
        throw new NumericError("bidiagonal QR did not converge (n = 33)");
      }),
    (e: Error) =>
      e instanceof NumericError && e.message === `${label}: bidiagonal QR did not converge (n = 33)`,
  );
  const plain = new RangeError("x");
  assert.throws(() =>
    named(label, () => {
      throw plain;
    }), (e) => e === plain);
  assert.equal(named(label, () => 7), 7);
});

test("compress: a tar of a model folder given as a Blob compresses as the folder does; other bytes are named", async () => {
  const folder = new URL("../fixtures/models/llama-gqa-tiny/", import.meta.url).pathname;
  const files = new Map<string, Uint8Array[]>();
  for (const name of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]) {
    files.set(name, [new Uint8Array(await readFile(join(folder, name)))]);
  }
  const opts = { method: "svd", ratio: { removed: 0.3 } } as const;
  const fromFolder = memorySink(), fromTar = memorySink();
  await compress(folder, fromFolder, opts);
  await compress(new File([tarBlob(files, "tiny")], "tiny.tar"), fromTar, opts);
  const [a, b] = [await fromFolder.files, await fromTar.files];
  assert.deepEqual(b.get("model.safetensors"), a.get("model.safetensors"));
  // Neither GGUF nor tar (the tar magic one byte off): refused, naming the Blob.
  const bytes = new Uint8Array(await tarBlob(files, "tiny").arrayBuffer());
  bytes[257] ^= 1;
  await assert.rejects(
    compress(new File([bytes], "odd.tar"), memorySink(), opts),
    (e: Error) => /odd\.tar is not a GGUF file/.test(e.message),
  );
});
