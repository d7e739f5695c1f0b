import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createSafetensorsWriter, type TensorPlan } from "../../src/io/safetensors_writer.ts";
import { openSafetensors } from "../../src/io/safetensors_reader.ts";
import { decodeToFloat32, encodeFromFloat32 } from "../../src/io/dtype.ts";
import type { TensorReader } from "../../src/io/tensor_reader.ts";
import { numel, randomFloats, startRangeServer, tempDir } from "./_helpers.ts";

const plan: TensorPlan[] = [
  { name: "scalar", dtype: "F32", shape: [] },
  { name: "empty", dtype: "F16", shape: [0, 5] },
  { name: "odd.f32", dtype: "F32", shape: [3, 7, 5] },
  { name: "odd.f16", dtype: "F16", shape: [13, 11] },
  { name: "odd.bf16", dtype: "BF16", shape: [1, 17, 3] },
  { name: "10", dtype: "F32", shape: [1] }, // integer-like name: must keep plan order in the header
  { name: "big.bf16", dtype: "BF16", shape: [700, 1531] }, // > one 1M-element conversion chunk
  { name: "empty.f32", dtype: "F32", shape: [4, 0] },
  { name: "last.f16", dtype: "F16", shape: [257] },
];

function values(i: number, shape: number[]): Float32Array {
  const v = randomFloats(numel(shape), i + 1, 3);
  if (v.length > 2) {
    v[0] = 65504; // f16 max
    v[1] = -0;
  }
  return v;
}

/** What a value becomes after storage in `dtype` (independent path: encode then decode one array). */
function stored(dtype: TensorPlan["dtype"], v: Float32Array): Float32Array {
  return dtype === "F32" ? v : decodeToFloat32(dtype, encodeFromFloat32(dtype, v));
}

async function checkAll(r: TensorReader): Promise<void> {
  assert.deepEqual(r.tensors().map((t) => t.name), plan.map((t) => t.name));
  assert.equal(r.metadata.format, "pt");
  assert.equal(r.metadata["note"], "round trip ✓");
  for (const [i, t] of plan.entries()) {
    const info = r.info(t.name);
    assert.deepEqual([...info.shape], t.shape);
    assert.equal(info.dtype, t.dtype);
    const want = values(i, t.shape);
    const got = await r.read(t.name);
    assert.equal(got.length, want.length, t.name);
    const exact = stored(t.dtype, want);
    const tol = t.dtype === "F32" ? 0 : t.dtype === "F16" ? 2 ** -11 : 2 ** -8;
    for (let j = 0; j < want.length; j++) {
      if (!Object.is(got[j], exact[j])) assert.fail(`${t.name}[${j}]: ${got[j]} vs ${exact[j]}`);
      if (!(Math.abs(got[j] - want[j]) <= tol * Math.abs(want[j]) + 2 ** -24)) {
        assert.fail(`${t.name}[${j}]: ${got[j]} is not ${want[j]} within ${t.dtype} rounding`);
      }
    }
  }
  assert.equal(r.has("nope"), false);
  await assert.rejects(() => r.read("nope"), /no tensor named "nope"/);
}

test("round trip: writer → reader from a file, a Blob and a URL (F32/F16/BF16, 0-d, empty, odd shapes)", {
  timeout: 600_000,
}, async () => {
  const { dir, cleanup } = await tempDir();
  const server = await startRangeServer();
  try {
    const path = join(dir, "rt.safetensors");
    const w = await createSafetensorsWriter(path, plan, { metadata: { format: "pt", note: "round trip ✓" } });
    for (const [i, t] of plan.entries()) await w.write(t.name, values(i, t.shape));
    await w.close();

    const bytes = new Uint8Array(await readFile(path));
    // header is space-padded so the data section starts on an 8-byte boundary
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    assert.equal((8 + n) % 8, 0);
    const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    assert.match(headerText, /^\{"__metadata__".*\} *$/);
    assert.ok(headerText.indexOf('"odd.bf16"') < headerText.indexOf('"10"'), "plan order kept");

    const fromFile = await openSafetensors(path);
    await checkAll(fromFile);
    await fromFile.close();
    await fromFile.close(); // twice is fine
    await assert.rejects(() => fromFile.read("scalar"), /after close/);

    const fromBlob = await openSafetensors(new Blob([bytes]));
    await checkAll(fromBlob);
    await fromBlob.close();

    const url = server.put("/rt.safetensors", bytes);
    const fromUrl = await openSafetensors(url);
    await checkAll(fromUrl);
    await fromUrl.close();
    // only ranged requests: the size probe, the header, and tensor reads; never the whole file
    assert.ok(server.log.every((l) => l.range !== undefined), "every request is a Range request");
    const whole = server.log.filter((l) => l.range === `bytes=0-${bytes.byteLength - 1}`);
    assert.equal(whole.length, 0);
  } finally {
    await server.close();
    await cleanup();
  }
});
