import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { loadModel } from "../../src/model/load.ts";
import { calibrationWindows } from "../../src/calib/windows.ts";
import { sensitivitySweep } from "../../src/pipeline/sensitivity.ts";
import { compress } from "../../src/pipeline/compress.ts";
import { folderPpl, openFolder, STORIES, storiesText, tempDir } from "./_helpers.ts";
import { AbsMeanObserver } from "../../src/calib/abs_mean.ts";
import { asvdFactors, asvdSpectrum } from "../../src/methods/asvd.ts";
import {
  BLOCK_FIELD,
  embed,
  forwardBlock,
  type Linear,
  type LlamaBlock,
  loadBlock,
  loadHead,
  tokenNll,
} from "../../src/model/llama.ts";
import { type LinearName, linearPrefix } from "../../src/model/names.ts";

test("ASVD sensitivity sweep on stories260K: cached, resumable, and used for allocation", {
  timeout: 600_000,
}, async () => {
  const m = await loadModel(STORIES);
  const dir = await tempDir();
  try {
    const ids = m.tokenizer.encode(await storiesText(), { bos: true });
    const windows = calibrationWindows(ids, { samples: 3, seqlen: 64, seed: 2 });
    const cacheFile = join(dir, "sweep.json");
    const ratios = [0.4, 0.8];
    const first = await sensitivitySweep(m, windows, { ratios, cacheFile });
    assert.equal(first.fromCache, false);
    assert.equal(Object.keys(first.table).length, 35);
    for (const row of Object.values(first.table)) {
      assert.deepEqual(Object.keys(row).sort(), ["0.4", "0.8"]);
      // compressing one layer harder never helps much: p = 0.4 is worse than the dense model
      assert.ok(row["0.4"] > first.densePpl * 0.98);
    }
    // Second run: straight from the cache.
    const again = await sensitivitySweep(m, windows, { ratios, cacheFile });
    assert.equal(again.fromCache, true);
    assert.deepEqual(again.table, first.table);
    // Interrupted run: drop the last blocks' entries, resume recomputes exactly them.
    const c = JSON.parse(await readFile(cacheFile, "utf8"));
    for (const k of Object.keys(c.table)) if (/layers\.[34]\./.test(k)) delete c.table[k];
    await writeFile(cacheFile, JSON.stringify(c));
    const progress: string[] = [];
    const resumed = await sensitivitySweep(m, windows, {
      ratios,
      cacheFile,
      onProgress: (e) => progress.push(e.layer!),
    });
    assert.equal(resumed.fromCache, false);
    assert.equal(progress.length, 14);
    assert.ok(progress.every((l) => /layers\.[34]\./.test(l)));
    for (const [k, row] of Object.entries(first.table)) {
      for (const p of ratios) {
        assert.ok(Math.abs(resumed.table[k][String(p)] - row[String(p)]) < 1e-9 * row[String(p)]);
      }
    }
    // Other settings: a different key, the cache is not reused.
    const other = await sensitivitySweep(m, windows.slice(0, 2), {
      ratios: [0.5],
      cacheFile: join(dir, "other.json"),
    });
    assert.notEqual(other.key, first.key);

    // compress() with the sweep: ranks vary per layer, the removal lands on the target within a rank step.
    const calibration = { ids, samples: 3, seqlen: 64, seed: 2 };
    const out = join(dir, "asvd");
    const rep = await compress(STORIES, out, {
      method: "asvd",
      ratio: { kept: 0.8 },
      allocation: "sweep",
      sensitivity: { cacheFile, ratios },
      calibration,
    });
    assert.equal(rep.sensitivity!.fromCache, true);
    landsOnTarget(rep, 0.2);
    const ranks = new Set(rep.layers.map((l) => l.rank));
    assert.ok(ranks.size > 1);
    const f = await openFolder(out);
    assert.equal(f.config.svd_llm.allocation, "sweep");
    await f.reader.close();
  } finally {
    await m.close();
    await rm(dir, { recursive: true, force: true });
  }
});

/** The block linears' removal is at least the target and less than one rank step (m+n of a linear) above it. */
function landsOnTarget(
  rep: { params: { linears: { before: number; removed: number } }; layers: { rows: number; cols: number }[] },
  target: number,
): void {
  const { before, removed } = rep.params.linears;
  const step = Math.max(...rep.layers.map((l) => l.rows + l.cols)) / before;
  assert.ok(removed >= target - 1e-12 && removed < target + step, `removed ${removed}, target ${target}`);
}

test("allocations on stories260K land on the target; fast and sweep beat uniform ranks on held-out text", {
  timeout: 600_000,
}, async () => {
  const m = await loadModel(STORIES);
  const dir = await tempDir();
  try {
    const ids = m.tokenizer.encode(await storiesText(), { bos: true });
    const half = Math.floor(ids.length / 2);
    const calibration = { ids: ids.slice(0, half), samples: 8, seqlen: 128, seed: 0 };
    const ppl: Record<string, number> = {};
    const cases = [["asvd", "uniform"], ["asvd", "sensitivity"], ["asvd", "sweep"], [
      "svdllm",
      "global",
    ]] as const;
    for (const [method, allocation] of cases) {
      const out = join(dir, `${method}-${allocation}`);
      const rep = await compress(STORIES, out, {
        method,
        ratio: { removed: 0.3 },
        allocation,
        calibration,
        sensitivity: { ratios: [0.4, 0.6, 0.8] },
      });
      if (allocation !== "uniform") landsOnTarget(rep, 0.3);
      assert.equal(rep.allocation, allocation);
      ppl[`${method}-${allocation}`] = await folderPpl(out, ids.slice(half), 512);
    }
    // Both per-linear allocations beat uniform ranks by far; the fast one is no worse than the sweep.
    assert.ok(ppl["asvd-sweep"] < ppl["asvd-uniform"] / 1.2, JSON.stringify(ppl));
    assert.ok(ppl["asvd-sensitivity"] <= ppl["asvd-sweep"], JSON.stringify(ppl));
    assert.ok(Number.isFinite(ppl["svdllm-global"]), JSON.stringify(ppl));
    // "sensitivity" and "sweep" are ASVD's: refused for other methods, before any work.
    await assert.rejects(
      compress(STORIES, join(dir, "x"), {
        method: "svdllm",
        ratio: { removed: 0.3 },
        allocation: "sweep",
        calibration,
      }),
      /allocation "sweep" applies to method "asvd" only/,
    );
  } finally {
    await m.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test("KV-cache mode compresses only k/v and reports the cache saved", { timeout: 600_000 }, async () => {
  const dir = await tempDir();
  try {
    const m = await loadModel(STORIES);
    const ids = m.tokenizer.encode(await storiesText(), { bos: true });
    await m.close();
    const rep = await compress(STORIES, join(dir, "kv"), {
      method: "asvd",
      ratio: { kept: 0.5 },
      kvCache: true,
      calibration: { ids, samples: 4, seqlen: 64 },
    });
    assert.equal(rep.layers.length, 10, JSON.stringify(rep.layers.map((l) => [l.name, l.rank])));
    assert.ok(rep.layers.every((l) => /k_proj|v_proj/.test(l.name) && l.rank === 16));
    // stories260K: 4 kv heads × 8 = 32 values for K and for V per block; rank 16 each halves the cache.
    assert.equal(rep.kvCache!.fullBytesPerToken, 5 * 64 * 2);
    assert.ok(Math.abs(rep.kvCache!.saved - 0.5) < 1e-12);
    const f = await openFolder(join(dir, "kv"));
    assert.ok(f.reader.has("model.layers.0.self_attn.q_proj.weight"));
    assert.deepEqual(f.reader.info("model.layers.0.self_attn.k_proj.svd_a").shape, [32, 16]);
    await f.reader.close();
    // The dense q rows went back to the Hugging Face RoPE layout with the factors: the model still works.
    const ppl = await folderPpl(join(dir, "kv"), ids, 512);
    assert.ok(ppl > 5.3885 && ppl < 3 * 5.3885, `kv-cache model ppl ${ppl}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("sensitivity sweep: each entry is the calibration ppl of the full model with that one layer replaced", {
  timeout: 600_000,
}, async () => {
  const m = await loadModel(STORIES);
  try {
    const { spec, reader } = m;
    const ids = m.tokenizer.encode(await storiesText(), { bos: true });
    const windows = calibrationWindows(ids, { samples: 3, seqlen: 48, seed: 5 });
    const layer = 2, ratios = [0.4, 0.7];
    const linears: LinearName[] = ["self_attn.k_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"];
    // batchSize 2: the sweep's window batches (2 + 1) differ from the brute force's single pass.
    const res = await sensitivitySweep(m, windows, { ratios, linears, batchSize: 2 });
    const head = await loadHead(reader, spec);
    const blocks: LlamaBlock[] = [];
    for (let i = 0; i < spec.numLayers; i++) blocks.push(await loadBlock(reader, spec, i));
    const layout = { batch: windows.length, seq: 48 };
    // Brute force: ASVD statistics of the layer's dense inputs, then a full forward with that layer replaced.
    let x = embed(head, spec, windows);
    for (let i = 0; i < layer; i++) x = forwardBlock(spec, blocks[i], x, layout);
    const obs = new Map<LinearName, AbsMeanObserver>();
    forwardBlock(spec, blocks[layer], x, layout, (l, input) => {
      if (!obs.has(l)) obs.set(l, new AbsMeanObserver(l, input.cols));
      obs.get(l)!.addBatch(input);
    });
    const targets = new Int32Array(windows.length * 48);
    windows.forEach((w, s) => {
      for (let t = 0; t < 48; t++) targets[s * 48 + t] = t + 1 < 48 ? w[t + 1] : -1;
    });
    for (const l of linears) {
      const lin = blocks[layer][BLOCK_FIELD[l]] as Linear & { kind: "dense" };
      const sp = asvdSpectrum(lin.weight, { absMean: obs.get(l)!.mean() });
      for (const p of ratios) {
        const mm = lin.weight.rows, n = lin.weight.cols, rank = Math.floor((mm * n * p) / (mm + n));
        const { a, b } = asvdFactors(sp, rank);
        let y = forwardBlock(
          spec,
          { ...blocks[layer], [BLOCK_FIELD[l]]: { kind: "lowrank", a, b } },
          x,
          layout,
        );
        for (let i = layer + 1; i < spec.numLayers; i++) y = forwardBlock(spec, blocks[i], y, layout);
        const nll = tokenNll(spec, head, y, targets);
        let sum = 0, cnt = 0;
        nll.forEach((v, i) => {
          if (targets[i] >= 0) (sum += v), cnt++;
        });
        const want = Math.exp(sum / cnt), got = res.table[linearPrefix(layer, l)][String(p)];
        assert.ok(Math.abs(got - want) < 1e-4 * want, `${l} at ${p}: sweep ${got}, full forward ${want}`);
      }
    }
  } finally {
    await m.close();
  }
});
