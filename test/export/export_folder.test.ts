// exportOnnx and the CLI's export command: the folder layout, the streamed file equal to the in-memory
// encoding, external data equal to inline weights, and bad input refused with nothing left behind.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { exportOnnx } from "../../src/export/onnx.ts";
import { cmdExport } from "../../src/cli/export.ts";
import { loadModel } from "../../src/model/load.ts";
import { NumericError, OptionError } from "../../src/errors.ts";
import { feeds, maxAbsDiff, onnxBytes, ort, session } from "./_onnx.ts";
import { openModelInput, STORIES, syntheticFolder, tempDir } from "../pipeline/_helpers.ts";

test("exportOnnx: folder layout; the streamed model.onnx equals the in-memory encoding", async () => {
  const parent = await tempDir("svdllm-onnx-");
  try {
    const out = join(parent, "stories-onnx");
    const r = await exportOnnx(STORIES, out);
    assert.deepEqual(r.files.slice(0, 3), ["onnx/model.onnx", "config.json", "generation_config.json"]);
    const config = JSON.parse(await readFile(join(out, "config.json"), "utf8"));
    assert.equal(config.num_key_value_heads, 4);
    assert.equal(config.head_dim, 8);
    assert.equal(config["transformers.js_config"].use_external_data_format, false);
    const file = new Uint8Array(await readFile(join(out, "onnx/model.onnx")));
    const m = await loadModel(STORIES);
    try {
      assert.deepEqual(file, await onnxBytes(m));
    } finally {
      await m.close();
    }
    assert.equal(r.bytes, file.length);
    assert.deepEqual(await readdir(parent), ["stories-onnx"]); // no temporary folder left
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});

test("exportOnnx: external data (model.onnx_data) runs and gives the inline model's logits", async () => {
  const parent = await tempDir("svdllm-onnx-");
  try {
    const out = join(parent, "ext");
    const r = await exportOnnx(STORIES, out, { externalData: true });
    assert.ok(r.files.includes("onnx/model.onnx_data"));
    const graph = new Uint8Array(await readFile(join(out, "onnx/model.onnx")));
    const data = new Uint8Array(await readFile(join(out, "onnx/model.onnx_data")));
    assert.ok(graph.length < data.length, "the weights should be outside model.onnx");
    const ext = await ort.InferenceSession.create(graph, {
      externalData: [{ path: "model.onnx_data", data }],
    });
    const m = await loadModel(STORIES);
    const inline = await session(await onnxBytes(m));
    try {
      const ids = Int32Array.of(1, 403, 407, 261, 378, 9);
      const a = await ext.run(feeds(m, ids, 0)), b = await inline.run(feeds(m, ids, 0));
      assert.equal(maxAbsDiff(a.logits.data as Float32Array, b.logits.data as Float32Array), 0);
    } finally {
      await ext.release();
      await inline.release();
      await m.close();
    }
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});

test("exportOnnx: bad input is refused by name, and nothing is left under the output", async () => {
  const parent = await tempDir("svdllm-onnx-");
  try {
    const out = join(parent, "out");
    await assert.rejects(exportOnnx(STORIES, out, { dtype: "q4" as "f32" }), (e: Error) => {
      return e instanceof OptionError && /dtype "q4" is not supported/.test(e.message);
    });
    // an unsupported architecture: named by the loader, before any output
    const gpt2 = join(parent, "gpt2");
    await syntheticFolder(parent, "gpt2");
    const cfg = JSON.parse(await readFile(join(gpt2, "config.json"), "utf8"));
    await writeFile(join(gpt2, "config.json"), JSON.stringify({ ...cfg, model_type: "gpt2" }));
    await assert.rejects(exportOnnx(gpt2, out), /model_type "gpt2" is not supported/);
    // a NaN weight in the last block fails mid-stream: the partial folder is removed
    const bad = await syntheticFolder(parent, "nan", {
      tensor: "model.layers.1.mlp.down_proj.weight",
      index: 3,
    });
    const input = await openModelInput(bad);
    try {
      await assert.rejects(
        exportOnnx(input, out),
        (e: Error) => e instanceof NumericError && /model\.layers\.1\.mlp\.down_proj\.weight/.test(e.message),
      );
    } finally {
      await input.reader.close();
    }
    // a weight beyond float16's range is refused in f16 (it would become infinite), not written as Inf
    const big = await openModelInput(await syntheticFolder(parent, "big"));
    const wide = {
      ...big.reader,
      read: async (name: string) => {
        const d = await big.reader.read(name);
        if (name === "model.layers.0.mlp.up_proj.weight") d[5] = 1e6;
        return d;
      },
    };
    try {
      await assert.rejects(
        exportOnnx({ ...big, reader: wide }, out, { dtype: "f16" }),
        (e: Error) => e instanceof NumericError && /up_proj\.weight.*float16's range/.test(e.message),
      );
    } finally {
      await big.reader.close();
    }
    assert.equal(existsSync(out), false);
    assert.deepEqual((await readdir(parent)).sort(), ["big", "gpt2", "nan"]);
    // an existing output is not overwritten
    await writeFile(out, "mine");
    await assert.rejects(exportOnnx(STORIES, out), /already exists/);
    assert.equal(await readFile(out, "utf8"), "mine");
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});

test("cli export: --format onnx --dtype f16 writes the folder; an unknown format or dtype is named", async () => {
  const parent = await tempDir("svdllm-onnx-");
  try {
    const out = join(parent, "f16"), lines: string[] = [];
    await cmdExport([STORIES, out, "--format", "onnx", "--dtype", "f16"], (s) => lines.push(s));
    assert.match(lines[0], /weights f16/);
    assert.ok(existsSync(join(out, "onnx/model.onnx")));
    await assert.rejects(cmdExport([STORIES, join(parent, "x"), "--format", "tflite"]), /format "tflite"/);
    await assert.rejects(
      cmdExport([STORIES, join(parent, "x"), "--format", "onnx", "--dtype", "q4"]),
      /--dtype "q4"/,
    );
    await assert.rejects(cmdExport([STORIES, join(parent, "x")]), /--format is required/);
    assert.equal(existsSync(join(parent, "x")), false);
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});

test("exportOnnx streams: one pass over the weights, each tensor read once, block after block", async () => {
  const parent = await tempDir("svdllm-onnx-");
  try {
    const input = await openModelInput(await syntheticFolder(parent, "m"));
    const reads: string[] = [];
    const reader = { ...input.reader, read: (name: string) => (reads.push(name), input.reader.read(name)) };
    try {
      await exportOnnx({ ...input, reader }, join(parent, "out"));
    } finally {
      await input.reader.close();
    }
    assert.equal(new Set(reads).size, reads.length, `a tensor was read twice: ${reads}`);
    assert.deepEqual([...reads].sort(), input.reader.tensors().map((t) => t.name).sort());
    const layers = reads.map((n) => Number(/^model\.layers\.(\d+)\./.exec(n)?.[1] ?? NaN)).filter((l) =>
      l >= 0
    );
    assert.deepEqual(
      layers,
      [...layers].sort((a, b) => a - b),
      "blocks must be read in order, one at a time",
    );
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});
