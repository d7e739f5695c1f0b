/**
 * The FWSVD pipeline: the written folder loads and computes what the in-memory model computes, records what
 * was done, and refuses bad destinations and options before the Fisher pass; a GGUF input is written as a folder; on stories260K, FWSVD (Fisher
 * per input feature) beats plain SVD on held-out text.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadModel } from "../../src/model/load.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { calibrationWindows } from "../../src/calib/windows.ts";
import { compress } from "../../src/pipeline/compress.ts";
import { factoredReader, fisherInformation, fwsvdModel } from "../../src/pipeline/fwsvd.ts";
import { compressSvd } from "../../src/methods/svd.ts";
import { rankFor } from "../../src/methods/ratio.ts";
import { BLOCK_FIELD, loadBlock } from "../../src/model/llama.ts";
import { LINEAR_NAMES, linearPrefix } from "../../src/model/names.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";
import { OptionError } from "../../src/errors.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TINY = join(ROOT, "test/fixtures/models/llama-gqa-tiny");
const STORIES = join(ROOT, "models/stories260K/stories260K.gguf");

const ids = Int32Array.from({ length: 600 }, (_, i) => (i * 37 + (i >> 3)) % 101);

test("fwsvd pipeline: compress() writes a folder that loads and equals the in-memory model; config records the run", async () => {
  const dir = await mkdtemp(join(tmpdir(), "fwsvd-"));
  try {
    const m = await loadModel(TINY);
    const out = join(dir, "out");
    const calibration = { ids, samples: 4, seqlen: 32 };
    const r = await compress(TINY, out, { method: "fwsvd", ratio: { removed: 0.4 }, calibration });
    assert.equal(r.fisher?.batches, 4);
    const c = await fwsvdModel(m, { ratio: { removed: 0.4 }, calibration });
    const loaded = await loadModel(out);
    const evalIds = ids.subarray(0, 128);
    const a = await perplexity(c, evalIds, { window: 64 }),
      b = await perplexity(loaded, evalIds, { window: 64 });
    assert.ok(Number.isFinite(a.ppl) && Math.abs(a.ppl - b.ppl) < 1e-9 * a.ppl, `${a.ppl} vs ${b.ppl}`);
    const dense = await perplexity(m, evalIds, { window: 64 });
    assert.notEqual(a.ppl, dense.ppl);
    const config = JSON.parse(await readFile(join(out, "config.json"), "utf8"));
    assert.equal(config.svd_llm.method, "fwsvd");
    assert.equal(config.svd_llm.fisher.side, "kfac");
    assert.equal(config.svd_llm.fisher.batches, 4);
    assert.equal(Object.keys(config.svd_llm.ranks).length, 2 * 7);
    assert.ok(Math.abs(config.svd_llm.achieved.linears_removed - 0.4) < 0.05);
    assert.ok(loaded.reader.has("model.layers.0.mlp.down_proj.svd_a"));
    assert.ok(!loaded.reader.has("model.layers.0.mlp.down_proj.weight"));
    await stat(join(out, "tokenizer.json"));
    // nothing overwritten without overwrite
    await assert.rejects(
      compress(TINY, out, { method: "fwsvd", ratio: { removed: 0.4 }, calibration }),
      /already exists/,
    );
    await loaded.close();
    await m.close();
    // a GGUF input (interleaved q/k rows) is written as a Hugging Face folder computing the same thing
    const g = await loadModel(STORIES);
    try {
      const gout = join(dir, "g");
      const gcal = { ids: Int32Array.from(ids, (v) => v % 512), samples: 2, seqlen: 64 };
      await compress(STORIES, gout, { method: "fwsvd", ratio: { removed: 0.2 }, calibration: gcal });
      const gc = await fwsvdModel(g, { ratio: { removed: 0.2 }, calibration: gcal });
      const gl = await loadModel(gout);
      const gids = Int32Array.from(ids.subarray(0, 200), (v) => v % 512);
      const p1 = (await perplexity(gc, gids, { window: 100 })).ppl,
        p2 = (await perplexity(gl, gids, { window: 100 })).ppl;
      assert.ok(Math.abs(p1 - p2) < 1e-4 * p1, `${p1} vs ${p2}`);
      assert.equal(gl.spec.ropeStyle, "halves");
      await stat(join(gout, "tokenizer_gguf.json"));
      await gl.close();
    } finally {
      await g.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("fwsvd pipeline: bad options are refused before the Fisher pass", async () => {
  const m = await loadModel(TINY);
  const calibration = { ids, samples: 2, seqlen: 32 };
  await assert.rejects(fwsvdModel(m, { ratio: { removed: 1.2 }, calibration }), OptionError);
  await assert.rejects(
    fwsvdModel(m, { ratio: { removed: 0.2 }, calibration, side: "rows" as never }),
    /side must be/,
  );
  await assert.rejects(
    fwsvdModel(m, { ratio: { removed: 0.2 }, calibration: { ids, seqlen: 1000 } }),
    /exceeds/,
  );
  await assert.rejects(
    fisherInformation(m, calibrationWindows(ids, { samples: 2, seqlen: 8 }), { batchWindows: 0 }),
    /batchWindows/,
  );
  await m.close();
});

test("fwsvd pipeline: stories260K, FWSVD beats plain SVD on held-out text at 20 % removed", async (t) => {
  let m;
  try {
    m = await loadModel(STORIES);
  } catch {
    t.skip("stories260K absent");
    return;
  }
  try {
    const text = await readFile(join(ROOT, "data/tinystories-valid.part1.txt"), "utf8");
    const all = m.tokenizer.encode(text, { bos: true }), half = Math.floor(all.length / 2);
    const evalIds = all.slice(half);
    const c = await fwsvdModel(m, {
      ratio: { removed: 0.2 },
      calibration: { ids: all.slice(0, half), samples: 8, seqlen: 256 },
    });
    const f = new Map<string, { a: Matrix; b: Matrix }>();
    for (let i = 0; i < m.spec.numLayers; i++) {
      const b = await loadBlock(m.reader, m.spec, i);
      for (const n of LINEAR_NAMES) {
        const lin = b[BLOCK_FIELD[n]];
        assert.equal(lin.kind, "dense");
        if (lin.kind !== "dense") continue;
        const s = compressSvd(lin.weight, rankFor(lin.weight.rows, lin.weight.cols, { removed: 0.2 }));
        f.set(linearPrefix(i, n), { a: s.a, b: s.b });
      }
    }
    const fw = (await perplexity(c, evalIds, { window: 512 })).ppl;
    const svd =
      (await perplexity({ spec: m.spec, reader: factoredReader(m.reader, f) }, evalIds, { window: 512 })).ppl;
    assert.ok(fw < 0.8 * svd, `fwsvd ${fw} vs svd ${svd}`);
  } finally {
    await m.close();
  }
});
