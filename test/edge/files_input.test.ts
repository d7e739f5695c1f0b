// A Hugging Face folder given as Files (what a browser's folder picker or a drop gives), one GGUF File, or a
// tar of a model folder: loaded by the same loader as a path, with the same checks and the same messages
// (only the folder's name in place of its path), and compressed to the same bytes.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel } from "../../src/model/load.ts";
import { compress } from "../../src/pipeline/compress.ts";
import { memorySink } from "../../src/pipeline/sink.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { fileSetFromTar, tarBlob } from "../../src/io/file_set.ts";
import { openBlob } from "../../src/io/blob_source.ts";

const fixture = (name: string) => new URL(`../fixtures/models/${name}/`, import.meta.url).pathname;
const TINY = fixture("llama-gqa-tiny");
const SHARDED = fixture("llama-sharded-tiny");
const STORIES = new URL("../../models/stories260K/stories260K.gguf", import.meta.url).pathname;

/** `File`s as a browser's folder picker gives them: `webkitRelativePath` = `folder/name`. */
async function pick(
  dir: string,
  folder: string,
  edit: (name: string, bytes: Uint8Array) => Uint8Array | undefined = (_n, b) => b,
): Promise<File[]> {
  const out: File[] = [];
  for (const name of (await readdir(dir)).sort()) {
    const bytes = edit(name, new Uint8Array(await readFile(join(dir, name))));
    if (!bytes) continue;
    const f = new File([bytes as BlobPart], name);
    Object.defineProperty(f, "webkitRelativePath", { value: `${folder}/${name}` });
    out.push(f);
  }
  return out;
}

/** Assert `p` rejects with a message matching `re` (the message itself, not "Name: message"). */
async function refused(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: Error) => {
    assert.match(e.message, re);
    return true;
  });
}

/** The error message of `p`, or "ok" when it resolves (the model is closed). */
async function outcome(p: Promise<{ close(): Promise<void> }>): Promise<string> {
  try {
    await (await p).close();
    return "ok";
  } catch (e) {
    return (e as Error).message;
  }
}

/** Every tensor of both models read and compared, and the same spec and tokenizer. */
async function assertSameModel(a: Awaited<ReturnType<typeof loadModel>>, b: typeof a): Promise<void> {
  assert.deepEqual(a.spec, b.spec);
  assert.deepEqual(a.reader.tensors().map((t) => t.name), b.reader.tensors().map((t) => t.name));
  for (const t of a.reader.tensors()) {
    assert.deepEqual(await a.reader.read(t.name), await b.reader.read(t.name));
  }
  const s = "Once upon a time, a little dog ran.";
  assert.deepEqual(a.tokenizer.encode(s, { bos: true }), b.tokenizer.encode(s, { bos: true }));
}

test("files: a folder's Files load as the folder does (single and sharded safetensors)", async () => {
  for (const [dir, folder] of [[TINY, "llama-gqa-tiny"], [SHARDED, "llama-sharded-tiny"]]) {
    const byPath = await loadModel(dir), byFiles = await loadModel(await pick(dir, folder));
    try {
      assert.equal(byFiles.name, folder);
      await assertSameModel(byPath, byFiles);
    } finally {
      await byPath.close();
      await byFiles.close();
    }
  }
});

test("files: a missing config.json, tokenizer or shard is named; a shard outside the folder is refused", async () => {
  const drop = (n: string) => (name: string, b: Uint8Array) => name === n ? undefined : b;
  await refused(
    loadModel(await pick(TINY, "m", drop("config.json"))),
    /^m\/config\.json: load model: read config\.json: no such file among the files given/,
  );
  await refused(
    loadModel(await pick(TINY, "m", drop("tokenizer.json"))),
    /^m: load model: neither tokenizer\.json nor tokenizer_gguf\.json in this folder/,
  );
  await refused(
    loadModel(await pick(SHARDED, "m", drop("model-00002-of-00003.safetensors"))),
    /^m\/model\.safetensors\.index\.json: sharded safetensors index: shard "model-00002-of-00003\.safetensors" is missing/,
  );
  for (
    const bad of ["../model-00001-of-00003.safetensors", "/etc/passwd", "https://example.com/x.safetensors"]
  ) {
    const files = await pick(SHARDED, "m", (name, b) => {
      if (name !== "model.safetensors.index.json") return b;
      const index = JSON.parse(new TextDecoder().decode(b));
      index.weight_map["model.norm.weight"] = bad;
      return new TextEncoder().encode(JSON.stringify(index));
    });
    await refused(loadModel(files), /points outside the index's folder or is not a plain file name/);
  }
  await refused(loadModel([]), /no files given/);
  await refused(
    loadModel(await pick(TINY, "m", drop("model.safetensors"))),
    /^m: open model weights: no model\.safetensors or model\.safetensors\.index\.json in this folder/,
  );
});

test("files: any edit of config.json gets the same outcome as the folder on disk (fast-check)", async () => {
  const dir = await mkdtemp(join(tmpdir(), "svd-llm-files-"));
  const original = JSON.parse(await readFile(join(TINY, "config.json"), "utf8"));
  const names = await readdir(TINY);
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...Object.keys(original)),
        fc.oneof(
          fc.integer({ min: -2, max: 1 << 20 }),
          fc.constantFrom(null, "2", 1.5, 1e12, 0, [], {}),
          fc.constant(undefined),
        ),
        async (key, value) => {
          const config = { ...original, [key]: value };
          if (value === undefined) delete config[key];
          const text = JSON.stringify(config);
          for (const n of names) await writeFile(join(dir, n), await readFile(join(TINY, n)));
          await writeFile(join(dir, "config.json"), text);
          const fromDisk = (await outcome(loadModel(dir))).replaceAll(dir, "m");
          const files = await pick(dir, "m");
          assert.equal(await outcome(loadModel(files)), fromDisk);
        },
      ),
      { numRuns: 40, seed: 14 },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("files: one GGUF File, and a folder holding only it, load as the path does; a non-model file is named", async () => {
  const bytes = await readFile(STORIES);
  const byPath = await loadModel(STORIES);
  for (
    const input of [[new File([bytes], "stories260K.gguf")], await pick(join(STORIES, ".."), "stories260K")]
  ) {
    const m = await loadModel(input);
    try {
      await assertSameModel(byPath, m);
    } finally {
      await m.close();
    }
  }
  await byPath.close();
  await refused(
    loadModel(new File(["once upon a time"], "story.txt")),
    /^story\.txt: load model: not a model file \(neither GGUF, a model folder's files, nor a tar of one\)$/,
  );
  await refused(
    loadModel([new File([await readFile(join(TINY, "model.safetensors"))], "model.safetensors")]),
    /^model\.safetensors: load model: a safetensors file alone has no config\.json or tokenizer/,
  );
});

test("files: compress from a folder's Files writes what compress from its path writes; the tar of it reloads", async () => {
  const opts = { method: "svd", ratio: { removed: 0.3 } } as const;
  const fromPath = memorySink(), fromFiles = memorySink();
  await compress(SHARDED, fromPath, opts);
  await compress(await pick(SHARDED, "llama-sharded-tiny"), fromFiles, opts);
  const a = await fromPath.files, b = await fromFiles.files;
  assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
  for (const name of a.keys()) {
    if (name === "config.json") continue; // holds the run's timings
    assert.deepEqual(
      b.get(name)!.map((x) => new Uint8Array(x)),
      a.get(name)!.map((x) => new Uint8Array(x)),
      name,
    );
  }
  // The tar the browser page downloads: read back by the loader directly, and by the tar reader.
  const tar = tarBlob(b, "out-svd30");
  const set = await fileSetFromTar(openBlob(tar, "out-svd30.tar"));
  assert.equal(set.name, "out-svd30");
  assert.deepEqual([...set.list()].sort(), [...b.keys()].sort());
  const dir = await mkdtemp(join(tmpdir(), "svd-llm-files-"));
  try {
    await compress(SHARDED, join(dir, "out"), opts);
    const m1 = await loadModel(join(dir, "out")), m2 = await loadModel(new File([tar], "out-svd30.tar"));
    const ids = m1.tokenizer.encode("Once upon a time there was a girl who liked to play.", { bos: true });
    assert.equal(
      (await perplexity(m2, ids, { window: 64 })).ppl,
      (await perplexity(m1, ids, { window: 64 })).ppl,
    );
    await m1.close();
    await m2.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  // A cut archive is refused, never read as a smaller model.
  const bytes = new Uint8Array(await tar.arrayBuffer());
  await refused(
    loadModel(new File([bytes.subarray(0, bytes.length - 1024)], "cut.tar")),
    /^cut\.tar: read tar archive: no end-of-archive marker/,
  );
});

const noTar = spawnSync("tar", ["--version"]).status === 0 ? false : "no tar command";
test("files: the tar is an ordinary one: `tar -xf` unpacks a loadable folder, and a GNU tar of it loads", {
  skip: noTar,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), "svd-llm-files-"));
  try {
    const sink = memorySink();
    await compress(TINY, sink, { method: "svd", ratio: { removed: 0.3 } });
    const files = await sink.files;
    await writeFile(join(dir, "out.tar"), new Uint8Array(await tarBlob(files, "out").arrayBuffer()));
    const x = spawnSync("tar", ["-xf", "out.tar"], { cwd: dir, encoding: "utf8" });
    assert.equal(x.status, 0, x.stderr);
    assert.deepEqual((await readdir(join(dir, "out"))).sort(), [...files.keys()].sort());
    for (const [name, parts] of files) {
      assert.deepEqual(
        new Uint8Array(await readFile(join(dir, "out", name))),
        new Uint8Array(await new Blob(parts as BlobPart[]).arrayBuffer()),
      );
    }
    // GNU tar's own archive of the folder: "./" names and a folder entry.
    const c = spawnSync("tar", ["-cf", "../gnu.tar", "."], { cwd: join(dir, "out"), encoding: "utf8" });
    assert.equal(c.status, 0, c.stderr);
    const a = await loadModel(join(dir, "out"));
    const b = await loadModel(new File([await readFile(join(dir, "gnu.tar"))], "gnu.tar"));
    try {
      assert.equal(b.name, "gnu"); // "./name" members: no folder of their own, named after the archive
      assert.deepEqual(b.spec, a.spec);
      for (const t of a.reader.tensors()) {
        assert.deepEqual(await b.reader.read(t.name), await a.reader.read(t.name));
      }
    } finally {
      await a.close();
      await b.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
