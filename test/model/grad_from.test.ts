/**
 * `lossAndGrad` started at block i (`from: { layer, x }`, what sequential FWSVD uses): with x the dense
 * prefix's output it reports the same loss and the same (x, dy) for every linear of blocks i… as the full
 * pass, none for the blocks before, and its dL/dx matches central finite differences of the loss in x.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { createRng } from "../../src/linalg/random.ts";
import { blockForward, lossAndGrad } from "../../src/model/backward.ts";
import { embeddingForward } from "../../src/model/backward_ops.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";
import { OptionError, ShapeError } from "../../src/errors.ts";
import {
  assertDirectionalGrad,
  randomModel64,
  randomWindows,
  relErr,
  specOf,
  specShape,
} from "./grad_helpers.ts";

type M64 = Matrix<Float64Array>;

test("lossAndGrad from block i: same loss and hooks as the full pass for blocks ≥ i, dL/dx by finite differences", async () => {
  await fc.assert(
    fc.asyncProperty(specShape, fc.nat(), async (shape, seed) => {
      const spec = specOf({ ...shape, layers: 1 + (seed % 3) });
      const m = randomModel64(spec, seed), layer = seed % spec.numLayers;
      const windows = randomWindows(2, 5, spec.vocabSize, seed + 1), layout = { batch: 2, seq: 5 };
      const full = new Map<string, [M64, M64]>();
      const r0 = await lossAndGrad(m, windows, {
        onLinearGrad: (l, lin, x, dy) => full.set(`${l}.${lin}`, [x, dy]),
      });
      let x = embeddingForward(m.head.embed, windows);
      for (let i = 0; i < layer; i++) x = blockForward(spec, m.blocks[i], x, layout, false).out!;
      const seen = new Map<string, [M64, M64]>();
      let dx: M64 | undefined;
      const r1 = await lossAndGrad(m, windows, {
        from: { layer, x },
        onLinearGrad: (l, lin, xi, dy) => seen.set(`${l}.${lin}`, [xi, dy]),
        onInputGrad: (g) => (dx = g),
      });
      assert.ok(Math.abs(r0.loss - r1.loss) <= 1e-12 * Math.max(1, r0.loss));
      assert.equal(seen.size, 7 * (spec.numLayers - layer));
      for (const [key, [xi, dy]] of seen) {
        assert.ok(Number(key.split(".")[0]) >= layer, key);
        const [fx, fdy] = full.get(key)!;
        assert.ok(relErr(xi.data, fx.data, 1e-12) < 1e-10 && relErr(dy.data, fdy.data, 1e-12) < 1e-10, key);
      }
      // dL/dx at the start: central differences along a random direction.
      const loss = async () => (await lossAndGrad(m, windows, { from: { layer, x } })).loss;
      await assertDirectionalGrad("dL/dx", loss, x.data, dx!.data, createRng(seed + 2), 1e-5);
    }),
    { numRuns: 15 },
  );
});

test("lossAndGrad from: a block index out of range or an input of the wrong shape is refused", async () => {
  const spec = specOf({
    kvHeads: 1,
    group: 2,
    halfHead: 1,
    hidden: 4,
    inter: 5,
    vocab: 7,
    layers: 2,
    style: "halves",
    bias: false,
  });
  const m = randomModel64(spec, 1), windows = randomWindows(2, 3, 7, 1);
  const x = embeddingForward(m.head.embed, windows);
  await assert.rejects(
    lossAndGrad(m, windows, { from: { layer: 2, x } }),
    (e) => e instanceof OptionError && /from.layer must be a block index in 0…1, got 2/.test(e.message),
  );
  await assert.rejects(
    lossAndGrad(m, windows, { from: { layer: 1, x: { ...x, rows: 5, data: x.data.subarray(0, 20) } } }),
    (e) =>
      e instanceof ShapeError &&
      /from.x must be 6×4 \(the windows' tokens × hidden\), got 5×4/.test(e.message),
  );
});
