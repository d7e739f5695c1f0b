/**
 * The spill store FWSVD's K-FAC pass and SoCo's bases share (`src/pipeline/spill.ts`): what goes in comes back
 * bit for bit with its element type, from the file or from memory alike; the file's name is gone as soon as it
 * is open (POSIX), keys are written once, and a closed store refuses to read.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "../_fc.ts";
import { openSpillStore } from "../../src/pipeline/spill.ts";

test("spill store: float32 and float64 arrays come back bit for bit, from the file as from memory", async () => {
  const dir = await mkdtemp(join(tmpdir(), "fwsvd-spill-test-"));
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.boolean(), fc.array(fc.double(), { maxLength: 40 })), {
          minLength: 1,
          maxLength: 8,
        }),
        async (items) => {
          const file = await openSpillStore({ what: "test", spill: true, dir });
          const mem = await openSpillStore({ what: "test", spill: false });
          assert.equal(file.spilled, true);
          assert.equal(mem.spilled, false);
          assert.deepEqual(await readdir(dir), []); // the name is gone; the open descriptor keeps the data
          const arrays = items.map(([f64, xs]) => f64 ? Float64Array.from(xs) : Float32Array.from(xs));
          // a view into a larger buffer is stored as the view, not its buffer
          const big = new Float64Array([9, 8, 7, 6]), view = big.subarray(1, 3);
          for (const s of [file, mem]) {
            arrays.forEach((a, i) => s.put(`k${i}`, a));
            s.put("view", view);
          }
          assert.equal(file.bytes(), mem.bytes());
          for (const i of arrays.keys()) {
            const a = file.get(`k${i}`), b = mem.get(`k${i}`);
            assert.equal(a.constructor, arrays[i].constructor);
            assert.deepEqual(a, arrays[i]); // deepEqual on typed arrays compares NaN, ±0 and ±∞ by value
            assert.deepEqual(b, arrays[i]);
          }
          assert.deepEqual(file.get("view"), new Float64Array([8, 7]));
          await file.close();
          await mem.close();
        },
      ),
      { numRuns: 20 },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("spill store: a key is written once, an unknown key and a closed store are named", async () => {
  for (const spill of [true, false]) {
    const s = await openSpillStore({ what: "fwsvd K-FAC factors", spill });
    s.put("a", new Float32Array(3));
    assert.equal(s.has("a"), true);
    assert.equal(s.has("b"), false);
    assert.throws(() => s.put("a", new Float32Array(1)), /fwsvd K-FAC factors: a was already stored/);
    assert.throws(() => s.get("b"), /fwsvd K-FAC factors: nothing stored under b/);
    await s.close();
    await s.close(); // idempotent
    assert.throws(() => s.get("a"), /fwsvd K-FAC factors: the spill store is closed \(reading a\)/);
  }
});
