/**
 * Bad-input corpus, models by URL (local HTTP servers on 127.0.0.1 that close themselves): a hostile shard
 * index must not send the caller's Authorization header to another host nor read outside the model's folder;
 * a server that never answers (or stalls mid-body) times out; the caller's AbortSignal stops the load; a
 * transient 503 is retried.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { loadModel } from "../../src/model/load.ts";
import { loadModelUrl } from "../../src/model/load_url.ts";
import { assertRefused, type FileServer, startFileServer, startSilentServer } from "./_corpus.ts";

const SHARDED = new URL("../fixtures/models/llama-sharded-tiny/", import.meta.url).pathname;
const FILES = [
  "config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "model-00001-of-00003.safetensors",
  "model-00002-of-00003.safetensors",
  "model-00003-of-00003.safetensors",
];
const AUTH = { Authorization: "Bearer s3cret" };

/** Serve the sharded fixture under /m/ with its index edited by `edit`. */
async function serveSharded(
  server: FileServer,
  edit?: (map: Record<string, string>) => void,
): Promise<string> {
  for (const f of FILES) server.put(`/m/${f}`, new Uint8Array(await readFile(join(SHARDED, f))));
  const index = JSON.parse(await readFile(join(SHARDED, "model.safetensors.index.json"), "utf8"));
  edit?.(index.weight_map);
  server.put("/m/model.safetensors.index.json", JSON.stringify(index));
  return `${server.base}/m/`;
}

test("url: the sharded fixture loads over HTTP with a token (control)", async () => {
  const server = await startFileServer();
  try {
    const m = await loadModel(await serveSharded(server), { headers: AUTH });
    assert.equal(m.spec.numLayers, 2);
    await m.reader.read("model.norm.weight");
    await m.close();
    assert.ok(server.log.every((l) => l.authorization === AUTH.Authorization));
  } finally {
    await server.close();
  }
});

for (const kind of ["absolute", "protocol-relative"] as const) {
  test(`url: an index mapping a shard to another host (${kind}) is refused; the token never leaves`, async () => {
    const server = await startFileServer(), other = await startFileServer();
    try {
      other.put("/x.safetensors", await readFile(join(SHARDED, FILES[3])));
      const target = kind === "absolute"
        ? `${other.base}/x.safetensors`
        : `//${new URL(other.base).host}/x.safetensors`;
      const url = await serveSharded(server, (map) => (map["model.norm.weight"] = target));
      await assertRefused(
        () => loadModel(url, { headers: AUTH }),
        `${url}model.safetensors.index.json`,
        /weight_map\["model\.norm\.weight"\] = .* points outside the index's folder/,
      );
      assert.deepEqual(other.log, [], "a request reached the other host");
    } finally {
      await server.close();
      await other.close();
    }
  });
}

for (
  const shard of [
    "%2e%2e/secret/x.safetensors",
    "..\\secret\\x.safetensors",
    "/secret/x.safetensors",
    ".%2e/secret/x.safetensors",
  ]
) {
  test(`url: an index shard ${JSON.stringify(shard)} outside the folder is refused, nothing fetched there`, async () => {
    const server = await startFileServer();
    try {
      server.put("/secret/x.safetensors", await readFile(join(SHARDED, FILES[3])));
      const url = await serveSharded(server, (map) => (map["model.norm.weight"] = shard));
      await assertRefused(
        () => loadModel(url, { headers: AUTH }),
        `${url}model.safetensors.index.json`,
        /points outside the index's folder/,
      );
      assert.ok(server.log.every((l) => !l.path.startsWith("/secret")), "a file outside the folder was read");
    } finally {
      await server.close();
    }
  });
}

test("url: a redirect to another origin is followed without the caller's Authorization header", async () => {
  const server = await startFileServer(), cdn = await startFileServer();
  try {
    const url = await serveSharded(server);
    cdn.put("/blob/config.json", await readFile(join(SHARDED, "config.json")));
    server.redirect("/m/config.json", `${cdn.base}/blob/config.json`);
    const m = await loadModel(url, { headers: AUTH });
    await m.close();
    assert.equal(cdn.log.length, 1);
    assert.equal(cdn.log[0].authorization, undefined, "the token was sent to the redirect's host");
    assert.ok(server.log.every((l) => l.authorization === AUTH.Authorization));
  } finally {
    await server.close();
    await cdn.close();
  }
});

test("url: a server that accepts and never answers times out, naming the URL", async () => {
  const silent = await startSilentServer();
  try {
    const url = `${silent.base}/m/`;
    await assertRefused(
      () => loadModel(url, { timeoutMs: 300, retries: 1, retryDelayMs: 10 }),
      `${url}config.json`,
      /request failed after 2 tries: no answer for 300 ms \(timeoutMs\)/,
    );
    await assertRefused(
      () => loadModel(`${silent.base}/x.gguf`, { timeoutMs: 200, retries: 0 }),
      `${silent.base}/x.gguf`,
      /no answer for 200 ms/,
    );
  } finally {
    await silent.close();
  }
});

test("url: a body that stalls half-way times out", async () => {
  const server = await startFileServer();
  try {
    const url = await serveSharded(server);
    server.stall("/m/config.json");
    await assertRefused(
      () => loadModel(url, { timeoutMs: 300, retries: 0 }),
      `${url}config.json`,
      /no answer for 300 ms/,
    );
  } finally {
    await server.close();
  }
});

test("url: a slow body that keeps progressing is not cut by the timeout (it bounds silence, not transfers)", async () => {
  const server = await startFileServer();
  try {
    const url = await serveSharded(server);
    server.drip("/m/tokenizer.json", 8, 100); // ~800 ms in all, never 300 ms without a byte
    const m = await loadModel(url, { timeoutMs: 300, retries: 0 });
    assert.equal(m.tokenizer.bosId, 1);
    await m.close();
  } finally {
    await server.close();
  }
});

test("url: the caller's AbortSignal stops a load that would otherwise wait", async () => {
  const silent = await startSilentServer();
  try {
    const ctrl = new AbortController();
    setTimeout(() => ctrl.abort(), 200);
    await assertRefused(
      () => loadModel(`${silent.base}/m/`, { signal: ctrl.signal, timeoutMs: 60_000 }),
      `${silent.base}/m/config.json`,
      /aborted by the caller/,
    );
  } finally {
    await silent.close();
  }
});

test("url: transient 503s are retried (documented policy), then the model loads", async () => {
  const server = await startFileServer();
  try {
    const url = await serveSharded(server);
    server.fail("/m/config.json", 503, 2);
    const m = await loadModel(url, { retryDelayMs: 1 });
    await m.close();
    assert.equal(server.log.filter((l) => l.path === "/m/config.json").length, 3);
  } finally {
    await server.close();
  }
});

test("url: a 404 config, a config that is not JSON and a shard that is missing are named", async () => {
  const server = await startFileServer();
  try {
    const url = await serveSharded(server);
    await assertRefused(
      () => loadModel(`${server.base}/none/`),
      `${server.base}/none/config.json`,
      /HTTP status 404/,
    );
    server.put("/m/config.json", '{"model_type": ');
    await assertRefused(() => loadModel(url), `${url}config.json`, /not valid JSON/);
    server.put("/m/config.json", await readFile(join(SHARDED, "config.json")));
    server.fail("/m/model-00002-of-00003.safetensors", 404, 100);
    await assertRefused(() => loadModel(url), "model-00002-of-00003.safetensors", /missing or unreadable/);
  } finally {
    await server.close();
  }
});

test("url: unsupported schemes and malformed URLs are refused naming them", async () => {
  await assertRefused(
    () => loadModel("ftp://127.0.0.1/m/"),
    "ftp://127.0.0.1/m/",
    /unsupported URL scheme ftp:/,
  );
  await assertRefused(() => loadModelUrl("http://[::1/m/"), "http://[::1/m/", /not a valid URL/);
});
