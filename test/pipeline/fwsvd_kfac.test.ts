/**
 * FWSVD's Fisher passes on a real (tiny GQA) model: the K-FAC factors the pass accumulates equal their
 * definition, E[x xᵀ] and E[dy dyᵀ] over every calibration token, computed here in float64 straight from the
 * backward pass's (x, dy); and the sequential pass, whose block i sees the compressed blocks before it, gives
 * block 0 exactly the dense pass's factors (nothing precedes it) but different ones for block 1.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadModel } from "../../src/model/load.ts";
import { calibrationWindows } from "../../src/calib/windows.ts";
import { fisherInformation, fwsvdFactors } from "../../src/pipeline/fwsvd.ts";
import { lossAndGrad } from "../../src/model/backward.ts";
import { loadBlock, loadHead } from "../../src/model/llama.ts";
import { LINEAR_NAMES, linearPrefix } from "../../src/model/names.ts";
import { rankFor } from "../../src/methods/ratio.ts";
import { linearShape } from "../../src/model/linear_shape.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";

const TINY = join(fileURLToPath(new URL("../../", import.meta.url)), "test/fixtures/models/llama-gqa-tiny");
const ids = Int32Array.from({ length: 600 }, (_, i) => (i * 37 + (i >> 3)) % 101);

function addOuter(sum: Float64Array, m: Matrix): void {
  const n = m.cols;
  for (let t = 0; t < m.rows; t++) {
    for (let i = 0; i < n; i++) {
      const v = m.data[t * n + i];
      for (let j = 0; j < n; j++) sum[i * n + j] += v * m.data[t * n + j];
    }
  }
}

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, s = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    s += b[i] ** 2;
  }
  return Math.sqrt(d / s);
}

test("fwsvd kfac: the pass's factors are E[x xᵀ] and E[dy dyᵀ] over all tokens, one input factor per group", async () => {
  const m = await loadModel(TINY);
  try {
    const windows = calibrationWindows(ids, { samples: 3, seqlen: 24, seed: 1 });
    const head = await loadHead(m.reader, m.spec);
    const xs = new Map<string, Float64Array>(), dys = new Map<string, Float64Array>();
    let tokens = 0;
    for (const w of windows) {
      await lossAndGrad({ spec: m.spec, head, block: (i) => loadBlock(m.reader, m.spec, i) }, [w], {
        onLinearGrad: (layer, lin, x, dy) => {
          const key = linearPrefix(layer, lin);
          if (!xs.has(key)) {
            xs.set(key, new Float64Array(x.cols ** 2)), dys.set(key, new Float64Array(dy.cols ** 2));
          }
          addOuter(xs.get(key)!, x);
          addOuter(dys.get(key)!, dy);
        },
      });
      tokens += w.length;
    }
    const diag = await fisherInformation(m, windows); // batch by batch, no K-FAC
    // The block-major K-FAC pass, its factors spilled to a file or kept in memory: the same statistics.
    for (const spill of [true, false]) {
      const f = await fisherInformation(m, windows, { kfac: true, spill });
      assert.equal(f.kfac!.spilled, spill);
      assert.equal(f.batches, diag.batches);
      assert.ok(Math.abs(f.meanLoss - diag.meanLoss) < 1e-12 * diag.meanLoss);
      for (const [key, r] of diag.rows) {
        assert.ok(relDiff(f.rows.get(key)!, r) < 1e-12, `${key} rows`);
        assert.ok(relDiff(f.cols.get(key)!, diag.cols.get(key)!) < 1e-12, `${key} cols`);
      }
      for (let i = 0; i < m.spec.numLayers; i++) {
        const block = f.kfac!.block(i);
        assert.deepEqual([...block.keys()], LINEAR_NAMES.map((n) => linearPrefix(i, n)));
        for (const [key, k] of block) {
          assert.ok(relDiff(k.input.data, xs.get(key)!.map((v) => v / tokens)) < 1e-5, `${key} input`);
          assert.ok(relDiff(k.output.data, dys.get(key)!.map((v) => v / tokens)) < 1e-5, `${key} output`);
        }
        const q = block.get(linearPrefix(i, "self_attn.q_proj"))!,
          v = block.get(linearPrefix(i, "self_attn.v_proj"))!;
        assert.equal(q.input, v.input); // one Gram for the three attention projections
      }
      assert.throws(() => f.kfac!.block(m.spec.numLayers), /no K-FAC factors for block 2/);
      await f.kfac!.close();
      assert.throws(() => f.kfac!.block(0), /spill store is closed/);
    }
  } finally {
    await m.close();
  }
});

test("fwsvd sequential (full, and K-FAC's input factors only): block 0's factors equal the dense pass's, block 1's see the compressed block 0", async () => {
  const m = await loadModel(TINY);
  try {
    const windows = calibrationWindows(ids, { samples: 3, seqlen: 24, seed: 2 });
    const ranks: Record<string, number> = {};
    for (let i = 0; i < m.spec.numLayers; i++) {
      for (const n of LINEAR_NAMES) {
        const [rows, cols] = linearShape(m.spec, n);
        ranks[linearPrefix(i, n)] = rankFor(rows, cols, { removed: 0.5 });
      }
    }
    for (const [side, sequential] of [["kfac", true], ["input", true], ["kfac", "inputs"]] as const) {
      const dense = await fwsvdFactors(m, windows, { ranks, side, sequential: false });
      const seq = await fwsvdFactors(m, windows, { ranks, side, sequential });
      for (const n of LINEAR_NAMES) {
        const a = dense.factors.get(linearPrefix(0, n))!, b = seq.factors.get(linearPrefix(0, n))!;
        assert.ok(
          relDiff(b.a.data, a.a.data) < 1e-6 && relDiff(b.b.data, a.b.data) < 1e-6,
          `${side} ${sequential} block 0 ${n}`,
        );
        const c = dense.factors.get(linearPrefix(1, n))!, d = seq.factors.get(linearPrefix(1, n))!;
        assert.ok(relDiff(d.a.data, c.a.data) > 1e-4, `${side} ${sequential} block 1 ${n} should differ`);
      }
    }
    await assert.rejects(
      fwsvdFactors(m, windows, { ranks, side: "input", sequential: "inputs" }),
      /sequential "inputs" applies to side "kfac" only, got side "input"/,
    );
    await assert.rejects(
      fwsvdFactors(m, windows, { ranks, side: "input", sequential: "inputs" }),
      /sequential "inputs" applies to side "kfac" only, got side "input"/,
    );
  } finally {
    await m.close();
  }
});
