// SoCo's compact head (soco_head.ts): the embedding rows of the used ids only and lm_head reordered give the same
// loss, KL and gradients as the full head, on random windows of arbitrary ids (a real model: stories260K).
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { loadModel } from "../../src/model/load.ts";
import { loadBlock, loadHead } from "../../src/model/llama.ts";
import { type GradModel, lossAndGrad } from "../../src/model/backward.ts";
import { compactHead } from "../../src/pipeline/soco_head.ts";
import { STORIES } from "./_helpers.ts";

test("soco compact head: same loss, KL and per-linear gradients as the full head", async () => {
  const m = await loadModel(STORIES);
  try {
    const { spec, reader } = m;
    const full = await loadHead(reader, spec);
    // The reference: the original model (the same blocks); only the heads differ between the two runs.
    const block = (i: number) => loadBlock(reader, spec, i);
    // The trained model: down_proj scaled by 0.9, so that the KL to the reference is not 0.
    const scaled = async (i: number) => {
      const b = await loadBlock(reader, spec, i);
      if (b.down.kind === "dense") {
        b.down = {
          ...b.down,
          weight: { ...b.down.weight, data: b.down.weight.data.map((x) => 0.9 * x) },
        };
      }
      return b;
    };
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 2, max: 12 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        async (batch, seq, seed) => {
          let s = seed;
          const rand = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
          const windows = Array.from(
            { length: batch },
            () => Int32Array.from({ length: seq }, () => Math.floor(rand() * spec.vocabSize)),
          );
          const { head, used, remap } = await compactHead(reader, spec, windows);
          assert.ok(head.embed.rows === used.length && used.length <= batch * seq);
          const run = async (h: typeof full, wins: Int32Array[]) => {
            const model: GradModel = { spec, head: h, block: scaled };
            const grads: number[] = [];
            const r = await lossAndGrad(model, wins, {
              reference: { spec, head: h, block },
              klWeight: 0.5,
              onLinearGrad: (_l, _lin, _x, dy) => grads.push(...dy.data.subarray(0, 8)),
            });
            return { ...r, grads };
          };
          const a = await run(full, windows), b = await run(head, windows.map(remap));
          const close = (x: number, y: number, what: string) =>
            assert.ok(Math.abs(x - y) <= 1e-5 * (1 + Math.abs(x)), `${what}: ${x} vs ${y}`);
          close(a.loss, b.loss, "loss");
          close(a.nll, b.nll, "nll");
          assert.ok(a.kl > 1e-6, `KL ${a.kl}`);
          close(a.kl, b.kl, "kl");
          assert.equal(a.grads.length, b.grads.length);
          const scale = Math.max(...a.grads.map(Math.abs));
          a.grads.forEach((g, i) =>
            assert.ok(Math.abs(g - b.grads[i]) <= 1e-4 * scale, `dy ${i}: ${g} vs ${b.grads[i]}`)
          );
        },
      ),
      { numRuns: 12 },
    );
  } finally {
    await m.close();
  }
});

test("soco compact head: an id outside the vocabulary is named", async () => {
  const m = await loadModel(STORIES);
  try {
    await assert.rejects(
      compactHead(m.reader, m.spec, [Int32Array.of(1, m.spec.vocabSize)]),
      /token id 512 of a calibration window is outside the vocabulary \(512\)/,
    );
  } finally {
    await m.close();
  }
});

test("soco compact head with lm_head in a temporary file: bit-identical loss and gradients, one read per loss", async () => {
  const { openSpillStore } = await import("../../src/pipeline/spill.ts");
  const m = await loadModel(STORIES);
  const store = await openSpillStore({ what: "soco head test", spill: true });
  try {
    const { spec, reader } = m;
    const windows = [Int32Array.of(5, 9, 300, 5, 7, 11, 2), Int32Array.of(1, 2, 3, 4, 5, 6, 7)];
    const mem = await compactHead(reader, spec, windows);
    let reads = 0;
    const spilled = await compactHead(reader, spec, windows, { store, beforeRead: () => reads++ });
    assert.equal(reads, 0); // nothing read back yet
    assert.equal(spilled.head.lmHead.rows, spec.vocabSize);
    const block = (i: number) => loadBlock(reader, spec, i);
    const run = async (head: typeof mem.head) => {
      const grads: number[] = [];
      const r = await lossAndGrad({ spec, head, block }, windows.map(mem.remap), {
        reference: {
          spec,
          head,
          block: async (i) => ({
            ...(await block(i)),
            postNorm: new Float32Array(spec.hiddenSize).fill(0.5),
          }),
        },
        klWeight: 0.5,
        onLinearGrad: (_l, _lin, _x, dy) => grads.push(...dy.data),
      });
      return { ...r, grads };
    };
    const a = await run(mem.head), b = await run(spilled.head);
    assert.equal(reads, 1, `lm_head read ${reads} times in one loss`);
    spilled.dropLmHead(); // let it go: the next use reads it again
    assert.deepEqual(spilled.head.lmHead.data, mem.head.lmHead.data);
    assert.equal(reads, 2);
    assert.ok(a.kl > 1e-6, `KL ${a.kl}`);
    assert.equal(b.loss, a.loss);
    assert.equal(b.kl, a.kl);
    assert.deepEqual(b.grads, a.grads);
  } finally {
    await store.close();
    await m.close();
  }
});
