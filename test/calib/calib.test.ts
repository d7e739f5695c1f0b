import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { calibrationWindows } from "../../src/calib/windows.ts";
import { AbsMeanObserver } from "../../src/calib/abs_mean.ts";
import { GramObserver } from "../../src/calib/gram.ts";
import { NumericError, OptionError, ShapeError } from "../../src/errors.ts";
import { createRng } from "../../src/linalg/random.ts";

const ids = Array.from({ length: 1000 }, (_, i) => i);

test("random windows are contiguous slices, reproducible by seed, different across seeds", () => {
  const a = calibrationWindows(ids, { samples: 8, seqlen: 64, seed: 3 });
  const b = calibrationWindows(ids, { samples: 8, seqlen: 64, seed: 3 });
  const c = calibrationWindows(ids, { samples: 8, seqlen: 64, seed: 4 });
  assert.equal(a.length, 8);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  for (const w of a) {
    assert.equal(w.length, 64);
    for (let i = 1; i < w.length; i++) assert.equal(w[i], w[i - 1] + 1);
    assert.ok(w[0] >= 0 && w[63] <= 999);
  }
  // a text exactly one window long gives that window every time
  assert.deepEqual(
    [...calibrationWindows(ids.slice(0, 64), { samples: 2, seqlen: 64 })[1]],
    ids.slice(0, 64),
  );
});

test("consecutive windows tile the text from the start", () => {
  const w = calibrationWindows(ids, { samples: 3, seqlen: 100, layout: "consecutive" });
  assert.deepEqual(w.map((x) => x[0]), [0, 100, 200]);
  assert.throws(
    () => calibrationWindows(ids, { samples: 11, seqlen: 100, layout: "consecutive" }),
    /1100 tokens.*1000/,
  );
});

test("calibration shorter than one window is an error naming both lengths", () => {
  assert.throws(() => calibrationWindows(ids.slice(0, 50), { samples: 1, seqlen: 256 }), (e: Error) => {
    assert.ok(e instanceof OptionError);
    assert.match(e.message, /50 tokens.*256 tokens/);
    return true;
  });
  assert.throws(() => calibrationWindows(ids, { samples: 0, seqlen: 8 }), OptionError);
  assert.throws(() => calibrationWindows(ids, { samples: 2, seqlen: 1.5 }), OptionError);
});

test("observers: batching does not change the statistics (abs mean/max, Gram running mean)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 1, max: 9 }),
      fc.nat(1000),
      (t, n, seed) => {
        const rng = createRng(seed);
        const x = new Float32Array(t * n).map(() => rng.normal() * 3);
        const one = new GramObserver("l", n, { precision: "float64" }),
          many = new GramObserver("l", n, { precision: "float64" });
        const am1 = new AbsMeanObserver("l", n), am2 = new AbsMeanObserver("l", n);
        one.addBatch({ rows: t, cols: n, data: x });
        am1.addBatch({ rows: t, cols: n, data: x });
        for (let r = 0; r < t; r += 3) {
          const e = Math.min(t, r + 3);
          const b = { rows: e - r, cols: n, data: x.subarray(r * n, e * n) };
          many.addBatch(b);
          am2.addBatch(b);
        }
        assert.equal(many.tokens, t);
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < n; j++) {
            let s = 0;
            for (let r = 0; r < t; r++) s += x[r * n + i] * x[r * n + j];
            s /= t;
            assert.ok(Math.abs(one.gram().data[i * n + j] - s) <= 1e-9 * (1 + Math.abs(s)));
            assert.ok(Math.abs(many.gram().data[i * n + j] - s) <= 1e-9 * (1 + Math.abs(s)));
          }
          let mean = 0, max = 0;
          for (let r = 0; r < t; r++) {
            mean += Math.abs(x[r * n + i]) / t;
            max = Math.max(max, Math.abs(x[r * n + i]));
          }
          assert.ok(Math.abs(am1.mean()[i] - mean) < 1e-9 * (1 + mean));
          assert.ok(Math.abs(am2.mean()[i] - mean) < 1e-9 * (1 + mean));
          assert.equal(am2.max()[i], max);
        }
      },
    ),
    { numRuns: 50 },
  );
});

test("observers reject non-finite activations naming the layer, and wrong widths", () => {
  const x = new Float32Array(12).fill(1);
  x[7] = NaN;
  for (
    const o of [
      new GramObserver("model.layers.2.mlp.down_proj", 4),
      new AbsMeanObserver("model.layers.2.mlp.down_proj", 4),
    ]
  ) {
    assert.throws(() => o.addBatch({ rows: 3, cols: 4, data: x }), (e: Error) => {
      assert.ok(e instanceof NumericError);
      assert.match(e.message, /model\.layers\.2\.mlp\.down_proj.*token 1, channel 3/);
      return true;
    });
    assert.equal(o.tokens, 0);
    assert.throws(() => o.addBatch({ rows: 2, cols: 6, data: new Float32Array(12) }), ShapeError);
  }
});

test('windows refuse ids and options that would silently become others (NaN → 0, 1.5 → 1, "4")', () => {
  const ids = Array.from({ length: 100 }, (_, i) => i % 7);
  const refuses = (f: () => unknown, re: RegExp) =>
    assert.throws(f, (e: Error) => e instanceof OptionError && re.test(e.message));
  refuses(
    () => calibrationWindows([...ids, NaN], { samples: 2, seqlen: 8 }),
    /position 100 is NaN, not an integer/,
  );
  refuses(
    () => calibrationWindows([1.5, ...ids], { samples: 2, seqlen: 8 }),
    /position 0 is 1\.5, not an integer/,
  );
  refuses(
    () => calibrationWindows(ids, { samples: "4" as unknown as number, seqlen: 8 }),
    /samples .* got "4"$/,
  );
  refuses(
    () => calibrationWindows(ids, { samples: 2, seqlen: 8, seed: NaN }),
    /seed must be an integer, got NaN$/,
  );
  assert.equal(calibrationWindows(ids, { samples: 2, seqlen: 8, seed: 3 }).length, 2);
});
