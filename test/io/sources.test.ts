import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { openUrl } from "../../src/io/url_source.ts";
import { openBlob } from "../../src/io/blob_source.ts";
import { openBytes } from "../../src/io/memory_source.ts";
import { openSource } from "../../src/io/open_source.ts";
import { FormatError, OptionError } from "../../src/errors.ts";
import { startRangeServer, tempDir } from "./_helpers.ts";

const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 31 + 7) & 0xff);

test("openUrl: size from the Range probe, exact ranged reads, range past the end refused", async () => {
  const server = await startRangeServer();
  try {
    const url = server.put("/data.bin", data);
    const src = await openUrl(url);
    assert.equal(src.size, 1000);
    assert.equal(src.name, url);
    assert.deepEqual(await src.read(0, 10), data.subarray(0, 10));
    assert.deepEqual(await src.read(990, 10), data.subarray(990));
    assert.deepEqual(await src.read(5, 0), new Uint8Array(0));
    await assert.rejects(
      () => src.read(995, 10),
      (e: Error) => e instanceof FormatError && /runs past the end/.test(e.message),
    );
    assert.deepEqual(server.log.map((l) => l.range), ["bytes=0-0", "bytes=0-9", "bytes=990-999"]);
    await src.close();
    // empty file: the probe gets 416 with "bytes */0"
    const empty = await openUrl(server.put("/empty.bin", new Uint8Array(0)));
    assert.equal(empty.size, 0);
  } finally {
    await server.close();
  }
});

test("openUrl: servers that ignore Range, send short bodies or fail give FormatErrors naming the URL", async () => {
  const server = await startRangeServer();
  try {
    const ignore = server.put("/ignore.bin", data, "ignore-range");
    await assert.rejects(openUrl(ignore), (e: Error) => {
      assert.ok(e instanceof FormatError);
      assert.match(e.message, /ignore\.bin/);
      assert.match(e.message, /ignored the Range header \(status 200/);
      return true;
    });
    const short = await openUrl(server.put("/short.bin", data, "short"));
    await assert.rejects(() => short.read(100, 50), (e: Error) => {
      assert.ok(e instanceof FormatError);
      assert.match(e.message, /short\.bin/);
      assert.match(e.message, /short body, got 49 of 50 bytes/);
      return true;
    });
    await assert.rejects(openUrl(server.base + "/missing.bin"), /missing\.bin: .*HTTP status 404/);
    await assert.rejects(
      openUrl(server.put("/boom.bin", data, "status-500")),
      /boom\.bin: .*HTTP status 500/,
    );
    await assert.rejects(
      openUrl("ftp://example.org/x"),
      (e: Error) => e instanceof FormatError && /http\(s\)/.test(e.message),
    );
  } finally {
    await server.close();
  }
});

test("openUrl: network failure and custom fetch/headers", async () => {
  // a port nobody listens on: start a server, note its port, close it
  const dead = await startRangeServer();
  const base = dead.base;
  await dead.close();
  await assert.rejects(
    openUrl(base + "/x.bin", { retryDelayMs: 1 }),
    (e: Error) => e instanceof FormatError && /request failed after 3 tries/.test(e.message),
  );

  const seen: Headers[] = [];
  const fakeFetch = ((_input: RequestInfo | URL, init?: RequestInit) => {
    const h = new Headers(init?.headers);
    seen.push(h);
    const m = h.get("range")!.match(/bytes=(\d+)-(\d+)/)!;
    const a = Number(m[1]), b = Number(m[2]);
    return Promise.resolve(
      new Response(data.slice(a, b + 1), {
        status: 206,
        headers: { "content-range": `bytes ${a}-${b}/${data.length}` },
      }),
    );
  }) as typeof fetch;
  const src = await openUrl("https://user:secret@example.org/m.bin", {
    fetch: fakeFetch,
    headers: { authorization: "Bearer t" },
  });
  assert.equal(src.size, 1000);
  assert.deepEqual(await src.read(500, 3), data.subarray(500, 503));
  assert.ok(seen.every((h) => h.get("authorization") === "Bearer t"));
  assert.ok(!src.name.includes("secret"), "credentials are not shown in names");
});

test("openUrl: size from HEAD when the probe's Content-Range has no total", async () => {
  const methods: string[] = [];
  const fakeFetch = ((_input: RequestInfo | URL, init?: RequestInit) => {
    methods.push(init?.method ?? "GET");
    if (init?.method === "HEAD") {
      return Promise.resolve(new Response(null, { status: 200, headers: { "content-length": "1000" } }));
    }
    return Promise.resolve(
      new Response(data.slice(0, 1), { status: 206, headers: { "content-range": "bytes 0-0/*" } }),
    );
  }) as typeof fetch;
  const src = await openUrl("http://example.org/m.bin", { fetch: fakeFetch });
  assert.equal(src.size, 1000);
  assert.deepEqual(methods, ["GET", "HEAD"]);
});

test("openUrl: transient failures (network error, 503) are retried, then succeed", async () => {
  let calls = 0;
  const flaky = ((_input: RequestInfo | URL, init?: RequestInit) => {
    calls++;
    if (calls === 1) return Promise.reject(new TypeError("connection reset"));
    if (calls === 2) return Promise.resolve(new Response("busy", { status: 503 }));
    const m = new Headers(init?.headers).get("range")!.match(/bytes=(\d+)-(\d+)/)!;
    const a = Number(m[1]), b = Number(m[2]);
    return Promise.resolve(
      new Response(data.slice(a, b + 1), {
        status: 206,
        headers: { "content-range": `bytes ${a}-${b}/1000` },
      }),
    );
  }) as typeof fetch;
  const src = await openUrl("http://example.org/f.bin", { fetch: flaky, retryDelayMs: 1 });
  assert.equal(src.size, 1000);
  assert.equal(calls, 3);
  // a 404 is not transient: no retry
  let n404 = 0;
  const notFound = (() => {
    n404++;
    return Promise.resolve(new Response("no", { status: 404 }));
  }) as typeof fetch;
  await assert.rejects(
    openUrl("http://example.org/g.bin", { fetch: notFound, retryDelayMs: 1 }),
    /HTTP status 404/,
  );
  assert.equal(n404, 1);
});

test("openBlob and openBytes: exact slices, range checks", async () => {
  const blob = openBlob(new Blob([data.subarray(0, 400), data.subarray(400)]), "b.bin");
  assert.equal(blob.size, 1000);
  assert.equal(blob.name, "b.bin");
  assert.deepEqual(await blob.read(399, 3), data.subarray(399, 402));
  await assert.rejects(() => blob.read(-1, 2), FormatError);
  await assert.rejects(() => blob.read(999, 2), /b\.bin: .*runs past the end/);
  assert.equal(openBlob(new Blob([])).name, "blob");
  if (typeof File !== "undefined") {
    assert.equal(openBlob(new File([data], "f.safetensors")).name, "f.safetensors");
  }

  const mem = openBytes(data, "mem");
  const r = await mem.read(10, 5);
  r[0] = 0; // a copy: the source is unchanged
  assert.deepEqual(await mem.read(10, 5), data.subarray(10, 15));
  await assert.rejects(() => mem.read(0, 1001), /mem: .*runs past the end/);
});

test("openSource routes paths, file: URLs, http URLs, Blobs, bytes and sources", async () => {
  const { dir, cleanup } = await tempDir();
  const server = await startRangeServer();
  try {
    const path = join(dir, "d.bin");
    await writeFile(path, data);
    for (const input of [path, pathToFileURL(path), pathToFileURL(path).href]) {
      const s = await openSource(input);
      assert.deepEqual(await s.read(7, 4), data.subarray(7, 11));
      await s.close();
    }
    const url = server.put("/d.bin", data);
    for (const input of [url, new URL(url)]) {
      const s = await openSource(input);
      assert.equal(s.name, url);
      assert.deepEqual(await s.read(7, 4), data.subarray(7, 11));
    }
    assert.deepEqual(await (await openSource(new Blob([data]))).read(7, 4), data.subarray(7, 11));
    assert.deepEqual(await (await openSource(data)).read(7, 4), data.subarray(7, 11));
    const mine = openBytes(data, "mine");
    assert.equal(await openSource(mine), mine);
    await assert.rejects(
      openSource(join(dir, "absent.bin")),
      (e: Error) => e instanceof FormatError && /absent\.bin/.test(e.message),
    );
    await assert.rejects(openSource(new URL("ftp://x/y")), OptionError);
  } finally {
    await server.close();
    await cleanup();
  }
});
