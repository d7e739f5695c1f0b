// The protobuf writer: known encodings from the protobuf documentation, and a property test against a small
// independent decoder (sizes announced before writing equal the bytes written; deferred bytes stream in place).
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { encode, Message } from "../../src/export/protobuf.ts";

test("protobuf: known encodings (varint 150, negative int64, string, nested, float)", async () => {
  assert.deepEqual(Array.from(await encode(new Message().varint(1, 150))), [0x08, 0x96, 0x01]);
  assert.deepEqual(Array.from(await encode(new Message().string(2, "testing"))), [
    0x12,
    0x07,
    0x74,
    0x65,
    0x73,
    0x74,
    0x69,
    0x6e,
    0x67,
  ]);
  assert.deepEqual(Array.from(await encode(new Message().message(3, new Message().varint(1, 150)))), [
    0x1a,
    0x03,
    0x08,
    0x96,
    0x01,
  ]);
  // -1 as int64: ten bytes of two's complement
  assert.deepEqual(Array.from(await encode(new Message().varint(1, -1))), [
    0x08,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0x01,
  ]);
  assert.deepEqual(Array.from(await encode(new Message().float(2, 1))), [0x15, 0x00, 0x00, 0x80, 0x3f]);
  await assert.rejects(
    encode(new Message().deferred(1, { length: 3, bytes: () => new Uint8Array(2) })),
    /declared 3 bytes but produced 2/,
  );
});

/** A minimal decoder: field number → list of raw values (bigint for varints, bytes for length-delimited). */
function decode(b: Uint8Array): [number, bigint | Uint8Array | number][] {
  const out: [number, bigint | Uint8Array | number][] = [];
  let i = 0;
  const varint = () => {
    let v = 0n, shift = 0n;
    for (;;) {
      const x = b[i++];
      v |= BigInt(x & 127) << shift;
      shift += 7n;
      if (x < 128) return v;
    }
  };
  while (i < b.length) {
    const tag = Number(varint()), no = tag >> 3, wire = tag & 7;
    if (wire === 0) out.push([no, BigInt.asIntN(64, varint())]);
    else if (wire === 5) {
      (out.push([no, new DataView(b.buffer, b.byteOffset + i, 4).getFloat32(0, true)]), i += 4);
    } else {
      const len = Number(varint());
      out.push([no, b.subarray(i, i + len)]);
      i += len;
    }
  }
  return out;
}

test("protobuf: any message of ints, bytes, deferred bytes and a nested message decodes back", async () => {
  const field = fc.oneof(
    fc.record({ k: fc.constant("int"), no: fc.integer({ min: 1, max: 3000 }), v: fc.maxSafeInteger() }),
    fc.record({
      k: fc.constant("bytes"),
      no: fc.integer({ min: 1, max: 20 }),
      v: fc.uint8Array({ maxLength: 600 }),
    }),
    fc.record({
      k: fc.constant("deferred"),
      no: fc.integer({ min: 1, max: 20 }),
      v: fc.uint8Array({ maxLength: 600 }),
    }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(field, { maxLength: 12 }), async (fields) => {
      const inner = new Message(), outer = new Message();
      for (const f of fields) {
        if (f.k === "int") inner.varint(f.no, f.v as number);
        else if (f.k === "bytes") inner.bytes(f.no, f.v as Uint8Array);
        else {
          const v = f.v as Uint8Array;
          inner.deferred(f.no, { length: v.length, bytes: () => Promise.resolve(v) });
        }
      }
      outer.varint(1, 7).message(2, inner);
      const bytes = await encode(outer);
      assert.equal(bytes.length, outer.size);
      const top = decode(bytes);
      assert.deepEqual(top[0], [1, 7n]);
      const got = decode(top[1][1] as Uint8Array);
      assert.deepEqual(
        got.map(([no, v]) => [no, typeof v === "bigint" ? v : Array.from(v as Uint8Array)]),
        fields.map((f) => [f.no, f.k === "int" ? BigInt(f.v as number) : Array.from(f.v as Uint8Array)]),
      );
    }),
    { numRuns: 200 },
  );
});
