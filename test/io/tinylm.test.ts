import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openModelWeights } from "../../src/io/sharded.ts";
import { openSafetensors } from "../../src/io/safetensors_reader.ts";
import { createSafetensorsWriter } from "../../src/io/safetensors_writer.ts";
import { tempDir } from "./_helpers.ts";

const dir = new URL("../../../shared/models/tinylm-brown/", import.meta.url);
const file = new URL("model.safetensors", dir);
const present = existsSync(file);
const dirPath = fileURLToPath(dir);
const filePath = fileURLToPath(file);

/** Read float32 values straight from the file at an absolute offset (an independent path to the bytes). */
async function rawFloats(path: URL, offset: number, count: number): Promise<Float32Array> {
  const h = await open(path, "r");
  try {
    const buf = new Uint8Array(count * 4);
    await h.read(buf, 0, buf.length, offset);
    const dv = new DataView(buf.buffer);
    return Float32Array.from({ length: count }, (_, i) => dv.getFloat32(i * 4, true));
  } finally {
    await h.close();
  }
}

test("tinylm-brown: 57 tensors, 6,450,432 parameters, shapes from config.json, values match the raw bytes", {
  skip: present ? false : "../shared/models/tinylm-brown absent",
}, async () => {
  const config = JSON.parse(await readFile(new URL("config.json", dir), "utf8"));
  const r = await openModelWeights(dirPath);
  try {
    const tensors = r.tensors();
    assert.equal(tensors.length, 57);
    assert.equal(tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0), 6_450_432);
    assert.equal(r.metadata.format, "pt");
    const h = config.hidden_size, kv = config.num_key_value_heads * config.head_dim;
    assert.deepEqual(r.info("model.embed_tokens.weight").shape, [config.vocab_size, h]);
    assert.deepEqual(r.info("model.layers.5.self_attn.k_proj.weight").shape, [kv, h]);
    assert.deepEqual(r.info("model.layers.0.mlp.down_proj.weight").shape, [h, config.intermediate_size]);
    // every tensor reads, finite; compare a tensor's head and tail with the raw file bytes
    const st = await openSafetensors(filePath);
    for (const t of tensors) {
      const v = await r.read(t.name);
      assert.equal(v.length, t.byteLength / 4);
      for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) assert.fail(`${t.name}[${i}] = ${v[i]}`);
      const e = st.entry(t.name);
      assert.deepEqual(v.subarray(0, 8), await rawFloats(file, e.offset, Math.min(8, v.length)));
      const tail = Math.min(8, v.length);
      assert.deepEqual(
        v.subarray(v.length - tail),
        await rawFloats(file, e.offset + (v.length - tail) * 4, tail),
      );
    }
    // RMSNorm weights of a trained model are not all one and sit around 1
    const norm = await r.read("model.norm.weight");
    const mean = norm.reduce((a, b) => a + b, 0) / norm.length;
    assert.ok(mean > 0.1 && mean < 10, `mean norm weight ${mean}`);
    await st.close();
  } finally {
    await r.close();
  }
});

test("tinylm-brown: copied through the writer as BF16, reads back within bf16 rounding", {
  skip: present ? false : "../shared/models/tinylm-brown absent",
}, async () => {
  const { dir: out, cleanup } = await tempDir();
  const src = await openSafetensors(filePath);
  try {
    const names = [
      "model.layers.0.self_attn.q_proj.weight",
      "model.layers.3.mlp.up_proj.weight",
      "model.norm.weight",
    ];
    const dest = join(out, "copy.safetensors");
    const w = await createSafetensorsWriter(
      dest,
      names.map((n) => ({ name: n, dtype: "BF16", shape: [...src.info(n).shape] })),
      { metadata: { format: "pt" }, inputs: [filePath] },
    );
    for (const n of names) await w.write(n, await src.read(n));
    await w.close();
    const copy = await openSafetensors(dest);
    for (const n of names) {
      const a = await src.read(n), b = await copy.read(n);
      for (let i = 0; i < a.length; i++) {
        if (!(Math.abs(a[i] - b[i]) <= Math.abs(a[i]) * 2 ** -8)) {
          assert.fail(`${n}[${i}]: ${a[i]} → ${b[i]}`);
        }
      }
    }
    await copy.close();
  } finally {
    await src.close();
    await cleanup();
  }
});
