import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cli, model, text } from "./_helpers.ts";

test("cli: help, unknown command, and option errors that name the problem", () => {
  const help = cli("help");
  assert.equal(help.code, 0);
  assert.match(help.out, /compress IN OUT --method/);
  assert.equal(cli("frobnicate").code, 2);
  const both = cli("compress", model, "/tmp/never", "--ratio", "0.2", "--kept", "0.8");
  assert.equal(both.code, 1);
  assert.match(both.err, /exactly one of --ratio/);
  const range = cli("compress", model, "/tmp/never-svd-llm", "--method", "svd", "--ratio", "1.5");
  assert.equal(range.code, 1);
  assert.match(range.err, /OptionError.*ratio/i);
});

test("cli: eval, compress, inspect, merge and eval again on the bundled model", async () => {
  const dir = await mkdtemp(join(tmpdir(), "svd-llm-cli-"));
  try {
    const ev = cli("eval", model, "--text", text, "--window", "512", "--max-tokens", "1024");
    assert.equal(ev.code, 0, ev.err);
    assert.match(ev.out, /1024 tokens in 2 windows of 512: mean NLL [\d.]+, ppl [\d.]+/);

    const out = join(dir, "svd");
    const c = cli("compress", model, out, "--method", "svd", "--ratio", "0.3");
    assert.equal(c.code, 0, c.err);
    assert.match(c.out, /method svd, 30 % removed/);
    assert.match(c.out, /whole model [\d,]+ → [\d,]+/);

    const again = cli("compress", model, out, "--method", "svd", "--ratio", "0.3");
    assert.equal(again.code, 1, "an existing output is not overwritten without --overwrite");

    const ins = cli("inspect", out);
    assert.equal(ins.code, 0, ins.err);
    assert.match(ins.out, /compressed by @svd\/llm/);
    assert.match(ins.out, /0\.self_attn\.q_proj\s+64×64\s+\d+/);

    const dense = join(dir, "dense");
    const m = cli("merge", out, dense);
    assert.equal(m.code, 0, m.err);
    const pLow = Number(
      cli("eval", out, "--text", text, "--window", "512", "--max-tokens", "1024").out.match(
        /ppl ([\d.]+)/,
      )![1],
    );
    const pDense = Number(
      cli("eval", dense, "--text", text, "--window", "512", "--max-tokens", "1024").out.match(
        /ppl ([\d.]+)/,
      )![1],
    );
    assert.ok(Math.abs(pLow - pDense) <= 1e-3 * pLow, `merged ${pDense} vs factored ${pLow}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
