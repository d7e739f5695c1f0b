/**
 * GGUF reader: the bundled stories260K file, hand-built files (v2/v3, F16, alignment, arrays), every kind of
 * corrupt input, and a fast-check mutation of the stories260K header: only FormatError or success.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { readFileSync } from "node:fs";
import { openGguf } from "../../src/io/gguf.ts";
import { FormatError } from "../../src/errors.ts";
import { numberToF16Bits } from "../../src/io/dtype.ts";

const STORIES = new URL("../../models/stories260K/stories260K.gguf", import.meta.url).pathname;

/** A little-endian byte builder for hand-made GGUF files. */
class Bytes {
  parts: number[] = [];
  u8(v: number) {
    this.parts.push(v & 255);
    return this;
  }
  u32(v: number) {
    for (let i = 0; i < 4; i++) this.parts.push((v >>> (8 * i)) & 255);
    return this;
  }
  u64(v: number | bigint) {
    const b = BigInt(v);
    for (let i = 0n; i < 8n; i++) this.parts.push(Number((b >> (8n * i)) & 255n));
    return this;
  }
  f32(v: number) {
    const b = new Uint8Array(new Float32Array([v]).buffer);
    this.parts.push(...b);
    return this;
  }
  str(s: string) {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.parts.push(...b);
    return this;
  }
  pad(align: number) {
    while (this.parts.length % align) this.parts.push(0);
    return this;
  }
  get length() {
    return this.parts.length;
  }
  bytes() {
    return Uint8Array.from(this.parts);
  }
}

interface FakeTensor {
  name: string;
  ne: number[]; // innermost first
  type: number;
  data: Uint8Array;
  offset?: number; // override
}

/** Build a GGUF file: kv writer callback (returns the number of entries), tensors, version, alignment. */
function buildGguf(
  opts: { version?: number; align?: number; kv?: (b: Bytes) => number; tensors?: FakeTensor[] } = {},
): Uint8Array {
  const align = opts.align ?? 32, tensors = opts.tensors ?? [];
  const kvb = new Bytes();
  let nkv = opts.kv ? opts.kv(kvb) : 0;
  if (opts.align !== undefined) {
    kvb.str("general.alignment").u32(4).u32(align);
    nkv++;
  }
  const b = new Bytes();
  b.parts.push(..."GGUF".split("").map((c) => c.charCodeAt(0)));
  b.u32(opts.version ?? 3).u64(tensors.length).u64(nkv);
  b.parts.push(...kvb.parts);
  let off = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    offsets.push(t.offset ?? off);
    off = Math.ceil((off + t.data.length) / align) * align;
  }
  tensors.forEach((t, i) => {
    b.str(t.name).u32(t.ne.length);
    for (const n of t.ne) b.u64(n);
    b.u32(t.type).u64(offsets[i]);
  });
  b.pad(align);
  const start = b.length;
  tensors.forEach((t) => {
    b.pad(align);
    b.parts.push(...t.data);
  });
  void start;
  return b.bytes();
}

function f32bytes(a: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(a).buffer);
}

async function rejects(bytes: Uint8Array, pattern: RegExp) {
  await assert.rejects(openGguf(bytes), (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${e}`);
    assert.match((e as Error).message, pattern);
    return true;
  });
}

test("gguf: stories260K metadata, shapes in PyTorch order and a tensor read", async () => {
  const g = await openGguf(STORIES);
  try {
    assert.equal(g.version, 3);
    assert.equal(g.kv.get("general.architecture"), "llama");
    assert.equal(g.kv.get("llama.block_count"), 5);
    const tokens = g.kv.get("tokenizer.ggml.tokens") as string[];
    assert.equal(tokens.length, 512);
    assert.equal(tokens[1], "<s>");
    assert.ok(g.kv.get("tokenizer.ggml.scores") instanceof Float32Array);
    assert.ok(g.kv.get("tokenizer.ggml.token_type") instanceof Int32Array);
    assert.equal(g.tensors().length, 3 + 9 * 5);
    assert.deepEqual(g.info("blk.0.attn_k.weight").shape, [32, 64]); // out×in
    assert.deepEqual(g.info("blk.0.ffn_down.weight").shape, [64, 172]);
    const w = await g.read("blk.0.attn_k.weight");
    assert.equal(w.length, 32 * 64);
    assert.ok(w.every(Number.isFinite));
    assert.equal(g.metadata["general.architecture"], "llama");
    assert.equal(g.metadata["tokenizer.ggml.tokens"], "[array of 512]");
  } finally {
    await g.close();
  }
});

test("gguf: hand-built v2 and v3 files with F32/F16 tensors, arrays and a custom alignment", async () => {
  const a = [1, -2, 3.5, 0.25, 5, 6];
  const h = [0.5, -1, 2, 65504, -0.125, 3];
  const f16 = new Uint8Array(new Uint16Array(h.map(numberToF16Bits)).buffer);
  for (const version of [2, 3]) {
    for (const align of [undefined, 64]) {
      const file = buildGguf({
        version,
        align,
        kv: (b) => {
          b.str("general.architecture").u32(8).str("llama");
          b.str("x.ints").u32(9).u32(5).u64(3).u32(7).u32(0xffffffff).u32(-4);
          b.str("x.names").u32(9).u32(8).u64(2).str("▁a").str("b");
          b.str("x.f").u32(6).f32(0.5);
          b.str("x.big").u32(10).u64(2n ** 60n);
          b.str("x.flag").u32(7).u8(1);
          return 6;
        },
        tensors: [
          { name: "w", ne: [3, 2], type: 0, data: f32bytes(a) }, // 2 rows × 3 cols
          { name: "h", ne: [6], type: 1, data: f16 },
        ],
      });
      const g = await openGguf(file);
      assert.equal(g.version, version);
      assert.deepEqual(Array.from(g.kv.get("x.ints") as Int32Array), [7, -1, -4]);
      assert.deepEqual(g.kv.get("x.names"), ["▁a", "b"]);
      assert.equal(g.kv.get("x.f"), 0.5);
      assert.equal(g.kv.get("x.big"), 2n ** 60n);
      assert.equal(g.kv.get("x.flag"), true);
      assert.deepEqual(g.info("w").shape, [2, 3]);
      assert.equal(g.info("h").dtype, "F16");
      assert.deepEqual(Array.from(await g.read("w")), a);
      assert.deepEqual(Array.from(await g.read("h")), h);
      assert.equal(g.dataStart % (align ?? 32), 0);
      await assert.rejects(g.read("nope"), /no tensor named "nope"/);
      await g.close();
    }
  }
});

test("gguf: corrupt files fail with a FormatError naming the problem", async () => {
  const good = () => buildGguf({ tensors: [{ name: "w", ne: [4], type: 0, data: f32bytes([1, 2, 3, 4]) }] });
  const bad = good();
  bad[0] = 0x47 ^ 1;
  await rejects(bad, /not a GGUF file: magic/);
  await rejects(buildGguf({ version: 1 }), /unsupported GGUF version 1/);
  await rejects(buildGguf({ version: 7 }), /unsupported GGUF version 7/);
  await rejects(new Uint8Array([0x47, 0x47]), /too short/);
  // truncated inside the metadata
  const withKv = buildGguf({ kv: (b) => (b.str("general.name").u32(8).str("a rather long model name"), 1) });
  await rejects(withKv.subarray(0, 70), /past the end of the file/); // header ends at byte 80
  // string length beyond EOF
  await rejects(buildGguf({ kv: (b) => (b.str("k").u32(8).u64(1e12), 1) }), /past the end of the file/);
  // array length beyond EOF
  await rejects(buildGguf({ kv: (b) => (b.str("k").u32(9).u32(6).u64(1e9), 1) }), /past the end of the file/);
  await rejects(buildGguf({ kv: (b) => (b.str("k").u32(9).u32(8).u64(2 ** 40), 1) }), /runs past the end/);
  // unknown value types
  await rejects(buildGguf({ kv: (b) => (b.str("k").u32(13).u32(0), 1) }), /unknown value type 13/);
  await rejects(
    buildGguf({ kv: (b) => (b.str("k").u32(9).u32(42).u64(1), 1) }),
    /unknown array element type 42/,
  );
  // absurd counts
  const counts = good();
  new DataView(counts.buffer).setUint32(8, 0xffffff, true);
  await rejects(counts, /more than a \d+-byte file can hold/);
  // tensor offset outside the data section
  await rejects(
    buildGguf({ tensors: [{ name: "w", ne: [4], type: 0, data: f32bytes([1, 2, 3, 4]), offset: 4096 }] }),
    /tensor "w" .*outside the data section/,
  );
  // misaligned offset
  await rejects(
    buildGguf({ tensors: [{ name: "w", ne: [4], type: 0, data: f32bytes([1, 2, 3, 4]), offset: 3 }] }),
    /not a multiple of the alignment 32/,
  );
  // truncated data section
  const full = buildGguf({
    tensors: [{ name: "w", ne: [64], type: 0, data: f32bytes(new Array(64).fill(1)) }],
  });
  await rejects(full.subarray(0, full.length - 8), /tensor "w".*outside the data section/);
  // quantized type: names the tensor and the type
  await rejects(
    buildGguf({ tensors: [{ name: "blk.0.attn_q.weight", ne: [32], type: 12, data: new Uint8Array(32) }] }),
    /tensor "blk\.0\.attn_q\.weight" has type Q4_K/,
  );
  // ... unless only the metadata is wanted
  const q = await openGguf(
    buildGguf({ tensors: [{ name: "q", ne: [32], type: 8, data: new Uint8Array(34) }] }),
    { allowUnsupportedTypes: true },
  );
  await assert.rejects(q.read("q"), /type Q8_0/);
  // bad alignment value, too many dims, duplicate names
  await rejects(
    buildGguf({ kv: (b) => (b.str("general.alignment").u32(4).u32(3), 1) }),
    /general.alignment is 3/,
  );
  await rejects(
    buildGguf({ tensors: [{ name: "w", ne: [1, 1, 1, 1, 1], type: 0, data: f32bytes([1]) }] }),
    /5 dimensions/,
  );
  await rejects(
    buildGguf({
      tensors: [
        { name: "w", ne: [1], type: 0, data: f32bytes([1]) },
        { name: "w", ne: [1], type: 0, data: f32bytes([1]) },
      ],
    }),
    /appears twice/,
  );
  // the error names the file
  const { writeFileSync, mkdtempSync, rmSync } = await import("node:fs");
  const { join } = await import("node:path");
  const { tmpdir } = await import("node:os");
  const dir = mkdtempSync(join(tmpdir(), "gguf-"));
  try {
    writeFileSync(join(dir, "broken.gguf"), bad);
    await assert.rejects(openGguf(join(dir, "broken.gguf")), (e: Error) => e.message.includes("broken.gguf"));
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("gguf: random mutations of the stories260K header give a FormatError or a valid file", async () => {
  const original = readFileSync(STORIES);
  const g = await openGguf(STORIES);
  const headerEnd = g.dataStart;
  await g.close();
  await fc.assert(
    fc.asyncProperty(
      // half of the edits hit the fixed-size fields at the start (magic, version, counts, first key)
      fc.array(
        fc.tuple(fc.oneof(fc.nat({ max: 63 }), fc.nat({ max: headerEnd - 1 })), fc.nat({ max: 255 })),
        { minLength: 1, maxLength: 8 },
      ),
      fc.option(fc.nat({ max: original.length }), { nil: undefined }),
      async (edits, cut) => {
        const bytes = new Uint8Array(original.subarray(0, cut ?? original.length));
        for (const [i, v] of edits) if (i < bytes.length) bytes[i] = v;
        try {
          const f = await openGguf(bytes);
          for (const t of f.tensors().slice(0, 4)) await f.read(t.name);
        } catch (e) {
          if (!(e instanceof FormatError)) throw e;
        }
      },
    ),
    { numRuns: 300 },
  );
});
