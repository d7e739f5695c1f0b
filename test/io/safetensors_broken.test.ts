import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { openSafetensors } from "../../src/io/safetensors_reader.ts";
import { FormatError } from "../../src/errors.ts";
import { tempDir } from "./_helpers.ts";

/** Assemble a safetensors file from a header value (object or raw text) and a data section. */
function build(header: unknown, data: Uint8Array, lengthOverride?: bigint): Uint8Array<ArrayBuffer> {
  const text = typeof header === "string" ? header : JSON.stringify(header);
  const json = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + json.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(data, 8 + json.byteLength);
  return out;
}

// A valid file: w (2×3 F32, 24 bytes) then b (4 F16, 8 bytes)
const goodHeader = {
  __metadata__: { format: "pt" },
  w: { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] },
  b: { dtype: "F16", shape: [4], data_offsets: [24, 32] },
};
const data = new Uint8Array(32).map((_, i) => i);
const withEntry = (name: string, entry: unknown) => ({ ...goodHeader, [name]: entry });

const corpus: { name: string; bytes: Uint8Array; expect: RegExp[] }[] = [
  {
    name: "tiny",
    bytes: new Uint8Array([1, 0, 0]),
    expect: [/3 bytes, too short for the 8-byte header length/],
  },
  {
    name: "truncated-data",
    bytes: build(goodHeader, data).subarray(0, 8 + JSON.stringify(goodHeader).length + 28),
    expect: [/tensor "b"/, /data_offsets \[24, 32\] outside the data section \(28 bytes/],
  },
  {
    name: "truncated-header",
    bytes: build(goodHeader, data).subarray(0, 40),
    expect: [/header length \d+ runs past the end of the file \(40 bytes/],
  },
  {
    name: "length-past-eof",
    bytes: build(goodHeader, data, 5000n),
    expect: [/header length 5000 runs past the end of the file/],
  },
  { name: "length-zero", bytes: build(goodHeader, data, 0n), expect: [/header length is 0/] },
  {
    name: "length-huge",
    bytes: build(goodHeader, data, 1n << 40n),
    expect: [/header length 256·2\^32\+0 exceeds the 100000000-byte cap/],
  },
  {
    name: "length-over-cap",
    bytes: build(goodHeader, data, 200_000_000n),
    expect: [/header length 200000000 exceeds/],
  },
  { name: "bad-json", bytes: build('{"w": {"dtype": "F32",', data), expect: [/header is not valid JSON/] },
  {
    name: "bad-utf8",
    bytes: build('{"\xff": 1}'.replace("\xff", "\u00ff"), data).map((b, i) => (i === 10 ? 0xff : b)),
    expect: [/not valid UTF-8/],
  },
  {
    name: "not-object",
    bytes: build("[1, 2]", data),
    expect: [/header must be a JSON object, got an array/],
  },
  {
    name: "entry-not-object",
    bytes: build(withEntry("x", 7), data),
    expect: [/tensor "x": entry must be an object/],
  },
  {
    name: "unknown-dtype",
    bytes: build(withEntry("w", { dtype: "Q4_K", shape: [2, 3], data_offsets: [0, 24] }), data),
    expect: [/tensor "w": unknown or unsupported dtype "Q4_K"/],
  },
  {
    name: "dtype-not-string",
    bytes: build(withEntry("w", { dtype: 4, shape: [2, 3], data_offsets: [0, 24] }), data),
    expect: [/tensor "w": dtype must be a string/],
  },
  {
    name: "shape-not-array",
    bytes: build(withEntry("w", { dtype: "F32", shape: "2x3", data_offsets: [0, 24] }), data),
    expect: [/tensor "w": shape must be an array/],
  },
  {
    name: "shape-negative",
    bytes: build(withEntry("w", { dtype: "F32", shape: [-2, -3], data_offsets: [0, 24] }), data),
    expect: [/tensor "w": shape must be an array of non-negative integers, got \[-2,-3\]/],
  },
  {
    name: "shape-fraction",
    bytes: build(withEntry("w", { dtype: "F32", shape: [1.5, 4], data_offsets: [0, 24] }), data),
    expect: [/tensor "w": shape must be/],
  },
  {
    name: "shape-huge",
    bytes: build(withEntry("w", { dtype: "F32", shape: [2 ** 30, 2 ** 30], data_offsets: [0, 24] }), data),
    expect: [/tensor "w": shape \[.*\] is too large/],
  },
  {
    name: "offsets-not-pair",
    bytes: build(withEntry("w", { dtype: "F32", shape: [2, 3], data_offsets: [0] }), data),
    expect: [/tensor "w": data_offsets must be a \[begin, end\] pair/],
  },
  {
    name: "offsets-missing",
    bytes: build(withEntry("w", { dtype: "F32", shape: [2, 3] }), data),
    expect: [/tensor "w": data_offsets must be/],
  },
  {
    name: "end-before-begin",
    bytes: build(withEntry("w", { dtype: "F32", shape: [2, 3], data_offsets: [24, 0] }), data),
    expect: [/tensor "w": data_offsets \[24, 0\] end before begin/],
  },
  {
    name: "out-of-range",
    bytes: build(withEntry("b", { dtype: "F16", shape: [4], data_offsets: [32, 40] }), data),
    expect: [/tensor "b": data_offsets \[32, 40\] outside the data section \(32 bytes/],
  },
  {
    name: "overlap",
    bytes: build(withEntry("b", { dtype: "F16", shape: [4], data_offsets: [20, 28] }), data),
    expect: [/tensors "w" \[0, 24\] and "b" \[20, 28\] overlap/],
  },
  {
    name: "size-mismatch",
    bytes: build(withEntry("w", { dtype: "F32", shape: [2, 4], data_offsets: [0, 24] }), data),
    expect: [/tensor "w": shape \[2,4\] × F32 needs 32 bytes but data_offsets \[0, 24\] span 24/],
  },
  {
    name: "metadata-not-strings",
    bytes: build({ ...goodHeader, __metadata__: { format: "pt", step: 3 } }, data),
    expect: [/__metadata__ must map strings to strings, but key "step" holds number 3/],
  },
  {
    name: "metadata-array",
    bytes: build({ ...goodHeader, __metadata__: ["pt"] }, data),
    expect: [/__metadata__ must be an object/],
  },
];

test("broken safetensors files give FormatErrors naming the file and the problem", async () => {
  const { dir, cleanup } = await tempDir();
  try {
    // the valid base really is valid
    const good = join(dir, "good.safetensors");
    await writeFile(good, build(goodHeader, data));
    const r = await openSafetensors(good);
    assert.deepEqual(r.tensors().map((t) => t.name), ["w", "b"]);
    // data bytes 24..31 as f16 bits 0x1918, 0x1b1a, ... : normal halves (1 + m/1024) × 2^(e-15)
    const half = (h: number) => (1 + (h & 0x3ff) / 1024) * 2 ** (((h >> 10) & 0x1f) - 15);
    assert.deepEqual(Array.from(await r.read("b")), [0x1918, 0x1b1a, 0x1d1c, 0x1f1e].map(half));
    await r.close();

    for (const c of corpus) {
      const path = join(dir, `${c.name}.safetensors`);
      await writeFile(path, c.bytes);
      await assert.rejects(openSafetensors(path), (e: Error) => {
        assert.ok(e instanceof FormatError, `${c.name}: ${e}`);
        assert.ok(e.message.includes(path), `${c.name}: message names the file: ${e.message}`);
        for (const re of c.expect) assert.match(e.message, re, c.name);
        return true;
      }, c.name);
    }
  } finally {
    await cleanup();
  }
});

test("gaps between tensors, trailing bytes, empty tensors and null metadata are accepted", async () => {
  const header = {
    __metadata__: null,
    a: { dtype: "U8", shape: [3], data_offsets: [5, 8] }, // gap before
    e: { dtype: "F32", shape: [0], data_offsets: [6, 6] }, // empty, inside another's range: occupies nothing
    c: { dtype: "I32", shape: [1], data_offsets: [12, 16] }, // gap, then trailing bytes
  };
  const bytes = build(header, new Uint8Array(20).map((_, i) => i));
  const r = await openSafetensors(new Blob([bytes]));
  assert.deepEqual(r.tensors().map((t) => t.name), ["a", "e", "c"]);
  assert.deepEqual(Array.from(await r.read("a")), [5, 6, 7]);
  assert.deepEqual(Array.from(await r.read("e")), []);
  assert.deepEqual(Array.from(await r.read("c")), [Math.fround(12 + 13 * 256 + 14 * 65536 + 15 * 16777216)]);
  assert.deepEqual(r.metadata, {});
});

test("metadata keys are plain data, even __proto__", async () => {
  const bytes = build(
    '{"__metadata__":{"__proto__":"x","a":"b"},"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
    data,
  );
  const r = await openSafetensors(new Blob([bytes]));
  assert.deepEqual(Object.entries(r.metadata), [["__proto__", "x"], ["a", "b"]]);
  assert.equal(Object.getPrototypeOf(r.metadata), Object.prototype);
});
