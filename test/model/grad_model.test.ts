/**
 * The streaming loss-and-gradient of a whole model: the gradients it reports (each linear's dyᵀ·x through the
 * hook, the embedding's through onInputGrad) against central finite differences of the loss in float64,
 * with and without a KL term to a reference model; its loss against the forward pass's perplexity on
 * stories260K; the block provider called once per block and pass; bad options refused.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { createRng } from "../../src/linalg/random.ts";
import { matmul64 } from "../../src/linalg/gemm.ts";
import { blockForward, type GradModel, lossAndGrad } from "../../src/model/backward.ts";
import {
  embeddingBackward,
  embeddingForward,
  linearForward,
  rmsnormForward,
} from "../../src/model/backward_ops.ts";
import { BLOCK_FIELD, forwardHidden, loadBlock, loadHead, tokenNll } from "../../src/model/llama.ts";
import { loadModel } from "../../src/model/load.ts";
import { LINEAR_NAMES, type LinearName } from "../../src/model/names.ts";
import { OptionError, ShapeError } from "../../src/errors.ts";
import {
  assertDirectionalGrad,
  rand64,
  randomModel64,
  randomWindows,
  specOf,
  specShape,
} from "./grad_helpers.ts";

const STORIES = new URL("../../models/stories260K/stories260K.gguf", import.meta.url).pathname;
const TOL = 1e-5;

/** The loss as a plain function (for finite differences): the same call, no hooks. */
async function lossOf(
  m: GradModel<Float64Array>,
  windows: Int32Array[],
  opts: Parameters<typeof lossAndGrad<Float64Array>>[2] = {},
) {
  return (await lossAndGrad(m, windows, {
    reference: opts?.reference,
    klWeight: opts?.klWeight,
    nllWeight: opts?.nllWeight,
  })).loss;
}

test("grad: model loss gradient (hooks and embedding) against finite differences, with and without KL", async () => {
  await fc.assert(
    fc.asyncProperty(
      specShape,
      fc.integer({ min: 1, max: 2 }),
      fc.integer({ min: 2, max: 5 }),
      fc.boolean(),
      fc.nat(),
      async (s, batch, seq, kl, seed) => {
        const spec = specOf(s),
          m = randomModel64(spec, seed),
          windows = randomWindows(batch, seq, spec.vocabSize, seed + 1);
        const reference = kl ? randomModel64(spec, seed + 2) : undefined;
        const opts = { reference, klWeight: kl ? 0.6 : undefined };
        const dW = new Map<string, Float64Array>();
        let dEmbedIn: Float64Array | undefined;
        const r = await lossAndGrad(m, windows, {
          ...opts,
          onLinearGrad: (layer, lin, x, dy) => {
            const g = new Float64Array(dy.cols * x.cols); // dL/dW = dyᵀ·x
            for (let t = 0; t < x.rows; t++) {
              for (let i = 0; i < dy.cols; i++) {
                for (let j = 0; j < x.cols; j++) {
                  g[i * x.cols + j] += dy.data[t * dy.cols + i] * x.data[t * x.cols + j];
                }
              }
            }
            dW.set(`${layer}/${lin}`, g);
          },
          onInputGrad: (dx) => (dEmbedIn = embeddingBackward(dx, windows, spec.vocabSize).data),
        });
        assert.equal(r.tokens, batch * (seq - 1));
        assert.ok(Math.abs(r.loss - (r.nll + (kl ? 0.6 * r.kl : 0))) < 1e-12);
        if (kl) assert.ok(r.kl > 0);
        assert.equal(dW.size, spec.numLayers * LINEAR_NAMES.length);
        const rng = createRng(seed + 3), f = () => lossOf(m, windows, opts);
        const check = (what: string, p: Float64Array, g: Float64Array) =>
          assertDirectionalGrad(what, f, p, g, rng, TOL);
        for (let i = 0; i < spec.numLayers; i++) {
          for (const name of LINEAR_NAMES) {
            const lin = m.blocks[i][BLOCK_FIELD[name]];
            assert.equal(lin.kind, "dense");
            if (lin.kind === "dense") await check(`${i}/${name}`, lin.weight.data, dW.get(`${i}/${name}`)!);
          }
        }
        await check("embedding", m.head.embed.data, dEmbedIn!);
      },
    ),
    { numRuns: 15 },
  );
});

test("grad: a compressed model's factor gradients from the hook (dA = dyᵀ·(x·Bᵀ), dB = (dy·A)ᵀ·x) match finite differences", async () => {
  await fc.assert(
    fc.asyncProperty(specShape, fc.integer({ min: 2, max: 5 }), fc.nat(), async (s, seq, seed) => {
      const spec = specOf(s),
        m = randomModel64(spec, seed, true),
        windows = randomWindows(2, seq, spec.vocabSize, seed);
      const grads = new Map<string, { a: Float64Array; b: Float64Array }>();
      await lossAndGrad(m, windows, {
        onLinearGrad: (layer, lin, x, dy) => {
          const l = m.blocks[layer][BLOCK_FIELD[lin]];
          if (l.kind !== "lowrank") return;
          const mid = matmul64(x, l.b, { transB: true }); // tokens×rank
          grads.set(`${layer}/${lin}`, {
            a: matmul64(dy, mid, { transA: true }).data,
            b: matmul64(matmul64(dy, l.a), x, { transA: true }).data,
          });
        },
      });
      assert.ok(grads.size >= spec.numLayers * 3); // q, v, gate, down are low-rank in randomBlock64
      const rng = createRng(seed + 7), f = () => lossOf(m, windows);
      for (const [key, g] of grads) {
        const [layer, lin] = key.split("/") as [string, LinearName];
        const l = m.blocks[Number(layer)][BLOCK_FIELD[lin]];
        if (l.kind !== "lowrank") continue;
        for (const [p, gp] of [[l.a.data, g.a], [l.b.data, g.b]] as const) {
          await assertDirectionalGrad(key, f, p, gp, rng, TOL);
        }
      }
    }),
    { numRuns: 10 },
  );
});

test("grad: KL to an identical reference is 0 and its gradient vanishes (nllWeight 0)", async () => {
  const spec = specOf({
    kvHeads: 1,
    group: 2,
    halfHead: 2,
    hidden: 8,
    inter: 7,
    vocab: 9,
    layers: 2,
    style: "halves",
    bias: false,
  });
  const m = randomModel64(spec, 4), windows = randomWindows(2, 6, 9, 5);
  let maxDy = 0;
  const r = await lossAndGrad(m, windows, {
    reference: m,
    nllWeight: 0,
    onLinearGrad: (_l, _n, _x, dy) => {
      for (const v of dy.data) maxDy = Math.max(maxDy, Math.abs(v));
    },
  });
  assert.ok(Math.abs(r.kl) < 1e-12 && Math.abs(r.loss) < 1e-12);
  assert.ok(maxDy < 1e-12);
  // per-window reference logits (of another model) give the same objective as that model as the reference
  const other = randomModel64(spec, 6);
  const logits = windows.map((w) => {
    let x = embeddingForward(other.head.embed, [w]);
    for (const blk of other.blocks) x = blockForward(spec, blk, x, { batch: 1, seq: w.length }).out!;
    return linearForward(
      { kind: "dense", weight: other.head.lmHead },
      rmsnormForward(x, other.head.norm, spec.rmsNormEps),
    );
  });
  const byModel = await lossAndGrad(m, windows, { reference: other, klWeight: 0.3 });
  const byLogits = await lossAndGrad(m, windows, { reference: logits, klWeight: 0.3 });
  assert.ok(byModel.kl > 0 && Math.abs(byModel.loss - byLogits.loss) < 1e-12 * byModel.loss);
});

test("grad: stories260K: lossAndGrad's loss is the forward pass's mean NLL; each block is fetched twice", async (t) => {
  let model;
  try {
    model = await loadModel(STORIES);
  } catch {
    t.skip("stories260K absent");
    return;
  }
  try {
    const { spec, reader } = model, head = await loadHead(reader, spec);
    const ids = Int32Array.from({ length: 3 * 48 }, (_, i) => (i * 37 + 11) % spec.vocabSize);
    const windows = [0, 1, 2].map((b) => ids.subarray(b * 48, (b + 1) * 48));
    const fetched: number[] = [];
    const seen = new Map<LinearName, number>();
    const r = await lossAndGrad(
      { spec, head, block: (i) => (fetched.push(i), loadBlock(reader, spec, i)) },
      windows,
      {
        onLinearGrad: (_layer, lin, x, dy) => {
          assert.ok(x.data.every(Number.isFinite) && dy.data.every(Number.isFinite));
          seen.set(lin, (seen.get(lin) ?? 0) + 1);
        },
      },
    );
    const L = spec.numLayers;
    assert.deepEqual(fetched, [...Array(L).keys(), ...[...Array(L).keys()].reverse()]);
    for (const name of LINEAR_NAMES) assert.equal(seen.get(name), L);
    const h = await forwardHidden(model, windows);
    const targets = Int32Array.from(
      { length: 3 * 48 },
      (_, i) => (i % 48 === 47 ? -1 : windows[Math.floor(i / 48)][(i % 48) + 1]),
    );
    const nll = tokenNll(spec, head, h, targets).filter((v) => !Number.isNaN(v));
    const mean = nll.reduce((a, b) => a + b, 0) / nll.length;
    assert.equal(r.tokens, nll.length);
    assert.ok(Math.abs(r.nll - mean) < 1e-4 * mean, `${r.nll} vs ${mean}`);
    assert.equal(r.loss, r.nll);
  } finally {
    await model.close();
  }
});

test("grad: lossAndGrad refuses bad options before any work", async () => {
  const spec = specOf({
    kvHeads: 1,
    group: 1,
    halfHead: 1,
    hidden: 4,
    inter: 4,
    vocab: 6,
    layers: 1,
    style: "halves",
    bias: false,
  });
  const m = randomModel64(spec, 1);
  let fetched = 0;
  const counting: GradModel<Float64Array> = { ...m, block: (i) => (fetched++, m.block(i)) };
  await assert.rejects(lossAndGrad(counting, []), OptionError);
  await assert.rejects(lossAndGrad(counting, [Int32Array.of(1)]), /at least 2 tokens/);
  await assert.rejects(lossAndGrad(counting, [Int32Array.of(1, 2)], { klWeight: -1 }), /klWeight/);
  await assert.rejects(lossAndGrad(counting, [Int32Array.of(1, 2)], { nllWeight: NaN }), /nllWeight/);
  await assert.rejects(
    lossAndGrad(counting, [Int32Array.of(1, 2)], { reference: [rand64(2, 5, createRng(1))] }),
    ShapeError,
  );
  await assert.rejects(lossAndGrad(counting, [Int32Array.of(1, 9)]), /token id 9 outside/);
  assert.equal(fetched, 0);
});
