import { test } from "node:test";
import assert from "node:assert/strict";
import { loadModel } from "../../src/model/load.ts";
import { BLOCK_FIELD, embed, forwardBlock, loadBlock, loadHead } from "../../src/model/llama.ts";
import { LINEAR_NAMES, type LinearName } from "../../src/model/names.ts";
import { GramObserver } from "../../src/calib/gram.ts";
import { calibrationWindows } from "../../src/calib/windows.ts";
import { compressSvdLlm } from "../../src/methods/svdllm.ts";
import { compressSvd } from "../../src/methods/svd.ts";
import { rankFor } from "../../src/methods/ratio.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";
import { dataLoss } from "./_synthetic.ts";
import { STORIES, storiesText } from "../pipeline/_helpers.ts";

// Every linear of every block of stories260K, with the real activations the model feeds it (observe hook):
// SVD-LLM's layer loss ‖(W − AB)Xᵀ‖_F equals √T·sqrt(Σ_{i>k} σ_i²(W·L)) to 1e-4 relative.
test("SVD-LLM loss theorem on stories260K's real layers and activations", { timeout: 600_000 }, async () => {
  const m = await loadModel(STORIES);
  try {
    const ids = m.tokenizer.encode(await storiesText(), { bos: true });
    const windows = calibrationWindows(ids, { samples: 6, seqlen: 128, seed: 5 });
    const head = await loadHead(m.reader, m.spec);
    let x = embed(head, m.spec, windows);
    let checked = 0;
    for (let i = 0; i < m.spec.numLayers; i++) {
      const block = await loadBlock(m.reader, m.spec, i);
      const inputs = new Map<LinearName, Matrix>();
      const grams = new Map<LinearName, GramObserver>();
      x = forwardBlock(m.spec, block, x, { batch: windows.length, seq: 128 }, (linear, input) => {
        inputs.set(linear, { rows: input.rows, cols: input.cols, data: Float32Array.from(input.data) });
        const g = new GramObserver(linear, input.cols);
        g.addBatch(input);
        grams.set(linear, g);
      });
      for (const name of LINEAR_NAMES) {
        const lin = block[BLOCK_FIELD[name]];
        assert.equal(lin.kind, "dense");
        if (lin.kind !== "dense") continue;
        const w = lin.weight, xi = inputs.get(name)!;
        const k = rankFor(w.rows, w.cols, { removed: 0.2 });
        const { a, b, report } = compressSvdLlm(w, { gram: grams.get(name)!.gram() }, k);
        assert.equal(report.shift, 0, `block ${i} ${name}: Gram needed a shift`);
        const direct = dataLoss(w, a, b, xi);
        const predicted = Math.sqrt(xi.rows) * report.predictedLoss!;
        assert.ok(
          Math.abs(direct - predicted) <= 1e-4 * predicted,
          `block ${i} ${name}: ${direct} vs ${predicted}`,
        );
        // Plain SVD at the same rank loses more on these activations.
        const s = compressSvd(w, k);
        assert.ok(dataLoss(w, s.a, s.b, xi) > direct);
        checked++;
      }
    }
    assert.equal(checked, 35);
  } finally {
    await m.close();
  }
});

test("SVD-LLM on a real layer with fewer tokens than channels: compresses with a reported shift", {
  timeout: 600_000,
}, async () => {
  const m = await loadModel(STORIES);
  try {
    const ids = m.tokenizer.encode(await storiesText(), { bos: true });
    const windows = calibrationWindows(ids, { samples: 1, seqlen: 48, seed: 1 });
    const head = await loadHead(m.reader, m.spec);
    const block = await loadBlock(m.reader, m.spec, 2);
    let gram: GramObserver | undefined, input: Matrix | undefined;
    forwardBlock(m.spec, block, embed(head, m.spec, windows), { batch: 1, seq: 48 }, (linear, x) => {
      if (linear !== "mlp.down_proj") return;
      gram = new GramObserver(linear, x.cols); // 48 tokens, 172 channels: rank ≤ 48
      gram.addBatch(x);
      input = { rows: x.rows, cols: x.cols, data: Float32Array.from(x.data) };
    });
    const w = block.down.kind === "dense" ? block.down.weight : assert.fail("dense expected");
    const k = rankFor(w.rows, w.cols, { removed: 0.2 });
    const { a, b, report } = compressSvdLlm(w, { gram: gram!.gram() }, k);
    assert.ok(report.shift! > 0, "shift reported");
    for (const v of a.data) assert.ok(Number.isFinite(v));
    // k = 37 < 48 tokens: still far better on those tokens than plain SVD.
    const s = compressSvd(w, k);
    assert.ok(dataLoss(w, a, b, input!) < 0.5 * dataLoss(w, s.a, s.b, input!));
  } finally {
    await m.close();
  }
});
