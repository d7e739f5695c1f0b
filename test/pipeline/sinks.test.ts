// Bytes in, bytes out (issue 14): compress reads a GGUF model from a path, a Blob or bytes, and writes to a
// folder, to memory or to one WritableStream per file, byte for byte the same output; a failed or aborted run
// presents nothing as complete (no folder, a rejected memory result, aborted streams).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, rm } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { compress, type CompressOptions } from "../../src/pipeline/compress.ts";
import { memorySink, streamSink } from "../../src/pipeline/sink.ts";
import { OptionError } from "../../src/errors.ts";
import { listing, ROOT, STORIES, storiesText, tempDir } from "./_helpers.ts";

const SLOW = { timeout: 600_000 };
const SVD: CompressOptions = { method: "svd", ratio: { removed: 0.3 } };

const concat = (parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

// a GGUF (SentencePiece) input's output: the vocabulary as tokenizer_gguf.json and as a transformers tokenizer
const GGUF_OUTPUT_FILES = [
  "config.json",
  "model.safetensors",
  "modeling_svd_llama.py",
  "tokenizer.json",
  "tokenizer_config.json",
  "tokenizer_gguf.json",
];

test("the same output from a path, a Blob or bytes, to a folder, memory or streams", SLOW, async () => {
  const dir = await tempDir();
  try {
    const folder = join(dir, "out");
    const rFolder = await compress(STORIES, folder, SVD);
    assert.equal(rFolder.output, folder);
    const want = await readFile(join(folder, "model.safetensors"));
    const wantTok = await readFile(join(folder, "tokenizer_gguf.json"));
    const bytes = new Uint8Array(await readFile(STORIES));

    const mem = memorySink();
    const rMem = await compress(new Blob([bytes]), mem, SVD);
    assert.equal(rMem.output, "memory");
    const files = await mem.files;
    assert.deepEqual([...files.keys()].sort(), GGUF_OUTPUT_FILES);
    assert.deepEqual(concat(files.get("model.safetensors")!), new Uint8Array(want));
    assert.deepEqual(concat(files.get("tokenizer_gguf.json")!), new Uint8Array(wantTok));
    const config = JSON.parse(await (await mem.blob("config.json")).text());
    const folderConfig = JSON.parse(await readFile(join(folder, "config.json"), "utf8"));
    assert.deepEqual(config.svd_llm.ranks, folderConfig.svd_llm.ranks);
    assert.deepEqual(rMem.layers.map((l) => l.rank), rFolder.layers.map((l) => l.rank));

    const written = new Map<string, Uint8Array[]>();
    const closed: string[] = [];
    const streams = streamSink((name) => {
      const parts: Uint8Array[] = [];
      written.set(name, parts);
      return new WritableStream<Uint8Array>({
        write: (chunk) => void parts.push(chunk),
        close: () => void closed.push(name),
      });
    });
    await compress(bytes, streams, SVD);
    assert.deepEqual(closed.sort(), GGUF_OUTPUT_FILES);
    assert.deepEqual(concat(written.get("model.safetensors")!), new Uint8Array(want));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a failure or an AbortSignal leaves nothing complete-looking in any sink", SLOW, async () => {
  const dir = await tempDir();
  try {
    const text = await storiesText();
    const failAt = (stage: string, block: number) => (e: { stage: string; block?: number }) => {
      if (e.stage === stage && e.block === block) throw new Error("disk gone");
    };
    // Memory: the result rejects, nothing is handed out.
    const mem = memorySink();
    await assert.rejects(compress(STORIES, mem, { ...SVD, onProgress: failAt("write", 2) }), /disk gone/);
    await assert.rejects(mem.files, /disk gone/);
    // Streams: every stream aborted, none closed.
    const events: string[] = [];
    const streams = streamSink((name) =>
      new WritableStream<Uint8Array>({
        close: () => void events.push(`close ${name}`),
        abort: () => void events.push(`abort ${name}`),
      })
    );
    await assert.rejects(compress(STORIES, streams, { ...SVD, onProgress: failAt("write", 2) }), /disk gone/);
    assert.deepEqual(events, ["abort model.safetensors"]);
    // An AbortSignal, fired mid-block (between linears) and during a calibration pass (between batches).
    for (const [method, stage] of [["svd", "compress"], ["svdllm", "calibrate"]] as const) {
      const ctl = new AbortController();
      const out = join(dir, `aborted-${method}`);
      await assert.rejects(
        compress(STORIES, out, {
          method,
          ratio: { removed: 0.2 },
          calibration: { text, samples: 8, seqlen: 64 },
          signal: ctl.signal,
          onProgress: (e) => {
            if (e.stage === stage) ctl.abort();
          },
        }),
        (e: Error) => e.name === "AbortError",
      );
    }
    assert.deepEqual(await listing(dir), []);
    // A signal aborted before the start: nothing is even opened.
    await assert.rejects(
      compress(STORIES, join(dir, "never"), { ...SVD, signal: AbortSignal.abort() }),
      (e: Error) => e.name === "AbortError",
    );
    assert.deepEqual(await listing(dir), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a Blob or bytes that is not a GGUF file is refused with a message naming it", async () => {
  const file = new File([new TextEncoder().encode('{"not": "a model"}')], "weights.json");
  await assert.rejects(
    compress(file, memorySink(), SVD),
    (e: Error) => e instanceof OptionError && /^compress: weights\.json is not a GGUF file/.test(e.message),
  );
  await assert.rejects(compress(new Uint8Array(3), memorySink(), SVD), /is not a GGUF file/);
});

test("mod.ts's static import graph reaches no node: module from the pipeline", async () => {
  const hits: string[] = [];
  const seen = new Set<string>();
  const walk = async (file: string): Promise<void> => {
    if (seen.has(file)) return;
    seen.add(file);
    const src = await readFile(file, "utf8");
    const re = /^\s*(import|export)\s+(?!type\s)[^;]*?from\s+"([^"]+)"|^\s*import\s+"([^"]+)"/gm;
    for (const m of src.matchAll(re)) {
      const spec = m[2] ?? m[3];
      if (spec.startsWith("node:")) hits.push(`${relative(ROOT, file)} → ${spec}`);
      else if (spec.startsWith(".")) await walk(join(dirname(file), spec));
    }
  };
  await walk(join(ROOT, "mod.ts"));
  // memory.ts's `node:process` is the edge branch's to remove (issue 14); everything else must be lazy.
  const pipeline = hits.filter((h) =>
    h.startsWith("src/pipeline/") && !h.startsWith("src/pipeline/memory.ts ")
  );
  assert.deepEqual(pipeline, []);
  assert.ok(
    seen.has(join(ROOT, "src/pipeline/sink.ts")) && seen.has(join(ROOT, "src/pipeline/compress.ts")),
  );
});
