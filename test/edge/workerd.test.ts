/**
 * The compressing Worker inside Cloudflare's workerd (npm `workerd`, its binary run on 127.0.0.1): stories260K
 * is fetched by HTTP Range from a local file server, compressed with svdllm at 20 % inside workerd, and the
 * returned files (streamed multipart, or tar) reload with `loadModel` to the same perplexity as the same compression done here (1e-4
 * relative). A file that is not a model gets a clear 400, not a hang; without the precompiled kernels the
 * Worker says it runs TypeScript. Skips with a message where the workerd binary is absent.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { compress, fileSetFromTar, FormatError, loadModel, perplexity, tarBlob } from "../../mod.ts";
import { openBlob } from "../../src/io/blob_source.ts";
import { buildWorker } from "../../examples/workerd/build.ts";
import { startWorkerd, type Workerd, workerdBinary } from "../../examples/workerd/harness.ts";
import { type FileServer, serveFiles } from "../../examples/workerd/serve_files.ts";
import { parseMultipart } from "../../examples/workerd/multipart.ts";
import { multipartSink } from "../../examples/workerd/multipart.ts";
import fc from "../_fc.ts";

const repo = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));
const binary = workerdBinary();
const skip = binary ? false : "workerd binary absent (npm install workerd --ignore-scripts ships it)";
const OPTS = { method: "svdllm", ratio: { removed: 0.2 }, samples: 16, seqlen: 256 } as const;

/** The members of tar archive `bytes` (read by the library's tar reader), name → bytes, in archive order. */
async function untar(bytes: Uint8Array): Promise<Map<string, Uint8Array>> {
  const set = await fileSetFromTar(openBlob(new Blob([bytes as BlobPart]), "out.tar"));
  const out = new Map<string, Uint8Array>();
  for (const name of set.list()) {
    const src = set.open(name)!;
    out.set(name, await src.read(0, src.size));
  }
  return out;
}

async function pplOf(dir: string, text: string): Promise<number> {
  const m = await loadModel(dir);
  try {
    return (await perplexity(m, m.tokenizer.encode(text, { bos: true }), { window: 256 })).ppl;
  } finally {
    await m.close();
  }
}

test(
  "workerd: compress stories260K by URL, reload, same perplexity as Deno; bad input → 400",
  { skip },
  async () => {
    const tmp = await mkdtemp(join(tmpdir(), "svd-workerd-"));
    let files: FileServer | null = null;
    const workers: Workerd[] = [];
    try {
      const site = join(tmp, "site");
      await mkdir(site);
      await symlink(repo("models/stories260K/stories260K.gguf"), join(site, "stories260K.gguf"));
      await symlink(repo("data/tinystories-valid.part1.txt"), join(site, "text.txt"));
      await writeFile(join(site, "bogus.gguf"), "this is a text file, not a GGUF model\n".repeat(20));
      files = await serveFiles(site);
      const build = await buildWorker(join(tmp, "dist"));
      const w = await startWorkerd(binary!, build.dir, "worker.js", 300_000); // start-up bound sized for a loaded machine
      workers.push(w);
      const text = await readFile(repo("data/tinystories-valid.part1.txt"), "utf8");

      const q = (model: string) =>
        `${w.origin}/compress?model=${files!.origin}/${model}&text=${
          files!.origin
        }/text.txt&method=${OPTS.method}` +
        `&ratio=${OPTS.ratio.removed}&samples=${OPTS.samples}&seqlen=${OPTS.seqlen}`;
      const res = await fetch(q("stories260K.gguf"), { signal: AbortSignal.timeout(300_000) });
      assert.equal(res.status, 200, await res.clone().text().catch(() => ""));
      assert.equal(res.headers.get("x-svd-llm-kernels"), "wasm (precompiled module)");
      const got = parseMultipart(
        new Uint8Array(await res.arrayBuffer()),
        res.headers.get("content-type") ?? "",
      );
      for (const name of ["config.json", "model.safetensors", "tokenizer_gguf.json"]) {
        assert.ok(got.has(name), `workerd's answer lacks ${name}: ${[...got.keys()]}`);
      }
      const fromWorkerd = join(tmp, "from-workerd");
      await mkdir(fromWorkerd);
      for (const [name, bytes] of got) await writeFile(join(fromWorkerd, name), bytes);
      // The buffered tar form holds the same files.
      const tarRes = await fetch(`${q("stories260K.gguf")}&format=tar`, {
        signal: AbortSignal.timeout(300_000),
      });
      assert.equal(tarRes.status, 200);
      const tar = await untar(new Uint8Array(await tarRes.arrayBuffer()));
      assert.deepEqual([...tar.keys()].sort(), [...got.keys()].sort());
      assert.deepEqual(tar.get("model.safetensors"), got.get("model.safetensors")); // config.json holds timings
      console.log(
        `workerd peak RSS ${((await w.peakRss()) / 2 ** 20).toFixed(1)} MiB (process, incl. runtime)`,
      );

      const here = join(tmp, "from-deno");
      await compress(repo("models/stories260K/stories260K.gguf"), here, {
        method: OPTS.method,
        ratio: OPTS.ratio,
        calibration: { text, samples: OPTS.samples, seqlen: OPTS.seqlen },
      });
      // The same files as the library writes here (the folder grew Hugging Face files since: a fixed list
      // here went stale with each addition).
      assert.deepEqual([...got.keys()].sort(), (await readdir(here)).sort());
      const [a, b, dense] = [
        await pplOf(fromWorkerd, text),
        await pplOf(here, text),
        await pplOf(repo("models/stories260K/stories260K.gguf"), text),
      ];
      console.log(`ppl dense ${dense.toFixed(4)}, workerd ${a.toFixed(6)}, here ${b.toFixed(6)}`);
      assert.ok(Math.abs(a - b) / b < 1e-4, `workerd ppl ${a} vs here ${b}`);
      assert.ok(a > dense, "compression costs perplexity"); // the model was really compressed

      // Not a model: a clear one-line error, well before the timeout.
      const bad = await fetch(q("bogus.gguf"), { signal: AbortSignal.timeout(300_000) });
      const msg = await bad.text();
      assert.equal(bad.status, 400, msg);
      assert.match(msg, /bogus\.gguf/);
      assert.match(msg, /GGUF|magic/i);
      const missing = await fetch(`${w.origin}/compress?text=${files.origin}/text.txt`);
      assert.equal(missing.status, 400);
      assert.match(await missing.text(), /missing parameter model=/);

      // Without the precompiled kernels: it says so, and why.
      const plain = await startWorkerd(binary!, build.dir, "worker_nowasm.js", 300_000);
      workers.push(plain);
      const health = await (await fetch(`${plain.origin}/health`)).text();
      assert.match(health, /kernels ts: no precompiled WebAssembly\.Module/);
    } finally {
      for (const w of workers) await w.close();
      await files?.close();
      await rm(tmp, { recursive: true, force: true });
    }
  },
);

const fileSets = fc.uniqueArray(
  fc.record({
    name: fc.stringMatching(/^[a-z][a-z0-9_.]{0,30}$/),
    bytes: fc.uint8Array({ maxLength: 1500 }),
  }),
  { selector: (f) => f.name, minLength: 1, maxLength: 4 },
);

test("workerd output formats: tar and multipart round-trip any files; a cut body is refused", async () => {
  await fc.assert(
    fc.asyncProperty(fileSets, fc.nat(), async (set, cutAt) => {
      const tarBytes = new Uint8Array(
        await tarBlob(new Map(set.map((f) => [f.name, [f.bytes.slice()]])), "t").arrayBuffer(),
      );
      const { sink, readable, contentType } = multipartSink("t");
      const body = new Response(readable).arrayBuffer();
      for (const f of set) {
        const w = await sink.file(f.name);
        await w.write(f.bytes.subarray(0, f.bytes.length >> 1));
        await w.write(f.bytes.subarray(f.bytes.length >> 1));
        await w.close();
      }
      await sink.commit();
      const mpBytes = new Uint8Array(await body);
      for (const got of [await untar(tarBytes), parseMultipart(mpBytes, contentType)]) {
        assert.deepEqual([...got.keys()], set.map((f) => f.name));
        for (const f of set) assert.deepEqual(got.get(f.name), f.bytes);
      }
      // Any strict prefix that drops the end marker is not a complete output.
      await assert.rejects(untar(tarBytes.subarray(0, cutAt % (tarBytes.length - 1024))), FormatError);
      assert.throws(
        () => parseMultipart(mpBytes.subarray(0, cutAt % (mpBytes.length - 4)), contentType),
        RangeError,
      );
    }),
    { numRuns: 40 },
  );
});

test("workerd multipart sink: an aborted run errors the body (no complete-looking output)", async () => {
  const { sink, readable } = multipartSink("t");
  const body = new Response(readable).arrayBuffer();
  const w = await sink.file("model.safetensors");
  await w.write(new Uint8Array(10));
  await sink.abort(new Error("stop"));
  await assert.rejects(body);
});

test("workerd Worker with an R2 bucket bound: every file put, COMPLETE last, matching the streamed answer", async () => {
  const { makeWorker } = await import("../../examples/workerd/worker.ts");
  const files = await serveFiles(repo("."));
  try {
    const puts: [string, Uint8Array][] = [];
    const BUCKET = {
      put: async (key: string, value: Blob | Uint8Array | string) => {
        const bytes = typeof value === "string"
          ? new TextEncoder().encode(value)
          : value instanceof Blob
          ? new Uint8Array(await value.arrayBuffer())
          : value;
        puts.push([key, bytes]);
      },
    };
    const worker = makeWorker(); // here the kernels compile from bytes as usual
    const url = `http://worker/compress?model=${files.origin}/models/stories260K/stories260K.gguf` +
      `&text=${files.origin}/data/tinystories-valid.part1.txt&samples=4&seqlen=64&out=s260`;
    const res = await worker.fetch(new Request(url), { BUCKET });
    assert.equal(res.status, 200, await res.clone().text());
    const listed = (await res.json()).files as { key: string; bytes: number }[];
    assert.deepEqual(puts.map(([k]) => k), [...listed.map((f) => f.key), "s260/COMPLETE"]);
    const streamed = await worker.fetch(new Request(url));
    const parts = parseMultipart(
      new Uint8Array(await streamed.arrayBuffer()),
      streamed.headers.get("content-type")!,
    );
    assert.deepEqual(puts.find(([k]) => k === "s260/model.safetensors")![1], parts.get("model.safetensors"));
    assert.deepEqual(JSON.parse(new TextDecoder().decode(puts.at(-1)![1])), listed);
  } finally {
    await files.close();
  }
});
