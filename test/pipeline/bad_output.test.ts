// Pipeline-level bad input (issue 13 §3): --overwrite replaces only this library's own output, concurrent
// overwriting writers leave one whole output and no debris, a missing parent folder and a full disk are named,
// non-block tensors are shape-checked, absurd calibration sizes are refused before any allocation.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { compress, compressModel, type CompressOptions } from "../../src/pipeline/compress.ts";
import { merge } from "../../src/pipeline/merge.ts";
import { planOutput } from "../../src/pipeline/output.ts";
import { isOwnOutput } from "../../src/pipeline/output_dir.ts";
import { fileByteSink } from "../../src/io/safetensors_writer.ts";
import { createSafetensorsWriter } from "../../src/io/safetensors_writer.ts";
import { openModelWeights } from "../../src/io/sharded.ts";
import type { TensorInfo, TensorReader } from "../../src/io/tensor_reader.ts";
import { specFromHfConfig } from "../../src/model/spec.ts";
import { OptionError, ShapeError } from "../../src/errors.ts";
import { listing, openFolder, openModelInput, STORIES, syntheticFolder, tempDir } from "./_helpers.ts";

const SVD: CompressOptions = { method: "svd", ratio: { removed: 0.2 }, force: true };

/** compressModel on the synthetic folder `src` (no tokenizer: not loadable by `compress(path)`). */
async function run(src: string, out: string, opts: CompressOptions = SVD) {
  const model = await openModelInput(src);
  try {
    return await compressModel(model, out, opts, { inputPath: src });
  } finally {
    await model.reader.close();
  }
}
const SLOW = { timeout: 180_000 };

test("overwrite replaces a previous output of this library and refuses anything else", SLOW, async () => {
  const dir = await tempDir();
  try {
    const src = await syntheticFolder(dir, "model");
    const ours = join(dir, "ours");
    await run(src, ours);
    assert.ok(await isOwnOutput(ours));
    const first = JSON.parse(await readFile(join(ours, "config.json"), "utf8")).svd_llm.date;
    await run(src, ours, { ...SVD, ratio: { removed: 0.3 }, overwrite: true });
    const again = JSON.parse(await readFile(join(ours, "config.json"), "utf8")).svd_llm;
    assert.deepEqual(again.ratio, { convention: "removed", value: 0.3 });
    assert.ok(again.date >= first);
    // A merged folder is ours too.
    await merge(ours, join(dir, "dense"));
    await merge(ours, join(dir, "dense"), { overwrite: true });

    const project = join(dir, "project");
    await mkdir(project);
    await writeFile(join(project, "notes.txt"), "my work\n");
    const calibDir = join(dir, "calib");
    await mkdir(calibDir);
    const calib = join(calibDir, "calib.txt");
    await writeFile(calib, "some calibration text\n");
    const lookalike = join(dir, "lookalike"); // a model folder, but not written by this library
    await mkdir(lookalike);
    await writeFile(join(lookalike, "config.json"), JSON.stringify({ model_type: "llama" }));
    for (
      const [target, why] of [
        [project, /holds "notes\.txt"/],
        [calibDir, /holds "calib\.txt"/],
        [calib, /is a file, not a model folder/],
        [lookalike, /no svd_llm section/],
      ] as const
    ) {
      await assert.rejects(
        run(src, target, { ...SVD, overwrite: true }),
        (e: Error) =>
          e instanceof OptionError && e.message.split("\n").length === 1 &&
          /^compress: refusing to replace /.test(e.message) && why.test(e.message),
        target,
      );
    }
    await assert.rejects(
      merge(ours, project, { overwrite: true }),
      /merge: refusing to replace .*notes\.txt/,
    );
    assert.equal(await readFile(join(project, "notes.txt"), "utf8"), "my work\n");
    assert.equal(await readFile(calib, "utf8"), "some calibration text\n");
    assert.deepEqual(await listing(dir), ["calib", "dense", "lookalike", "model", "ours", "project"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test(
  "concurrent overwriting writers: one whole output, no -old or temporary folder, no raw errno",
  SLOW,
  async () => {
    const dir = await tempDir();
    try {
      const src = await syntheticFolder(dir, "model");
      const out = join(dir, "out");
      await run(src, out);
      for (let round = 0; round < 3; round++) {
        const runs = await Promise.allSettled(
          [0.2, 0.3, 0.4, 0.5].map((r) => run(src, out, { ...SVD, ratio: { removed: r }, overwrite: true })),
        );
        for (const r of runs) {
          if (r.status === "rejected") {
            // losing a race is allowed, but with the library's own one-line message
            assert.ok(r.reason instanceof OptionError, String(r.reason));
            assert.match(r.reason.message, /^compress: could not replace/);
          }
        }
        assert.ok(runs.some((r) => r.status === "fulfilled"));
        assert.deepEqual(await listing(dir), ["model", "out"], `round ${round}`);
        const f = await openFolder(out);
        await f.reader.close();
        assert.ok(await isOwnOutput(out));
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);

test("a missing output parent is named as such; nothing is created", async () => {
  const dir = await tempDir();
  try {
    const src = await syntheticFolder(dir, "model");
    await assert.rejects(
      run(src, join(dir, "no", "such", "out")),
      (e: Error) =>
        e instanceof OptionError &&
        e.message ===
          `compress: the output's parent folder ${join(dir, "no", "such")} does not exist; create it first`,
    );
    await writeFile(join(dir, "file"), "x");
    await assert.rejects(
      run(src, join(dir, "file", "out")),
      /parent folder .*file is not a folder/,
    );
    assert.deepEqual(await listing(dir), ["file", "model"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a full disk is reported with the path being written", async () => {
  const enospc = Object.assign(new Error("No space left on device"), { code: "ENOSPC" });
  let aborted = false;
  const sink = fileByteSink(
    {
      write: () => Promise.reject(enospc),
      sync: () => Promise.resolve(),
      close: () => Promise.resolve(),
    },
    "/data/out/model.safetensors",
    { close: () => Promise.resolve(), abort: () => Promise.resolve(void (aborted = true)) },
  );
  await assert.rejects(
    sink.write(new Uint8Array(8)),
    (e: Error & { code?: string }) =>
      e.message === "write /data/out/model.safetensors: no space left on device" && e.code === "ENOSPC",
  );
  await sink.abort();
  assert.ok(aborted);
});

test("tensors outside the blocks are shape-checked before anything is written", SLOW, async () => {
  const dir = await tempDir();
  try {
    const src = await syntheticFolder(dir, "model");
    // Same weights, lm_head one row short: the output would not load.
    const bad = join(dir, "bad");
    await mkdir(bad);
    await writeFile(join(bad, "config.json"), await readFile(join(src, "config.json")));
    const r = await openModelWeights(src);
    const plan = r.tensors().map((t) => ({
      name: t.name,
      dtype: "F32" as const,
      shape: t.name === "lm_head.weight" ? [31, 16] : [...t.shape],
    }));
    const w = await createSafetensorsWriter(join(bad, "model.safetensors"), plan);
    for (const p of plan) {
      await w.write(
        p.name,
        (await r.read(p.name)).subarray(0, p.shape.reduce((a, b) => a * b, 1)),
      );
    }
    await w.close();
    await r.close();
    const model = await openModelInput(bad);
    try {
      await assert.rejects(
        compressModel(model, join(dir, "out"), SVD, { inputPath: bad }),
        (e: Error) =>
          e instanceof ShapeError &&
          /^compress: lm_head\.weight in .* is \[31, 16\], but the config says \[32, 16\] \(vocab_size × hidden_size\)$/
            .test(e.message),
      );
    } finally {
      await model.reader.close();
    }
    // An embedding that disagrees with vocab_size.
    const cfg = JSON.parse(await readFile(join(src, "config.json"), "utf8"));
    const wrongVocab = {
      spec: specFromHfConfig({ ...cfg, vocab_size: 40 }),
      reader: await openModelWeights(src),
      name: "s",
    };
    try {
      await assert.rejects(
        compressModel(wrongVocab, join(dir, "out"), SVD),
        /compress: model\.embed_tokens\.weight in .* is \[32, 16\], but the config says \[40, 16\]/,
      );
    } finally {
      await wrongVocab.reader.close();
    }
    assert.deepEqual(await listing(dir), ["bad", "model"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("planning the output of a 200k-tensor header is linear (a Set, not a quadratic scan)", () => {
  const spec = specFromHfConfig({
    model_type: "llama",
    hidden_size: 8,
    intermediate_size: 8,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    vocab_size: 4,
  });
  const infos: TensorInfo[] = [
    { name: "model.embed_tokens.weight", dtype: "F32", shape: [4, 8], byteLength: 128 },
    { name: "model.norm.weight", dtype: "F32", shape: [8], byteLength: 32 },
  ];
  for (let i = 0; i < 200_000; i++) {
    infos.push({ name: `extra.${i}`, dtype: "F16", shape: [1], byteLength: 2 });
  }
  const byName = new Map(infos.map((t) => [t.name, t]));
  const reader = {
    name: "huge",
    metadata: {},
    tensors: () => infos,
    has: (n: string) => byName.has(n),
    info: (n: string) => byName.get(n)!,
  } as unknown as TensorReader;
  const out = planOutput(reader, { ...spec, tieWordEmbeddings: true }, {}, {
    factorDtype: "F32",
    gguf: false,
  });
  assert.equal(out.plan.length, 200_002);
  assert.equal(out.outside.length, 200_002);
  assert.equal(out.plan.at(-1)!.dtype, "F16");
});

test("absurd calibration sizes are refused before tokenising or allocating", async () => {
  const dir = await tempDir();
  try {
    const ids = Array.from({ length: 300 }, (_, i) => i % 32);
    for (
      const [calibration, re] of [
        [
          { ids, samples: 1e8 },
          /^compress: calibration\.samples must be a whole number from 1 to 65536, got 100000000$/,
        ],
        [{ ids, samples: 2.5 }, /calibration\.samples must be a whole number/],
        [{ ids, samples: 65536, seqlen: 2048 }, /would hold \d+\.\d GiB of hidden states \(at most 8 GiB\)/],
      ] as const
    ) {
      await assert.rejects(
        compress(STORIES, join(dir, "out"), { method: "svdllm", ratio: { removed: 0.2 }, calibration }),
        (e: Error) => e instanceof OptionError && re.test(e.message),
      );
    }
    assert.deepEqual(await readdir(dir), []);
    assert.ok((await stat(dir)).isDirectory());
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
