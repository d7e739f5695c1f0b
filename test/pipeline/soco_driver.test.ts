// method "soco" through the driver: every refusal comes before SoCo's pass (no "soco" progress event, nothing
// written); a run writes through the one output side and records its training in config.json.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { compress, type CompressOptions } from "../../src/pipeline/compress.ts";
import { loadModel } from "../../src/model/load.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { compressSoco } from "../../src/pipeline/soco.ts";
import { DEFAULT_HOLDOUT, holdoutSplit } from "../../src/pipeline/soco_pass.ts";
import { STORIES, storiesText, tempDir } from "./_helpers.ts";

test("compress soco: refusals come before its pass, and nothing is written", async () => {
  const dir = await tempDir();
  try {
    const text = (await storiesText()).slice(0, 20_000);
    const stages: string[] = [];
    const base: CompressOptions = {
      method: "soco",
      ratio: { removed: 0.2 },
      calibration: { text, samples: 2, seqlen: 64 },
      soco: { steps: 3 },
      onProgress: (e) => stages.push(e.stage),
    };
    const taken = join(dir, "taken");
    await mkdir(taken);
    const cases: [CompressOptions, string, RegExp][] = [
      [{ ...base, calibration: undefined }, "out", /method "soco" needs calibration data/],
      [{ ...base, soco: { basis: "eigen" as never } }, "out", /soco: basis must be "svd" or "whitened"/],
      [{ ...base, soco: { steps: 2 } }, "out", /soco: steps must be a whole number from 3/],
      [{ ...base, soco: { lr: 0 } }, "out", /soco: learning rate must be/],
      [{ ...base, soco: { nllWeight: 0, klWeight: 0 } }, "out", /nllWeight 0 needs a klWeight > 0/],
      [{ ...base, method: "svdllm" }, "out", /soco options apply to method "soco" only/],
      [{ ...base, linears: ["mlp.up_proj"] }, "out", /chooses every linear's rank itself/],
      [{ ...base, ratio: { removed: 0 } }, "out", /removed/],
      [base, "taken", /exists/],
    ];
    for (const [opts, out, re] of cases) {
      await assert.rejects(compress(STORIES, join(dir, out), opts), re);
      assert.deepEqual(stages.filter((s) => s === "soco"), [], `no SoCo pass before: ${re}`);
    }
    assert.equal(existsSync(join(dir, "out")), false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("compress soco: the folder loads at the budget; its ranks are per matrix; config records the training", async () => {
  const dir = await tempDir();
  try {
    const text = await storiesText();
    const out = join(dir, "soco");
    const r = await compress(STORIES, out, {
      method: "soco",
      ratio: { removed: 0.3 },
      calibration: { text, samples: 4, seqlen: 64 },
      soco: { steps: 9, basis: "svd" },
    });
    assert.equal(r.allocation, "learned");
    assert.ok(r.soco && r.soco.budget.kept <= r.soco.budget.target, JSON.stringify(r.soco?.budget));
    assert.ok(r.params.linears.removed >= 0.3 - 1e-9, `${r.params.linears.removed}`);
    assert.ok(r.phases.soco > 0);
    const config = JSON.parse(await readFile(join(out, "config.json"), "utf8")).svd_llm;
    assert.deepEqual([config.method, config.allocation, config.soco.basis, config.soco.steps], [
      "soco",
      "learned",
      "svd",
      9,
    ]);
    const m = await loadModel(out);
    try {
      for (const [name, k] of Object.entries(config.ranks as Record<string, number>)) {
        assert.equal(m.reader.info(`${name}.svd_a`).shape[1], k, name);
        assert.equal(r.soco!.ranks[name], k);
      }
      const ids = m.tokenizer.encode(text.slice(0, 4000), { bos: true });
      const ppl = (await perplexity(m, ids, { window: 256 })).ppl;
      assert.ok(Number.isFinite(ppl) && ppl > 1, `${ppl}`);
    } finally {
      await m.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("compress soco: the guard holds out the calibration text's last eighth, the same from text, ids or compressSoco", async () => {
  const dir = await tempDir();
  try {
    const text = (await storiesText()).slice(0, 12_000);
    const m = await loadModel(STORIES);
    const ids = Int32Array.from(m.tokenizer.encode(text, { bos: true }));
    await m.close();
    const calib = { samples: 4, seqlen: 64, seed: 3 };
    const want = holdoutSplit(ids, DEFAULT_HOLDOUT, calib.samples, calib.seqlen);
    assert.ok(want.validation.length >= 1);
    const write = async (name: string, c: CompressOptions["calibration"]) => {
      const r = await compress(STORIES, join(dir, name), { method: "soco", ratio, calibration: c, soco });
      // training saw only the text before the cut; the guard measured the windows after it
      assert.equal(r.calibration!.tokens, want.calib.length);
      assert.equal(r.soco!.validation!.windows, want.validation.length);
      return await readFile(join(dir, name, "model.safetensors"));
    };
    const ratio = { removed: 0.3 }, soco = { steps: 3 };
    const fromText = await write("text", { text, ...calib }), fromIds = await write("ids", { ids, ...calib });
    const r = await compressSoco(STORIES, join(dir, "soco"), {
      ratio,
      calibration: { ids, ...calib },
      ...soco,
    });
    assert.equal(r.validation!.windows, want.validation.length);
    const fromSoco = await readFile(join(dir, "soco", "model.safetensors"));
    assert.ok(fromIds.equals(fromText), "text and its ids give the same model");
    assert.ok(fromSoco.equals(fromIds), "compressSoco and compress give the same model");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
