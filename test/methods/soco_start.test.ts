// SoCo's start from SVD-LLM's per-matrix allocation, its held-out guard, and its bases in float32 spilled to a
// temporary file: the start is per-matrix-rank SVD-LLM's model exactly, the guard keeps the better model on
// the held-out windows, and spilled bases train exactly as in-memory ones.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { readdirSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { compressSoco, type SocoOptions } from "../../src/pipeline/soco.ts";
import { openBasisStore } from "../../src/pipeline/soco_bases.ts";
import { holdoutSplit } from "../../src/pipeline/soco_pass.ts";
import { compress } from "../../src/pipeline/compress.ts";
import { loadModel } from "../../src/model/load.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { calibrationWindows } from "../../src/calib/windows.ts";
import { addScoreGradient, spectralWeight, svdBasis, whitenedBasis } from "../../src/methods/soco.ts";
import { compressSvdLlm } from "../../src/methods/svdllm.ts";
import { gramOf, product, randomActivations, randomWeight, relDiff } from "./_synthetic.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const MODEL = join(ROOT, "models/stories260K/stories260K.gguf");
const TEXT = join(ROOT, "data/tinystories-valid.part1.txt");

const basesFolders = () => readdirSync(tmpdir()).filter((d) => d.startsWith("soco-bases-"));

async function calibIds(n = 4000): Promise<number[]> {
  const m = await loadModel(MODEL);
  const ids = m.tokenizer.encode(await readFile(TEXT, "utf8"), { bos: true });
  await m.close();
  return Array.from(ids.slice(0, n));
}

test("scores 1 on the top k, 0 elsewhere, in the whitened basis are SVD-LLM's rank-k truncation", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 2, max: 16 }),
      fc.integer({ min: 2, max: 16 }),
      fc.nat(1000),
      (m, n, seed) => {
        const w = randomWeight(m, n, seed);
        const g = gramOf(randomActivations(4 * n + 8, n, seed + 1));
        const b = whitenedBasis("w", w, { gram: g });
        const k = 1 + (seed % Math.min(m, n));
        const s = Float64Array.from({ length: b.rank }, (_, i) => (i < k ? 1 : 0));
        const f = compressSvdLlm(w, { gram: g }, k);
        assert.ok(relDiff(spectralWeight(b, s), product(f.a, f.b)) < 1e-4, `${m}×${n} k ${k}`);
      },
    ),
    { numRuns: 30 },
  );
});

test("float32 bases: the score gradient equals the float64 one to float32 precision", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 12 }),
      fc.integer({ min: 1, max: 12 }),
      fc.nat(1000),
      (m, n, seed) => {
        const w = randomWeight(m, n, seed);
        const b = svdBasis("w", w);
        const x = randomActivations(9, n, seed + 1), dy = randomActivations(9, m, seed + 2);
        const g = new Float64Array(b.rank);
        addScoreGradient(b, x, dy, g);
        // float64 reference from the same (float32) basis values: Σ_t (x·Cᵀ)_{t,i}·(dy·U)_{t,i}
        const r = b.rank;
        for (let i = 0; i < r; i++) {
          let ref = 0, mag = 0;
          for (let t = 0; t < 9; t++) {
            let p = 0, q = 0;
            for (let j = 0; j < n; j++) p += x.data[t * n + j] * b.c.data[i * n + j];
            for (let o = 0; o < m; o++) q += dy.data[t * m + o] * b.u.data[o * r + i];
            ref += p * q;
            mag += Math.abs(p * q);
          }
          assert.ok(
            Math.abs(g[i] - ref) <= 1e-5 * mag + 1e-12,
            `${m}×${n} component ${i}: ${g[i]} vs ${ref}`,
          );
        }
      },
    ),
    { numRuns: 40 },
  );
});

test("the spilled store returns the bases byte for byte, leaves no file behind and refuses use after close", async () => {
  const spill = await openBasisStore({ spill: true });
  const mem = await openBasisStore({ spill: false });
  assert.equal(spill.spilled, true);
  const blocks = [0, 1, 2].map((
    i,
  ) => [svdBasis(`b${i}.a`, randomWeight(5, 7, i)), svdBasis(`b${i}.b`, randomWeight(8, 3, i))]);
  for (const [i, bs] of blocks.entries()) {
    await spill.put(i, bs);
    await mem.put(i, bs);
  }
  assert.equal(spill.bytes(), mem.bytes());
  for (const i of [2, 0, 1]) assert.deepEqual(spill.get(i), mem.get(i));
  await spill.close();
  assert.throws(() => spill.get(0), /basis store is closed/);
  assert.throws(() => mem.get(5), /no bases stored for block 5/);
});

test("soco from the allocation: step 0 is per-matrix-rank SVD-LLM's model exactly (same ranks, same loss)", async () => {
  const ids = await calibIds();
  const dir = await mkdtemp(join(tmpdir(), "soco-start-"));
  try {
    const calibration = { ids, samples: 4, seqlen: 64, seed: 5 };
    const r = await compressSoco(MODEL, join(dir, "soco"), {
      ratio: { removed: 0.4 },
      calibration,
      steps: 3,
      batch: 4, // step 0 sees every window
      klWeight: 0,
      holdout: 0,
    });
    assert.equal(r.settings.start, "allocation");
    // SoCo's budget is the uniform ranks' parameter count (a little under 60 % of the linears: the ranks are
    // floored); per-matrix-rank SVD-LLM at exactly that budget:
    const svd = await compress(MODEL, join(dir, "svdllm"), {
      method: "svdllm",
      ratio: { kept: r.budget.target / r.params.linears.before },
      calibration,
      allocation: "global",
      sequential: false,
    });
    const ranks = Object.fromEntries(svd.layers.map((l) => [l.name, l.rank]));
    assert.deepEqual(r.startRanks, ranks);
    const joined = new Int32Array(calibrationWindows(ids, calibration).flatMap((w) => [...w]));
    const m = await loadModel(join(dir, "svdllm"));
    const nll = Math.log((await perplexity(m, joined, { window: 64 })).ppl);
    await m.close();
    assert.ok(Math.abs(r.history[0].loss - nll) < 1e-4, `step 0 ${r.history[0].loss} vs svdllm ${nll}`);
    assert.ok(r.budget.kept <= r.budget.target);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("the held-out guard keeps the model with the lower held-out NLL, and the folder is that model", async () => {
  const ids = await calibIds();
  const dir = await mkdtemp(join(tmpdir(), "soco-guard-"));
  try {
    const calibration = { ids, samples: 8, seqlen: 64, seed: 2 };
    // holdout 0.25 of 8 windows: two windows of 64 from the ids' last quarter, which training never sees
    const { calib, validation: held } = holdoutSplit(ids, 0.25, 8, 64);
    assert.equal(held.length, 2);
    assert.equal(held[1].at(-1), ids.at(-1));
    assert.ok(calib.length <= ids.length - 2 * 64);
    const joined = new Int32Array(held.flatMap((w) => [...w]));
    for (const lr of [0.02, 1]) {
      const out = join(dir, `lr${lr}`);
      const r = await compressSoco(MODEL, out, {
        ratio: { removed: 0.4 },
        calibration,
        steps: 6,
        lr,
        batch: 2,
        holdout: 0.25,
      });
      const v = r.validation!;
      assert.equal(v.windows, 2);
      assert.equal(v.kept, v.trained <= v.start! ? "trained" : "start", JSON.stringify(v));
      if (v.kept === "start") assert.deepEqual(r.ranks, r.startRanks);
      const m = await loadModel(out);
      const nll = Math.log((await perplexity(m, joined, { window: 64 })).ppl);
      await m.close();
      assert.ok(
        Math.abs(nll - Math.min(v.start!, v.trained)) < 1e-4,
        `lr ${lr}: folder ${nll}, ${JSON.stringify(v)}`,
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("bases spilled to a file train and write exactly as bases in memory", async () => {
  const ids = await calibIds(2000);
  const dir = await mkdtemp(join(tmpdir(), "soco-spill-"));
  try {
    const opts: SocoOptions = {
      ratio: { removed: 0.3 },
      calibration: { ids, samples: 4, seqlen: 32, seed: 1 },
      steps: 4,
      batch: 2,
    };
    const before = basesFolders();
    const a = await compressSoco(MODEL, join(dir, "file"), { ...opts, spill: true });
    const b = await compressSoco(MODEL, join(dir, "mem"), { ...opts, spill: false });
    assert.ok(a.spilledBytes > 0);
    assert.equal(b.spilledBytes, 0);
    assert.deepEqual(a.history, b.history);
    assert.deepEqual(a.spectra, b.spectra);
    const [fa, fb] = await Promise.all([
      readFile(join(dir, "file", "model.safetensors")),
      readFile(join(dir, "mem", "model.safetensors")),
    ]);
    assert.ok(fa.equals(fb));
    // The temporary file is unlinked as soon as it is opened: none is left in the system's folder.
    assert.deepEqual(basesFolders().filter((d) => !before.includes(d)), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
