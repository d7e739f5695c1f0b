import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { compress, compressModel, type CompressReport } from "../../src/pipeline/compress.ts";
import { merge } from "../../src/pipeline/merge.ts";
import { formatInspectReport, inspectModel } from "../../src/cli/report.ts";
import { loadModel } from "../../src/model/load.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { NumericError, OptionError, ShapeError } from "../../src/errors.ts";
import { openModelWeights } from "../../src/io/sharded.ts";
import { specFromHfConfig } from "../../src/model/spec.ts";
import {
  folderPpl,
  HAS_SHARED,
  listing,
  openFolder,
  openModelInput,
  SHARED,
  STORIES,
  storiesText,
  syntheticFolder,
  tempDir,
} from "./_helpers.ts";

// stories260K at 20 % removed, each method calibrated on the first half of the TinyStories text and evaluated
// on the second half (windows of 512, the model's context).
const SLOW = { timeout: 600_000 };

test(
  "stories260K at 20 % removed: ppl(svd) > ppl(asvd) > ppl(svdllm) > dense, and the folders reload",
  SLOW,
  async () => {
    const m = await loadModel(STORIES);
    const ids = m.tokenizer.encode(await storiesText(), { bos: true });
    await m.close();
    const half = Math.floor(ids.length / 2);
    const calib = ids.slice(0, half), evalIds = ids.slice(half);
    const dm = await loadModel(STORIES);
    const dense = (await perplexity(dm, evalIds, { window: 512 })).ppl;
    await dm.close();
    const dir = await tempDir();
    try {
      const ppl: Record<string, number> = {};
      const reports: Record<string, CompressReport> = {};
      for (const method of ["svd", "asvd", "svdllm"] as const) {
        const out = join(dir, method);
        reports[method] = await compress(STORIES, out, {
          method,
          ratio: { removed: 0.2 },
          calibration: { ids: calib, samples: 16, seqlen: 256, seed: 1 },
        });
        ppl[method] = await folderPpl(out, evalIds, 512);
      }
      assert.ok(ppl.svd > ppl.asvd, `svd ${ppl.svd} vs asvd ${ppl.asvd}`);
      assert.ok(ppl.asvd > ppl.svdllm, `asvd ${ppl.asvd} vs svdllm ${ppl.svdllm}`);
      assert.ok(ppl.svdllm > dense, `svdllm ${ppl.svdllm} vs dense ${dense}`);
      // Parameter accounting: 35 linears, achieved ratio close to (and at least) 0.2 over linears.
      const r = reports.svdllm;
      assert.equal(r.layers.length, 35);
      assert.ok(
        r.params.linears.removed >= 0.2 && r.params.linears.removed < 0.22,
        String(r.params.linears.removed),
      );
      assert.ok(r.params.model.removed < r.params.linears.removed);
      for (const l of r.layers) assert.ok(l.relativeLoss! >= 0 && l.relativeLoss! < 1);
      // Phase times: disjoint parts of the wall time; each layer's factoring lies inside the factor phase.
      for (const [method, rep] of Object.entries(reports)) {
        const ph = Object.values(rep.phases);
        assert.ok(ph.every((t) => t >= 0), `${method}: ${JSON.stringify(rep.phases)}`);
        assert.ok(ph.reduce((a, b) => a + b, 0) <= rep.seconds, `${method}: phases exceed the wall time`);
        const layerSeconds = rep.layers.reduce((t, l) => t + l.seconds, 0);
        assert.ok(
          rep.phases.factor >= layerSeconds,
          `${method}: factor ${rep.phases.factor} < ${layerSeconds}`,
        );
        assert.ok(rep.phases.write > 0 && rep.phases.read > 0, method);
        // svd observes nothing; the other two run a calibration pass per block.
        assert.equal(
          rep.phases.calibrate > 0,
          method !== "svd",
          `${method} calibrate ${rep.phases.calibrate}`,
        );
        assert.equal(rep.phases.sensitivity, 0);
      }
      // The folder: factor pairs with the recorded ranks, config extension, GGUF vocabulary kept.
      const f = await openFolder(join(dir, "svdllm"));
      try {
        const ext = f.config.svd_llm;
        assert.equal(ext.method, "svdllm");
        assert.deepEqual(ext.ratio, { convention: "removed", value: 0.2 });
        assert.equal(ext.ranks["model.layers.0.self_attn.q_proj"], 25);
        assert.equal(ext.ranks["model.layers.4.mlp.down_proj"], 37);
        assert.deepEqual(f.reader.info("model.layers.0.mlp.gate_proj.svd_a").shape, [172, 37]);
        assert.deepEqual(f.reader.info("model.layers.0.mlp.gate_proj.svd_b").shape, [37, 64]);
        assert.equal(f.reader.has("model.layers.0.mlp.gate_proj.weight"), false);
        assert.ok(f.reader.has("model.embed_tokens.weight"));
      } finally {
        await f.reader.close();
      }
      assert.ok(existsSync(join(dir, "svdllm", "tokenizer_gguf.json")));
      // inspect: the spectra of the stored A·B (rank ≤ k: σ_k+1 negligible) and the losses compress recorded.
      const ins = await inspectModel(join(dir, "svdllm"));
      assert.equal(ins.linears.length, 35);
      for (const l of ins.linears) {
        const rep = r.layers.find((x) => x.name === `model.layers.${l.name}`)!;
        assert.equal(l.rank, rep.rank);
        assert.equal(l.recorded?.relative_loss, rep.relativeLoss, l.name);
        assert.equal(l.recorded?.energy_kept, rep.energyKept, l.name);
        if (l.rank! < l.sigma.length) assert.ok(l.sigma[l.rank!] < 1e-5 * l.sigma[0], `${l.name} σ_k+1`);
      }
      const table = formatInspectReport(ins);
      assert.match(table, /rel\. loss/);
      assert.match(table, /0\.self_attn\.q_proj\s+64×64\s+25\s.*\d\.\d\de-\d+\s*$/m);
      assert.doesNotMatch(formatInspectReport(await inspectModel(join(dir, "svd"))), /rel\. loss/);
      // Merging the factors back gives a dense folder computing the same function.
      await merge(join(dir, "svdllm"), join(dir, "merged"));
      const merged = await folderPpl(join(dir, "merged"), evalIds, 512);
      assert.ok(Math.abs(merged - ppl.svdllm) / ppl.svdllm < 1e-3, `merged ${merged} vs ${ppl.svdllm}`);
      const mr = await openModelWeights(join(dir, "merged"));
      assert.equal(mr.has("model.layers.0.mlp.gate_proj.weight"), true);
      await mr.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);

test("a failed or aborted compression leaves nothing under the destination name", SLOW, async () => {
  const dir = await tempDir();
  try {
    const out = join(dir, "out");
    await assert.rejects(
      compress(STORIES, out, {
        method: "svd",
        ratio: { removed: 0.4 },
        onProgress: (e) => {
          if (e.stage === "write" && e.block === 2) throw new Error("user abort");
        },
      }),
      /user abort/,
    );
    assert.deepEqual(await listing(dir), []);
    // NaN in a weight: NumericError naming the layer, nothing written.
    const src = await syntheticFolder(dir, "nan-weight", {
      tensor: "model.layers.1.mlp.up_proj.weight",
      index: 5,
    });
    const model = await openModelInput(src);
    await assert.rejects(
      compressModel(model, join(dir, "o1"), { method: "svd", ratio: { removed: 0.2 }, force: true }, {
        inputPath: src,
      }),
      (e: Error) => e instanceof NumericError && /non-finite/.test(e.message),
    );
    assert.deepEqual(await listing(dir), ["nan-weight"]);
    await model.reader.close();
    // NaN in a norm weight: refused where it is read, naming the tensor (not the linear it would poison).
    const src2 = await syntheticFolder(dir, "nan-act", {
      tensor: "model.layers.0.post_attention_layernorm.weight",
      index: 3,
    });
    const model2 = await openModelInput(src2);
    const ids = Array.from({ length: 400 }, (_, i) => (i * 7) % 32);
    await assert.rejects(
      compressModel(model2, join(dir, "o2"), {
        method: "svdllm",
        ratio: { removed: 0.2 },
        force: true,
        calibration: { ids, samples: 4, seqlen: 32 },
      }, { inputPath: src2 }),
      (e: Error) =>
        e instanceof NumericError && /model\.layers\.0\.post_attention_layernorm\.weight/.test(e.message),
    );
    assert.deepEqual(await listing(dir), ["nan-act", "nan-weight"]);
    await model2.reader.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("bad options are refused before any work, naming the problem", SLOW, async () => {
  const dir = await tempDir();
  try {
    const out = join(dir, "out");
    await assert.rejects(compress(STORIES, out, { method: "svd", ratio: { removed: 1.2 } }), OptionError);
    await assert.rejects(compress(STORIES, out, { method: "svd", ratio: { kept: 0 } }), OptionError);
    await assert.rejects(
      compress(STORIES, out, { method: "svdllm", ratio: { removed: 0.2 } }),
      /needs calibration/,
    );
    await assert.rejects(
      compress(STORIES, out, {
        method: "svdllm",
        ratio: { removed: 0.2 },
        calibration: { ids: Array.from({ length: 100 }, () => 5), seqlen: 256 },
      }),
      /100 tokens, shorter than one window of 256/,
    );
    await assert.rejects(
      compress(STORIES, out, { method: "asvd", ratio: { removed: 0.2 }, update: true }),
      /svdllm/,
    );
    // A ratio that leaves rank 0 / no saving.
    await assert.rejects(
      compress(STORIES, out, { method: "svd", ratio: { removed: 0.99 } }),
      /nothing would be left/,
    );
    assert.deepEqual(await listing(dir), []);
    // Existing output without overwrite; output onto the input's folder.
    await (await import("node:fs/promises")).mkdir(out);
    await assert.rejects(
      compress(STORIES, out, { method: "svd", ratio: { removed: 0.2 } }),
      /already exists/,
    );
    const src = await syntheticFolder(dir, "synthetic");
    const model = await openModelInput(src, "s");
    await assert.rejects(
      compressModel(model, src, { method: "svd", ratio: { removed: 0.2 }, force: true, overwrite: true }, {
        inputPath: src,
      }),
      /would overwrite the input/,
    );
    assert.ok(existsSync(join(src, "model.safetensors")));
    await model.reader.close();
    // Weights whose shapes disagree with the config: a ShapeError naming the tensor, nothing written.
    const cfg = JSON.parse(await readFile(join(src, "config.json"), "utf8"));
    const bad = {
      spec: specFromHfConfig({ ...cfg, intermediate_size: 20 }),
      reader: await openModelWeights(src),
      name: "s",
    };
    await assert.rejects(
      compressModel(bad, join(dir, "o3"), { method: "svd", ratio: { removed: 0.2 }, force: true }),
      (e: Error) => e instanceof ShapeError && /mlp\.gate_proj/.test(e.message),
    );
    await bad.reader.close();
    assert.deepEqual(await listing(dir), ["out", "synthetic"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("tinylm-brown: SVD-LLM with update compresses, reloads with loadModel and evaluates", {
  ...SLOW,
  skip: !HAS_SHARED && "needs ../shared (tinylm-brown)",
}, async () => {
  const src = join(SHARED, "models/tinylm-brown");
  const calibText = (await readFile(join(SHARED, "data/brown-calib.txt"), "utf8")).slice(0, 60000);
  const dir = await tempDir();
  try {
    const out = join(dir, "brown");
    const events: string[] = [];
    const rep = await compress(src, out, {
      method: "svdllm",
      ratio: { removed: 0.2 },
      update: true,
      calibration: { text: calibText, samples: 8, seqlen: 128 },
      onProgress: (e) => events.push(e.stage),
    });
    assert.ok(events.includes("compress") && events.at(-1) === "done");
    assert.equal(rep.layers.length, 42);
    assert.ok(rep.layers.every((l) => l.updateShift !== undefined));
    assert.ok(rep.peakRssBytes > 0);
    const m = await loadModel(out);
    try {
      const ids = m.tokenizer.encode(
        (await readFile(join(SHARED, "data/brown-valid.txt"), "utf8")).slice(0, 6000),
        { bos: true },
      );
      const r = await perplexity(m, ids, { window: 256 });
      const d = await loadModel(src);
      const dense = (await perplexity(d, ids, { window: 256 })).ppl;
      await d.close();
      assert.ok(r.ppl > dense && r.ppl < dense * 1.6, `compressed ${r.ppl} vs dense ${dense}`);
      assert.equal(m.config.num_hidden_layers, 6);
    } finally {
      await m.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
