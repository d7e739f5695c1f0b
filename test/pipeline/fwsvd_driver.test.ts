// method "fwsvd" through the driver: the Fisher passes (sequential K-FAC by default) and the factors, written by the one output side;
// every refusal comes before the Fisher pass (no "fisher" progress event, nothing written).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { OptionError } from "../../src/errors.ts";
import { compress, type CompressOptions, type CompressProgress } from "../../src/pipeline/compress.ts";
import { folderPpl, STORIES, storiesText, tempDir } from "./_helpers.ts";
import { loadModel } from "../../src/model/load.ts";

test("compress fwsvd: refusals come before the Fisher pass, and nothing is written", async () => {
  const dir = await tempDir();
  try {
    const text = (await storiesText()).slice(0, 20_000);
    const stages: string[] = [];
    const base: CompressOptions = {
      method: "fwsvd",
      ratio: { removed: 0.2 },
      calibration: { text, samples: 2, seqlen: 64 },
      onProgress: (e: CompressProgress) => stages.push(e.stage),
    };
    const taken = join(dir, "taken");
    await mkdir(taken);
    const cases: [CompressOptions, string, RegExp][] = [
      [{ ...base, calibration: undefined }, "out", /method "fwsvd" needs calibration data/],
      [
        { ...base, fisherSide: "rows" as never },
        "out",
        /fisherSide must be "kfac", "both", "input" or "output", got "rows"/,
      ],
      [{ ...base, fisherBatch: 0 }, "out", /fisherBatch must be a positive integer/],
      [{ ...base, method: "svdllm", fisherSide: "input" }, "out", /apply to method "fwsvd" only/],
      [{ ...base, ratio: { removed: 1.5 } }, "out", /removed/],
      [{ ...base, calibration: { text, seqlen: 4096 } }, "out", /exceeds the model's context/],
      [{ ...base, update: true }, "out", /update applies to method "svdllm" only/],
      [base, "taken", /exists/],
    ];
    for (const [opts, out, re] of cases) {
      await assert.rejects(compress(STORIES, join(dir, out), opts), (e: Error) => {
        assert.ok(e instanceof OptionError || /exists/.test(e.message), `${e.name}: ${e.message}`);
        assert.match(e.message, re);
        return true;
      });
      assert.deepEqual(stages.filter((s) => s === "fisher"), [], `no Fisher pass before: ${re}`);
    }
    assert.equal(existsSync(join(dir, "out")), false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("compress fwsvd: stories260K at 20 % loads, and beats plain svd on held-out text", async () => {
  const dir = await tempDir();
  try {
    const text = await storiesText();
    const cut = Math.floor(text.length * 0.75); // calibrate on the first three quarters, evaluate on the rest
    const calib = text.slice(0, cut), held = text.slice(cut);
    const stages = new Set<string>();
    const fw = await compress(STORIES, join(dir, "fw"), {
      method: "fwsvd",
      ratio: { removed: 0.2 },
      calibration: { text: calib, samples: 8, seqlen: 128 },
      onProgress: (e) => stages.add(e.stage),
    });
    assert.ok(stages.has("fisher") && stages.has("done"), [...stages].join());
    assert.equal(fw.fisher?.side, "kfac");
    assert.equal(fw.fisher?.batches, 8);
    assert.ok(fw.phases.fisher > 0);
    await compress(STORIES, join(dir, "svd"), { method: "svd", ratio: { removed: 0.2 } });
    const m = await loadModel(STORIES);
    const ids = m.tokenizer.encode(held, { bos: true }).subarray(0, 1024);
    assert.ok(ids.length >= 512, `held-out tokens: ${ids.length}`);
    await m.close();
    const pFw = await folderPpl(join(dir, "fw"), ids, 512);
    const pSvd = await folderPpl(join(dir, "svd"), ids, 512);
    assert.ok(Number.isFinite(pFw) && pFw < pSvd, `fwsvd ppl ${pFw}, svd ${pSvd}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
