// The methods wired into `compress` beyond svd/asvd/svdllm: the CLI writes a model that `eval` loads, and
// refuses bad method options in one line, naming the flag, before any work.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cli, model, text } from "./_helpers.ts";

test("cli: compress --method fwsvd writes a model that eval loads", { timeout: 600_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), "svd-llm-cli-fwsvd-"));
  try {
    const out = join(dir, "fw");
    const c = cli(
      "compress",
      model,
      out,
      "--method",
      "fwsvd",
      "--ratio",
      "0.2",
      "--calib",
      text,
      "--samples",
      "4",
      "--seqlen",
      "64",
      "--fisher-side",
      "output",
    );
    assert.equal(c.code, 0, c.err);
    assert.match(
      c.out,
      /method fwsvd, 20 % removed .*Fisher \(per output row, mean loss [0-9.]+\) calibration/,
    );
    const config = JSON.parse(await readFile(join(out, "config.json"), "utf8"));
    assert.equal(config.svd_llm.method, "fwsvd");
    assert.deepEqual(
      { side: config.svd_llm.fisher.side, batches: config.svd_llm.fisher.batches },
      { side: "output", batches: 4 },
    );
    const e = cli("eval", out, "--text", text, "--max-tokens", "300", "--window", "300");
    assert.equal(e.code, 0, e.err);
    const ppl = Number(/ppl ([0-9.]+)/.exec(e.out)?.[1]);
    assert.ok(Number.isFinite(ppl) && ppl > 1, e.out);

    const bad = cli(
      "compress",
      model,
      join(dir, "bad"),
      "--method",
      "fwsvd",
      "--ratio",
      "0.2",
      "--calib",
      text,
      "--fisher-side",
      "rows",
    );
    assert.equal(bad.code, 1);
    assert.match(
      bad.err.trim(),
      /^error: OptionError: compress: --fisher-side must be "kfac", "both", "input" or "output", got "rows"$/,
    );
    const wrong = cli(
      "compress",
      model,
      join(dir, "bad"),
      "--method",
      "svd",
      "--ratio",
      "0.2",
      "--fisher-side",
      "input",
    );
    assert.equal(wrong.code, 1);
    assert.match(wrong.err.trim(), /--fisher-side applies to method "fwsvd" only$/);
    const none = cli("compress", model, join(dir, "bad"), "--method", "fwsvd", "--ratio", "0.2");
    assert.equal(none.code, 1);
    assert.match(none.err.trim(), /method "fwsvd" needs calibration data \(--calib FILE\)$/);
    assert.equal(existsSync(join(dir, "bad")), false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("cli: compress --method soco trains, checkpoints, resumes, and writes a model that eval loads", {
  timeout: 600_000,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), "svd-llm-cli-soco-"));
  try {
    const ckpt = join(dir, "soco.json");
    const args = (out: string) => [
      "compress",
      model,
      out,
      "--method",
      "soco",
      "--ratio",
      "0.2",
      "--calib",
      text,
      "--samples",
      "4",
      "--seqlen",
      "64",
      "--steps",
      "6",
      "--basis",
      "svd",
      "--checkpoint",
      ckpt,
    ];
    const a = cli(...args(join(dir, "a")));
    assert.equal(a.code, 0, a.err);
    assert.match(
      a.out,
      /method soco, 20 % removed .*SoCo \(svd basis, 6 steps, final loss [0-9.]+\).*learned allocation/,
    );
    assert.ok(existsSync(ckpt), "checkpoint written");
    const config = JSON.parse(await readFile(join(dir, "a", "config.json"), "utf8"));
    assert.equal(config.svd_llm.method, "soco");
    assert.equal(config.svd_llm.allocation, "learned");
    assert.deepEqual([config.svd_llm.soco.basis, config.svd_llm.soco.steps], ["svd", 6]);
    assert.ok(config.svd_llm.soco.kept <= config.svd_llm.soco.budget);
    // the finished checkpoint resumes to the same scores, hence the same ranks
    const b = cli(...args(join(dir, "b")));
    assert.equal(b.code, 0, b.err);
    const again = JSON.parse(await readFile(join(dir, "b", "config.json"), "utf8"));
    assert.deepEqual(again.svd_llm.ranks, config.svd_llm.ranks);
    const e = cli("eval", join(dir, "a"), "--text", text, "--max-tokens", "300", "--window", "300");
    assert.equal(e.code, 0, e.err);
    assert.ok(Number(/ppl ([0-9.]+)/.exec(e.out)?.[1]) > 1, e.out);

    const bad: [string[], RegExp][] = [
      [
        ["--method", "svd", "--steps", "5"],
        /--basis\/--steps\/--lr\/--checkpoint apply to --method soco only$/,
      ],
      [
        ["--method", "soco", "--calib", text, "--basis", "eigen"],
        /soco: --basis must be "svd" or "whitened", got "eigen"$/,
      ],
      [["--method", "soco", "--calib", text, "--lr", "5"], /soco: --lr must be a number in \(0, 1\], got 5$/],
      [["--method", "soco"], /method "soco" needs calibration data \(--calib FILE\)$/],
    ];
    for (const [flags, re] of bad) {
      const r = cli("compress", model, join(dir, "bad"), "--ratio", "0.2", ...flags);
      assert.equal(r.code, 1, flags.join(" "));
      assert.equal(r.err.trim().split("\n").length, 1, r.err);
      assert.match(r.err.trim(), re);
    }
    assert.equal(existsSync(join(dir, "bad")), false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
