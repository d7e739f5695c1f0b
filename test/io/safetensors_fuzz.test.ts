import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { buildSafetensorsHeader } from "../../src/io/safetensors_writer.ts";
import { openSafetensors } from "../../src/io/safetensors_reader.ts";
import { openBytes } from "../../src/io/memory_source.ts";
import { FormatError } from "../../src/errors.ts";

// A valid file with several dtypes, a scalar and an empty tensor
const { header, dataBytes } = buildSafetensorsHeader(
  [
    { name: "a", dtype: "F32", shape: [2, 3] },
    { name: "b", dtype: "F16", shape: [5] },
    { name: "s", dtype: "BF16", shape: [] },
    { name: "e", dtype: "F32", shape: [0, 4] },
    { name: "c", dtype: "F32", shape: [3] },
  ],
  { format: "pt" },
);
const valid = new Uint8Array(header.byteLength + dataBytes);
valid.set(header);
for (let i = header.byteLength; i < valid.length; i++) valid[i] = (i * 37) & 0xff;

/** Open and read everything; returns "ok" or the error's class name. Only FormatError may escape. */
async function outcome(bytes: Uint8Array): Promise<string> {
  try {
    const r = await openSafetensors(openBytes(bytes, "fuzz.safetensors"));
    for (const t of r.tensors()) {
      const v = await r.read(t.name);
      assert.equal(v.length, t.shape.reduce((x, y) => x * y, 1));
    }
    return "ok";
  } catch (e) {
    if (e instanceof FormatError) {
      assert.match(e.message, /^fuzz\.safetensors: /);
      return "FormatError";
    }
    throw e;
  }
}

test("fuzz: mutated header bytes give success or a FormatError, nothing else", async () => {
  assert.equal(await outcome(valid), "ok");
  const headerEnd = header.byteLength;
  const printable = fc.integer({ min: 0, max: 255 }).chain((b) =>
    fc.constantFrom(b, ...'{}[]",:0123456789-.eE '.split("").map((c) => c.charCodeAt(0)))
  );
  const seen = new Map<string, number>();
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(fc.integer({ min: 0, max: headerEnd - 1 }), printable), {
        minLength: 1,
        maxLength: 6,
      }),
      async (mutations) => {
        const bytes = valid.slice();
        for (const [pos, b] of mutations) bytes[pos] = b;
        const o = await outcome(bytes);
        seen.set(o, (seen.get(o) ?? 0) + 1);
      },
    ),
    { numRuns: 300 },
  );
  // the mutations hit both outcomes, so the property is not vacuous
  assert.ok((seen.get("FormatError") ?? 0) > 0, JSON.stringify([...seen]));
});

test("fuzz: random header lengths and truncations give success or a FormatError", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      fc.integer({ min: 0, max: valid.length }),
      fc.boolean(),
      async (len, cut, setLen) => {
        const bytes = valid.slice(0, setLen ? valid.length : cut);
        if (setLen) new DataView(bytes.buffer).setBigUint64(0, len, true);
        await outcome(bytes);
      },
    ),
    { numRuns: 300 },
  );
  // small header lengths around the true one, exhaustively
  const n = Number(new DataView(valid.buffer).getBigUint64(0, true));
  for (let l = 0; l <= n + 16; l++) {
    const bytes = valid.slice();
    new DataView(bytes.buffer).setBigUint64(0, BigInt(l), true);
    const o = await outcome(bytes);
    // the JSON is followed by spaces (padding), so only lengths cutting inside the JSON fail
    if (l > n) assert.equal(o, "FormatError", `length ${l}`);
  }
});

test("fuzz: arbitrary JSON values as headers give success or a FormatError", async () => {
  await fc.assert(
    fc.asyncProperty(fc.jsonValue(), fc.jsonValue(), async (v, entry) => {
      for (const h of [v, { t: entry }, { __metadata__: v }]) {
        const json = new TextEncoder().encode(JSON.stringify(h) ?? "null");
        const bytes = new Uint8Array(8 + json.byteLength + 64);
        new DataView(bytes.buffer).setBigUint64(0, BigInt(json.byteLength), true);
        bytes.set(json, 8);
        await outcome(bytes);
      }
    }),
    { numRuns: 200 },
  );
});
