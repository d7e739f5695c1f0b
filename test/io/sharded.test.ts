import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import { join } from "node:path";
import { createSafetensorsWriter, type TensorPlan } from "../../src/io/safetensors_writer.ts";
import { openModelWeights, openShardedSafetensors } from "../../src/io/sharded.ts";
import { FormatError } from "../../src/errors.ts";
import { numel, randomFloats, startRangeServer, tempDir } from "./_helpers.ts";

async function writeShard(path: string, plan: TensorPlan[], seed: number): Promise<void> {
  const w = await createSafetensorsWriter(path, plan, { metadata: { format: "pt" } });
  for (const [i, t] of plan.entries()) await w.write(t.name, randomFloats(numel(t.shape), seed + i));
  await w.close();
}

const shard1: TensorPlan[] = [
  { name: "embed", dtype: "F32", shape: [4, 3] },
  { name: "layer.0.w", dtype: "BF16", shape: [3, 3] },
];
const shard2: TensorPlan[] = [
  { name: "layer.1.w", dtype: "F32", shape: [3, 3] },
  { name: "norm", dtype: "F32", shape: [3] },
  { name: "unmapped", dtype: "F32", shape: [1] },
];
const weightMap = {
  "embed": "model-00001-of-00002.safetensors",
  "layer.0.w": "model-00001-of-00002.safetensors",
  "layer.1.w": "model-00002-of-00002.safetensors",
  "norm": "model-00002-of-00002.safetensors",
};

async function sharded(dir: string): Promise<string> {
  await writeShard(join(dir, "model-00001-of-00002.safetensors"), shard1, 10);
  await writeShard(join(dir, "model-00002-of-00002.safetensors"), shard2, 20);
  const index = join(dir, "model.safetensors.index.json");
  await writeFile(index, JSON.stringify({ metadata: { total_size: 1234 }, weight_map: weightMap }));
  return index;
}

test("sharded: index → one reader over the shards, tensors read from the right shard", async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const index = await sharded(dir);
    for (
      const r of [
        await openShardedSafetensors(index),
        await openModelWeights(dir),
        await openModelWeights(index),
      ]
    ) {
      assert.deepEqual(r.tensors().map((t) => t.name), ["embed", "layer.0.w", "layer.1.w", "norm"]);
      assert.equal(r.metadata.total_size, "1234");
      assert.equal(r.metadata.format, "pt");
      assert.equal(r.has("unmapped"), false);
      assert.deepEqual(r.info("layer.0.w").dtype, "BF16");
      assert.deepEqual(Array.from(await r.read("norm")), Array.from(randomFloats(3, 21)));
      assert.deepEqual(Array.from(await r.read("embed")), Array.from(randomFloats(12, 10)));
      assert.throws(() => r.info("missing"), /no tensor named "missing"/);
      await r.close();
    }
  } finally {
    await cleanup();
  }
});

test("sharded: a missing shard, a tensor absent from its shard, bad indexes", async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const index = await sharded(dir);
    const expectError = async (content: unknown, re: RegExp) => {
      await writeFile(index, typeof content === "string" ? content : JSON.stringify(content));
      await assert.rejects(openShardedSafetensors(index), (e: Error) => {
        assert.ok(e instanceof FormatError, String(e));
        assert.ok(e.message.includes(index), e.message);
        assert.match(e.message, re);
        return true;
      });
    };
    await expectError(
      { weight_map: { ...weightMap, extra: "model-00003-of-00003.safetensors" } },
      /shard "model-00003-of-00003\.safetensors" is missing/,
    );
    await expectError(
      { weight_map: { ...weightMap, ghost: "model-00002-of-00002.safetensors" } },
      /tensor "ghost" is mapped to shard "model-00002-of-00002\.safetensors", which lacks it/,
    );
    await expectError(
      { weight_map: { embed: "../escape.safetensors" } },
      /points outside the index's folder/,
    );
    await expectError({ weight_map: { embed: "/etc/passwd" } }, /points outside the index's folder/);
    await expectError({ weight_map: { embed: 3 } }, /weight_map\["embed"\] must be a file name/);
    await expectError({ metadata: {} }, /missing "weight_map" object/);
    await expectError({ weight_map: {} }, /weight_map is empty/);
    await expectError("{not json", /not valid JSON/);
    // a broken shard reports the shard's own file and problem
    await writeFile(join(dir, "model-00002-of-00002.safetensors"), new Uint8Array(4));
    await writeFile(index, JSON.stringify({ weight_map: weightMap }));
    await assert.rejects(openShardedSafetensors(index), /model-00002-of-00002\.safetensors: .*too short/);
  } finally {
    await cleanup();
  }
});

test("openModelWeights: picks model.safetensors, the index, a single file; refuses GGUF", async () => {
  const { dir, cleanup } = await tempDir();
  const names = async (p: string) => {
    const r = await openModelWeights(p);
    try {
      return r.tensors().map((t) => t.name);
    } finally {
      await r.close();
    }
  };
  try {
    await assert.rejects(
      openModelWeights(join(dir, "stories.gguf")),
      /GGUF file; open it with the GGUF reader/,
    );
    await assert.rejects(openModelWeights(join(dir, "nothing")), /no such file or folder/);
    await assert.rejects(openModelWeights(dir), /no model\.safetensors or model\.safetensors\.index\.json/);
    await writeFile(join(dir, "m.gguf"), "GGUF");
    await assert.rejects(openModelWeights(dir), /GGUF files found \(m\.gguf\)/);
    await writeShard(join(dir, "only.safetensors"), [{ name: "x", dtype: "F32", shape: [2] }], 1);
    assert.deepEqual(await names(dir), ["x"]);
    const index = await sharded(dir);
    assert.equal((await names(dir)).length, 4, "index preferred over stray files");
    await writeShard(join(dir, "model.safetensors"), [{ name: "y", dtype: "F32", shape: [2] }], 1);
    assert.deepEqual(await names(dir), ["y"], "model.safetensors first");
    assert.equal((await names(index)).length, 4);
    const sub = join(dir, "two");
    await mkdir(sub);
    await writeShard(join(sub, "a.safetensors"), [{ name: "x", dtype: "F32", shape: [2] }], 1);
    await writeShard(join(sub, "b.safetensors"), [{ name: "x", dtype: "F32", shape: [2] }], 1);
    await assert.rejects(openModelWeights(sub), /several \.safetensors files and no index/);
    await rm(sub, { recursive: true });
  } finally {
    await cleanup();
  }
});

test("sharded over HTTP and file: URLs: index fetched, shards read with Range requests beside it", async () => {
  const { dir, cleanup } = await tempDir();
  const server = await startRangeServer();
  try {
    const index = await sharded(dir);
    for (const f of ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]) {
      server.put(`/m/${f}`, new Uint8Array(await readFile(join(dir, f))));
    }
    server.put("/m/model.safetensors.index.json", new Uint8Array(await readFile(index)));
    for (const input of [server.base + "/m/model.safetensors.index.json", pathToFileURL(index)]) {
      const r = await openModelWeights(input);
      assert.deepEqual(r.tensors().map((t) => t.name), ["embed", "layer.0.w", "layer.1.w", "norm"]);
      assert.deepEqual(Array.from(await r.read("norm")), Array.from(randomFloats(3, 21)));
      await r.close();
    }
    const shardReads = server.log.filter((l) => l.path.endsWith(".safetensors"));
    assert.ok(shardReads.length > 0 && shardReads.every((l) => l.range !== undefined));
    // a shard missing on the server, a shard on another host
    server.put(
      "/m/bad.json",
      new TextEncoder().encode(JSON.stringify({ weight_map: { a: "gone.safetensors" } })),
    );
    await assert.rejects(
      openShardedSafetensors(server.base + "/m/bad.json"),
      /shard "gone\.safetensors" is missing/,
    );
    server.put(
      "/m/evil.json",
      new TextEncoder().encode(
        JSON.stringify({ weight_map: { a: "http://elsewhere.example/x.safetensors" } }),
      ),
    );
    await assert.rejects(
      openShardedSafetensors(server.base + "/m/evil.json"),
      /points outside the index's folder/,
    );
    await assert.rejects(
      openShardedSafetensors(server.base + "/m/none.json"),
      /cannot read the index: HTTP status 404/,
    );
  } finally {
    await server.close();
    await cleanup();
  }
});
