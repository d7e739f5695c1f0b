import { test } from "node:test";
import assert from "node:assert/strict";
import { link, readdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  createSafetensorsWriter,
  type TensorPlan,
  withSafetensorsWriter,
} from "../../src/io/safetensors_writer.ts";
import { writeFileAtomic } from "../../src/io/atomic_write.ts";
import { openSafetensors } from "../../src/io/safetensors_reader.ts";
import { OptionError, ShapeError } from "../../src/errors.ts";
import { tempDir } from "./_helpers.ts";

const plan: TensorPlan[] = [
  { name: "a", dtype: "F32", shape: [2, 2] },
  { name: "b", dtype: "F16", shape: [3] },
  { name: "c", dtype: "BF16", shape: [1] },
];

test("abort and errors mid-way leave neither the destination nor a temp file", async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const dest = join(dir, "out.safetensors");
    // explicit abort after a partial write
    const w1 = await createSafetensorsWriter(dest, plan);
    assert.ok(w1.tempPath.startsWith(dest + ".tmp-"));
    await w1.write("a", new Float32Array(4));
    assert.deepEqual(await readdir(dir), [w1.tempPath.slice(dir.length + 1)]);
    await w1.abort();
    await w1.abort(); // twice is fine
    assert.deepEqual(await readdir(dir), []);
    await assert.rejects(() => w1.write("b", new Float32Array(3)), /already aborted/);

    // wrong order: error names the tensor and the expected one, writer aborted
    const w2 = await createSafetensorsWriter(dest, plan);
    await assert.rejects(() => w2.write("b", new Float32Array(3)), (e: Error) => {
      assert.ok(e instanceof OptionError);
      assert.match(e.message, /tensor "b" written out of order: expected "a" next/);
      return true;
    });
    assert.deepEqual(await readdir(dir), []);

    // wrong length
    const w3 = await createSafetensorsWriter(dest, plan);
    await w3.write("a", new Float32Array(4));
    await assert.rejects(() => w3.write("b", new Float32Array(4)), (e: Error) => {
      assert.ok(e instanceof ShapeError);
      assert.match(e.message, /tensor "b" of shape \[3\] needs 3 values, got 4/);
      return true;
    });
    assert.deepEqual(await readdir(dir), []);

    // unknown name, and close before the end
    const w4 = await createSafetensorsWriter(dest, plan);
    await assert.rejects(() => w4.write("zzz", new Float32Array(1)), /tensor "zzz" is not in the plan/);
    const w5 = await createSafetensorsWriter(dest, plan);
    await w5.write("a", new Float32Array(4));
    await assert.rejects(() => w5.close(), /missing "b", "c"/);
    assert.deepEqual(await readdir(dir), []);

    // an exception in the producer: withSafetensorsWriter aborts
    await assert.rejects(
      withSafetensorsWriter(dest, plan, async (w) => {
        await w.write("a", new Float32Array(4));
        throw new Error("producer died");
      }),
      /producer died/,
    );
    assert.deepEqual(await readdir(dir), []);

    // and the happy path through the same helper
    await withSafetensorsWriter(dest, plan, async (w) => {
      await w.write("a", new Float32Array([1, 2, 3, 4]));
      await w.write("b", new Float32Array([0.5, -0.25, 1 / 3]));
      await w.write("c", new Float32Array([3.140625]));
    });
    assert.deepEqual(await readdir(dir), ["out.safetensors"]);
    const r = await openSafetensors(dest);
    assert.deepEqual(Array.from(await r.read("b")), [0.5, -0.25, 0.333251953125]);
    assert.deepEqual(Array.from(await r.read("c")), [3.140625]);
    await r.close();
  } finally {
    await cleanup();
  }
});

test("plan validation: duplicates, bad shapes, bad dtypes, bad metadata", async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const dest = join(dir, "x.safetensors");
    await assert.rejects(createSafetensorsWriter(dest, [plan[0], plan[0]]), /"a" planned twice/);
    await assert.rejects(
      createSafetensorsWriter(dest, [{ name: "a", dtype: "F32", shape: [2, -1] }]),
      ShapeError,
    );
    await assert.rejects(
      createSafetensorsWriter(dest, [{ name: "a", dtype: "F64" as "F32", shape: [2] }]),
      /not writable/,
    );
    await assert.rejects(
      createSafetensorsWriter(dest, [{ name: "__metadata__", dtype: "F32", shape: [] }]),
      OptionError,
    );
    await assert.rejects(
      createSafetensorsWriter(dest, plan, { metadata: { n: 3 as unknown as string } }),
      /metadata "n" must be a string/,
    );
    assert.deepEqual(await readdir(dir), []);
  } finally {
    await cleanup();
  }
});

test("existing destination needs overwrite; an input file is never overwritten", async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const dest = join(dir, "model.safetensors");
    await writeFile(dest, "old");
    await assert.rejects(createSafetensorsWriter(dest, plan), /already exists; pass overwrite: true/);
    assert.equal(await readFile(dest, "utf8"), "old");

    // destination created by someone else while writing: close refuses without overwrite
    const other = join(dir, "late.safetensors");
    const w = await createSafetensorsWriter(other, [{ name: "s", dtype: "F32", shape: [] }]);
    await w.write("s", new Float32Array([1]));
    await writeFile(other, "someone else's");
    await assert.rejects(() => w.close(), /already exists/);
    assert.equal(await readFile(other, "utf8"), "someone else's");
    assert.deepEqual((await readdir(dir)).sort(), ["late.safetensors", "model.safetensors"]);

    // overwrite: true replaces
    const w2 = await createSafetensorsWriter(dest, [{ name: "s", dtype: "F32", shape: [] }], {
      overwrite: true,
    });
    await w2.write("s", new Float32Array([2]));
    await w2.close();
    const r2 = await openSafetensors(dest);
    assert.deepEqual(Array.from(await r2.read("s")), [2]);
    await r2.close();

    // same file as an input: refused even with overwrite, through a symlink, a hard link or a relative path
    const viaSymlink = join(dir, "sym.safetensors");
    await symlink(dest, viaSymlink);
    const viaHardlink = join(dir, "hard.safetensors");
    await link(dest, viaHardlink);
    for (const target of [dest, viaSymlink, viaHardlink, join(dir, ".", "model.safetensors")]) {
      await assert.rejects(
        createSafetensorsWriter(target, plan, { overwrite: true, inputs: [dest] }),
        /refusing to write .*: it is the input file/,
        target,
      );
    }
    // a different input is fine
    const w3 = await createSafetensorsWriter(join(dir, "new.safetensors"), plan, { inputs: [dest] });
    await w3.abort();
  } finally {
    await cleanup();
  }
});

test("writeFileAtomic: writes, refuses to overwrite unless asked, leaves no temp files", async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const p = join(dir, "config.json");
    await writeFileAtomic(p, '{"a":1}\n');
    assert.equal(await readFile(p, "utf8"), '{"a":1}\n');
    await assert.rejects(writeFileAtomic(p, "x"), /already exists/);
    await writeFileAtomic(p, new Uint8Array([104, 105]), { overwrite: true });
    assert.equal(await readFile(p, "utf8"), "hi");
    await assert.rejects(writeFileAtomic(join(dir, "no", "such", "dir.json"), "x"));
    assert.deepEqual(await readdir(dir), ["config.json"]);
  } finally {
    await cleanup();
  }
});
