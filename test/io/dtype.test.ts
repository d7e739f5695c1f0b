import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import {
  decodeInto,
  decodeToFloat32,
  dtypeSize,
  encodeFromFloat32,
  f16BitsToNumber,
  numberToBf16Bits,
  numberToF16Bits,
} from "../../src/io/dtype.ts";

const f32 = (x: number) => Math.fround(x);

test("f16: known encodings (round to nearest even, subnormals, overflow, specials)", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff], // largest half
    [65519.99, 0x7bff], // below the midpoint to 65536 stays finite
    [65520, 0x7c00], // midpoint rounds to even = Inf
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // half of it: tie → even (0)
    [3 * 2 ** -25, 0x0002], // 1.5 ulps: tie → even (2)
    [1 + 2 ** -11, 0x3c00], // tie between 1 and 1+2^-10 → even (1)
    [1 + 3 * 2 ** -11, 0x3c02], // tie → even (1+2^-9)
    [1 / 3, 0x3555],
  ];
  for (const [x, bits] of cases) {
    assert.equal(numberToF16Bits(x), bits, `f16(${x})`);
  }
  assert.ok(Number.isNaN(f16BitsToNumber(numberToF16Bits(NaN))));
});

test("bf16: known encodings", () => {
  assert.equal(numberToBf16Bits(1), 0x3f80);
  assert.equal(numberToBf16Bits(-1), 0xbf80);
  assert.equal(numberToBf16Bits(1 + 2 ** -8), 0x3f80); // tie → even
  assert.equal(numberToBf16Bits(1 + 3 * 2 ** -8), 0x3f82); // tie → even (up)
  assert.equal(numberToBf16Bits(f32(3.4e38)), 0x7f80); // rounds past the largest bf16 → Inf
  assert.equal(numberToBf16Bits(Infinity), 0x7f80);
  assert.ok(Number.isNaN(decodeToFloat32("BF16", new Uint8Array([0xc1, 0x7f]))[0]));
  assert.ok(Number.isNaN(decodeToFloat32("BF16", encodeFromFloat32("BF16", new Float32Array([NaN])))[0]));
});

test("f16: every half survives decode → encode exactly", () => {
  const bytes = new Uint8Array(65536 * 2);
  for (let h = 0; h < 65536; h++) {
    bytes[2 * h] = h & 0xff;
    bytes[2 * h + 1] = h >> 8;
  }
  const values = decodeToFloat32("F16", bytes);
  const back = encodeFromFloat32("F16", values);
  for (let h = 0; h < 65536; h++) {
    const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (isNaN) assert.ok(Number.isNaN(values[h]));
    else assert.equal(back[2 * h] | (back[2 * h + 1] << 8), h, `half 0x${h.toString(16)}`);
  }
  // spot values against the IEEE definition
  assert.equal(values[0x3c00], 1);
  assert.equal(values[0x0001], 2 ** -24);
  assert.equal(values[0x7bff], 65504);
  assert.equal(values[0xfc00], -Infinity);
});

/** The representable neighbours of a half/bf16 code, as numbers. */
function nearestCheck(x: number, code: number, decode: (c: number) => number, maxFinite: number): void {
  const y = decode(code);
  if (Math.abs(x) > maxFinite) return; // overflow region, checked by known cases
  const err = Math.abs(x - y);
  for (const d of [-1, 1]) {
    const other = code + d;
    if (other < 0 || (other & 0x7fff) >= 0x7c00 && maxFinite === 65504) continue;
    const z = decode(other & 0xffff);
    if (!Number.isFinite(z) || Math.sign(z) !== Math.sign(y) && z !== 0 && y !== 0) continue;
    const e2 = Math.abs(x - z);
    assert.ok(
      err < e2 || (err === e2 && (code & 1) === 0),
      `x=${x} code=${code} neighbour ${other} is nearer`,
    );
  }
}

test("f16 / bf16 encoders pick the nearest value, ties to even (property)", () => {
  const bf16 = (c: number) => new Float32Array(new Uint32Array([c << 16]).buffer)[0];
  fc.assert(
    fc.property(fc.float({ noNaN: true, noDefaultInfinity: true }), (x) => {
      nearestCheck(x, numberToF16Bits(x), f16BitsToNumber, 65504);
      nearestCheck(x, numberToBf16Bits(x), bf16, 3.3895313892515355e38);
    }),
    { numRuns: 2000 },
  );
});

test("f16 / bf16 encoders round exact midpoints to the even neighbour (property)", () => {
  const bf16 = (c: number) => new Float32Array(new Uint32Array([c << 16]).buffer)[0];
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0x7bfe }),
      fc.integer({ min: 0, max: 0x7f7e }),
      fc.boolean(),
      (h, b, neg) => {
        // the midpoint of two adjacent finite halves (or bf16s) is exact in float32
        const sign = neg ? 0x8000 : 0;
        const even = h % 2 === 0 ? h : h + 1;
        const mid = (f16BitsToNumber(h | sign) + f16BitsToNumber((h + 1) | sign)) / 2;
        assert.equal(numberToF16Bits(mid), even | sign, `f16 midpoint ${mid}`);
        const bmid = (bf16(b | sign) + bf16((b + 1) | sign)) / 2;
        assert.equal(numberToBf16Bits(bmid), (b % 2 === 0 ? b : b + 1) | sign, `bf16 midpoint ${bmid}`);
      },
    ),
    { numRuns: 1000 },
  );
});

test("decode is unaligned-safe and matches DataView for every dtype", () => {
  const n = 37;
  const cases = [
    ["F32", (dv: DataView, i: number) => dv.getFloat32(i * 4, true)],
    ["F64", (dv: DataView, i: number) => f32(dv.getFloat64(i * 8, true))],
    ["I32", (dv: DataView, i: number) => f32(dv.getInt32(i * 4, true))],
    ["I64", (dv: DataView, i: number) => f32(Number(dv.getBigInt64(i * 8, true)))],
    ["U8", (dv: DataView, i: number) => dv.getUint8(i)],
    [
      "BF16",
      (dv: DataView, i: number) =>
        new Float32Array(new Uint32Array([dv.getUint16(i * 2, true) << 16]).buffer)[0],
    ],
    ["F16", (dv: DataView, i: number) => f16BitsToNumber(dv.getUint16(i * 2, true))],
  ] as const;
  for (const [dtype, ref] of cases) {
    const size = dtypeSize(dtype);
    const raw = new Uint8Array(1 + n * size + 3);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 97 + 13) & 0xff;
    if (dtype === "F64") {
      // keep the doubles finite and in float32 range
      const dv0 = new DataView(raw.buffer, 1);
      for (let i = 0; i < n; i++) dv0.setFloat64(i * 8, (i - 18) * 1.25e3, true);
    }
    const bytes = raw.subarray(1, 1 + n * size); // odd byte offset
    const got = decodeToFloat32(dtype, bytes);
    const dv = new DataView(raw.buffer, 1, n * size);
    for (let i = 0; i < n; i++) {
      const want = ref(dv, i);
      if (Number.isNaN(want)) assert.ok(Number.isNaN(got[i]), `${dtype}[${i}]`);
      else assert.equal(got[i], want, `${dtype}[${i}]`);
    }
    // decodeInto at an output offset leaves the rest alone
    const out = new Float32Array(n + 4).fill(7);
    decodeInto(dtype, bytes, out, 2, n);
    assert.equal(out[0], 7);
    assert.equal(out[n + 3], 7);
    assert.deepEqual(Array.from(out.subarray(2, 2 + n)).map(String), Array.from(got).map(String));
  }
});

test("encode F32 writes little-endian bytes into an unaligned buffer", () => {
  const x = new Float32Array([1.5, -2.25, 3e-40, Infinity]);
  const buf = new Uint8Array(1 + 16);
  encodeFromFloat32("F32", x, buf.subarray(1));
  const dv = new DataView(buf.buffer, 1);
  for (let i = 0; i < 4; i++) assert.equal(dv.getFloat32(i * 4, true), x[i]);
  assert.throws(() => encodeFromFloat32("F16", x, new Uint8Array(7)), RangeError);
});
