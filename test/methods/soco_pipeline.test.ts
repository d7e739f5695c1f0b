// SoCo end to end on the bundled stories260K (genuinely pretrained): the training loss at s = 1 is the model's
// own NLL, the output folder reloads at the exact budget with ranks chosen per matrix, runs are deterministic
// and resumable, bad options are refused before anything is written.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { compressSoco, type SocoOptions } from "../../src/pipeline/soco.ts";
import { loadModel } from "../../src/model/load.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { calibrationWindows } from "../../src/calib/windows.ts";
import { OptionError } from "../../src/errors.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const MODEL = join(ROOT, "models/stories260K/stories260K.gguf");
const TEXT = join(ROOT, "data/tinystories-valid.part1.txt");

async function calibIds(): Promise<number[]> {
  const m = await loadModel(MODEL);
  const ids = m.tokenizer.encode(await readFile(TEXT, "utf8"), { bos: true });
  await m.close();
  return Array.from(ids.slice(0, 2000));
}

const base = (ids: number[]): SocoOptions => ({
  ratio: { removed: 0.4 },
  calibration: { ids, samples: 4, seqlen: 64, seed: 3 },
  steps: 8,
  lr: 0.1,
  batch: 2,
  // The paper's start (every score 1) on every window: these tests are about W'(1) = W.
  start: "full",
  holdout: 0,
});

test("soco on stories260K: loss at s = 1 is the model's NLL, the folder reloads at the budget with per-matrix ranks, deterministic", async () => {
  const ids = await calibIds();
  const dir = await mkdtemp(join(tmpdir(), "soco-test-"));
  try {
    const opts = { ...base(ids), batch: 4 }; // every step sees all 4 windows
    const a = await compressSoco(MODEL, join(dir, "a"), opts);
    assert.equal(a.basis, "whitened");
    // Step 0 runs the model at s = 1 (W' = U·Uᵀ·W = W) over all calibration windows: its loss is the dense
    // model's mean NLL over the same windows, each evaluated on its own (perplexity's protocol).
    const windows = calibrationWindows(ids, { samples: 4, seqlen: 64, seed: 3 });
    const joined = new Int32Array(windows.flatMap((w) => [...w]));
    const dense = await loadModel(MODEL);
    const nll = Math.log((await perplexity(dense, joined, { window: 64 })).ppl);
    await dense.close();
    assert.ok(Math.abs(a.history[0].loss - nll) < 1e-4, `${a.history[0].loss} vs ${nll}`);
    // The budget: never above the uniform ranks' parameter count, short of it by less than one component.
    assert.ok(a.budget.kept <= a.budget.target && a.budget.target - a.budget.kept < 64 + 32);
    assert.ok(a.params.linears.removed >= 0.4);
    const ranks = Object.values(a.ranks);
    assert.ok(new Set(ranks).size > 1, `ranks ${ranks}`);
    // The folder reloads, with exactly those ranks, and evaluates to a finite perplexity.
    const m = await loadModel(join(dir, "a"));
    const cfg = m.config as { svd_llm: { method: string; ranks: Record<string, number> } };
    assert.equal(cfg.svd_llm.method, "soco");
    assert.deepEqual(cfg.svd_llm.ranks, a.ranks);
    for (const [name, k] of Object.entries(a.ranks)) assert.equal(m.reader.info(`${name}.svd_a`).shape[1], k);
    const ppl = (await perplexity(m, joined, { window: 64 })).ppl;
    await m.close();
    assert.ok(Number.isFinite(ppl) && ppl > 1);
    // Same options, same model.
    const b = await compressSoco(MODEL, join(dir, "b"), opts);
    assert.deepEqual(b.ranks, a.ranks);
    assert.deepEqual(b.spectra.map((s) => s.scores), a.spectra.map((s) => s.scores));
    const [fa, fb] = await Promise.all([
      readFile(join(dir, "a", "model.safetensors")),
      readFile(join(dir, "b", "model.safetensors")),
    ]);
    assert.ok(fa.equals(fb));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("soco resumes from its checkpoint after an interruption and ends as the uninterrupted run", async () => {
  const ids = await calibIds();
  const dir = await mkdtemp(join(tmpdir(), "soco-test-"));
  try {
    const opts = { ...base(ids), basis: "svd" as const, checkpointEvery: 3 };
    const whole = await compressSoco(MODEL, join(dir, "whole"), opts);
    const ckpt = join(dir, "scores.json");
    const stop = new AbortController();
    await assert.rejects(
      compressSoco(MODEL, join(dir, "cut"), {
        ...opts,
        checkpoint: ckpt,
        signal: stop.signal,
        onProgress: (e) => {
          if (e.stage === "train" && e.train.step === 4) stop.abort(new Error("interrupted"));
        },
      }),
      /interrupted/,
    );
    assert.ok(!existsSync(join(dir, "cut")), "no partial output");
    assert.equal(JSON.parse(await readFile(ckpt, "utf8")).step, 3);
    const resumed = await compressSoco(MODEL, join(dir, "cut"), { ...opts, checkpoint: ckpt });
    assert.deepEqual(resumed.spectra.map((s) => s.scores), whole.spectra.map((s) => s.scores));
    assert.deepEqual(resumed.ranks, whole.ranks);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("soco refuses bad options before writing anything", async () => {
  const ids = await calibIds();
  const dir = await mkdtemp(join(tmpdir(), "soco-test-"));
  try {
    const out = join(dir, "out");
    const bad: [Partial<SocoOptions>, RegExp][] = [
      [{ lr: 0 }, /learning rate must be a number in \(0, 1\], got 0/],
      [{ lr: NaN }, /learning rate/],
      [{ steps: 2 }, /steps must be a whole number from 3/],
      [{ steps: 10.5 }, /steps/],
      [{ batch: 0 }, /batch/],
      [{ klWeight: -1 }, /klWeight/],
      [{ nllWeight: NaN }, /nllWeight must be a finite number/],
      [{ nllWeight: 0, klWeight: 0 }, /nllWeight 0 needs a klWeight > 0/],
      [{ basis: "pca" as "svd" }, /basis must be "svd" or "whitened"/],
      [{ start: "middle" as "full" }, /start must be "allocation" or "full", got "middle"/],
      [{ holdout: 1 }, /holdout must be a fraction in \[0, 1\), got 1/],
      [{ holdout: -0.1 }, /holdout/],
      [{ spill: "yes" as "auto" }, /spill must be true, false or "auto", got "yes"/],
      [{ ratio: { removed: 0.999 } }, /nothing would be left/],
      [{ ratio: { removed: 1.5 } }, /strictly between 0 and 1/],
    ];
    for (const [o, re] of bad) {
      await assert.rejects(compressSoco(MODEL, out, { ...base(ids), ...o }), (e: Error) => {
        assert.ok(e instanceof OptionError, `${e}`);
        assert.match(e.message, re);
        return true;
      });
      assert.ok(!existsSync(out));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("soco with the KL objective alone: at s = 1 the compressed model is the original, KL = 0", async () => {
  const ids = await calibIds();
  const dir = await mkdtemp(join(tmpdir(), "soco-test-"));
  try {
    const r = await compressSoco(MODEL, join(dir, "kl"), {
      ...base(ids),
      calibration: { ids, samples: 2, seqlen: 32, seed: 1 },
      steps: 3,
      klWeight: 1,
      nllWeight: 0,
    });
    assert.ok(r.history[0].loss >= -1e-7 && r.history[0].loss < 1e-5, `KL at s = 1: ${r.history[0].loss}`);
    assert.ok(r.history.at(-1)!.loss > 1e-4, "pruning moves the model away from the original");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
