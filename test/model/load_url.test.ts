/**
 * loadModel over HTTP: a local Range server stands in for a model hub. The GGUF case uses the bundled
 * stories260K; the Hugging Face folder cases use tinylm-brown (skipped when ../shared is absent).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { startRangeServer } from "../io/_helpers.ts";
import { loadModel } from "../../src/model/load.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { nextTokenLogits } from "../../src/eval/generate.ts";
import { FormatError } from "../../src/errors.ts";

const STORIES = new URL("../../models/stories260K/stories260K.gguf", import.meta.url).pathname;
const BROWN = new URL("../../../shared/models/tinylm-brown/", import.meta.url).pathname;
const haveBrown = existsSync(BROWN + "model.safetensors");
if (!haveBrown) console.log("skip loadModel-over-HTTP folder test: ../shared/models/tinylm-brown absent");

test("loadModel(URL): a GGUF file read by ranges gives the same model as the local file", async () => {
  const server = await startRangeServer();
  try {
    const url = server.put("/models/stories260K.gguf", readFileSync(STORIES));
    const remote = await loadModel(url), local = await loadModel(STORIES);
    assert.equal(remote.name, "stories260K");
    assert.deepEqual(remote.spec, local.spec);
    const ids = local.tokenizer.encode("Once upon a time", { bos: true });
    assert.deepEqual(remote.tokenizer.encode("Once upon a time", { bos: true }), ids);
    assert.deepEqual(await nextTokenLogits(remote, ids), await nextTokenLogits(local, ids));
    // only ranges were read: no request without a Range header but the probe's
    assert.ok(server.log.every((l) => l.range !== undefined || l.method === "HEAD"));
    await remote.close();
    await local.close();
  } finally {
    await server.close();
  }
});

test("loadModel(URL): a Hugging Face folder, single file and sharded index, evaluates as the local folder", {
  skip: !haveBrown,
  timeout: 600_000,
}, async () => {
  const server = await startRangeServer();
  try {
    for (const f of ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"]) {
      server.put(`/org/tinylm/resolve/main/${f}`, readFileSync(BROWN + f));
      server.put(
        `/sharded/${f === "model.safetensors" ? "shard-1.safetensors" : f}`,
        readFileSync(BROWN + f),
      );
    }
    const local = await loadModel(BROWN);
    const weightMap = Object.fromEntries(local.reader.tensors().map((t) => [t.name, "shard-1.safetensors"]));
    server.put(
      "/sharded/model.safetensors.index.json",
      new TextEncoder().encode(JSON.stringify({ weight_map: weightMap })),
    );
    const ids = local.tokenizer.encode("In the morning, the president said that", { bos: true });
    const want = await perplexity(local, ids, { window: 8 });
    for (const base of [`${server.base}/org/tinylm/resolve/main/`, `${server.base}/sharded`]) {
      const m = await loadModel(base);
      assert.deepEqual(m.spec, local.spec);
      assert.deepEqual(m.tokenizer.encode("In the morning, the president said that", { bos: true }), ids);
      const got = await perplexity(m, ids, { window: 8 });
      assert.equal(got.meanNll, want.meanNll);
      if (base.includes("resolve")) assert.equal(m.name, "tinylm");
      await m.close();
    }
    await local.close();
    await assert.rejects(
      loadModel(`${server.base}/nothing/`),
      (e: Error) => e instanceof FormatError && /404/.test(e.message),
    );
  } finally {
    await server.close();
  }
});
