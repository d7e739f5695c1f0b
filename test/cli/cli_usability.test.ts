// The CLI tried as a new user would (issue 13 §4): per-command help, errors naming flags (not API options),
// eval refusing a model of one's own without --text, an honest svd summary, progress lines without a TTY,
// and the CLI run by Node (no import.meta.main there).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cli, model, root, text } from "./_helpers.ts";

const SLOW = { timeout: 600_000 };

test("cli: each command has its own --help", () => {
  for (
    const [cmd, re] of [
      ["compress", /--overwrite\s+replace OUT if it is a model folder written by this program/],
      ["eval", /A model of your own needs --text/],
      ["merge", /cli\.ts merge IN OUT \[--overwrite\]/],
      ["inspect", /singular-value spectra/],
      ["generate", /--tokens N/],
      ["demo", /bundled stories260K/],
    ] as const
  ) {
    const r = cli(cmd, "--help");
    assert.equal(r.code, 0, `${cmd}: ${r.err}`);
    assert.match(r.out, re, cmd);
    assert.equal(cli("help", cmd).out, r.out, `help ${cmd}`);
  }
});

test("cli: errors name flags, not the library's options", SLOW, async () => {
  const dir = await mkdtemp(join(tmpdir(), "svd-llm-cli-flags-"));
  try {
    const out = join(dir, "out");
    await mkdir(out);
    await writeFile(join(dir, "notes.txt"), "mine\n");
    const cases: [string[], RegExp][] = [
      [
        ["compress", model, out, "--method", "svd", "--ratio", "0.2"],
        /already exists; pass --overwrite to replace it$/,
      ],
      [
        ["compress", model, join(dir, "o2"), "--method", "svdllm", "--ratio", "0.2"],
        /needs calibration data \(--calib FILE\)$/,
      ],
      [
        ["compress", model, join(dir, "o3"), "--ratio", "0.2", "--calib", text, "--samples", "1e8"],
        /--samples must be a whole number from 1 to 65536, got 100000000$/,
      ],
      [
        ["compress", model, join(dir, "o4"), "--method", "svd", "--kept", "2"],
        /--kept must be a number strictly between 0 and 1/,
      ],
      [
        ["compress", model, join(dir, "o5"), "--method", "svdx", "--ratio", "0.2"],
        /--method must be "svd", "asvd", "svdllm", "fwsvd" or "soco", got "svdx"/,
      ],
      [
        ["compress", model, join(dir, "o6"), "--method", "asvd", "--ratio", "0.2", "--update"],
        /--update applies to method "svdllm" only/,
      ],
      [
        ["compress", model, dir, "--method", "svd", "--ratio", "0.2", "--overwrite"],
        /refusing to replace .*: it holds "notes\.txt", which this program never writes/,
      ],
      [
        ["compress", model, join(dir, "none", "out"), "--method", "svd", "--ratio", "0.2"],
        /parent folder .*none does not exist/,
      ],
    ];
    for (const [args, re] of cases) {
      const r = cli(...args);
      assert.equal(r.code, 1, `${args.join(" ")}: ${r.err}`);
      const lines = r.err.trim().split("\n");
      assert.equal(lines.length, 1, r.err);
      assert.match(lines[0], re, args.join(" "));
      assert.doesNotMatch(r.err, /overwrite: true|calibration\.(text|ids|samples)/);
    }
    assert.equal(await readFile(join(dir, "notes.txt"), "utf8"), "mine\n");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test(
  "cli: eval of a model of one's own needs --text; the bundled one says which text it uses",
  SLOW,
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "svd-llm-cli-eval-"));
    try {
      const out = join(dir, "svd");
      const c = cli("compress", model, out, "--method", "svd", "--ratio", "0.2");
      assert.equal(c.code, 0, c.err);
      // the svd summary does not claim a calibration it never ran
      assert.match(c.out, /method svd, 20 % removed.*, no calibration \(plain SVD of the weights\)/);
      assert.doesNotMatch(c.out, /sequential calibration/);
      // one progress line per block and stage without a TTY, not only the last block's
      for (let b = 0; b < 5; b++) assert.match(c.err, new RegExp(`^compress block ${b} .*\\d+/35`, "m"));
      const own = cli("eval", out, "--max-tokens", "64");
      assert.equal(own.code, 1);
      assert.match(
        own.err.trim(),
        /^error: eval: give --text FILE to evaluate .*svd \(the bundled TinyStories text/,
      );
      const bundled = cli("eval", "--max-tokens", "64", "--window", "32");
      assert.equal(bundled.code, 0, bundled.err);
      assert.match(bundled.err, /text: the bundled TinyStories validation text/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);

test("cli: a Node bundle of the CLI runs (Node 20 has no import.meta.main)", SLOW, async () => {
  const node = spawnSync("node", ["--version"], { encoding: "utf8" });
  if (node.status !== 0) return; // no Node on this machine: nothing to check
  const dir = await mkdtemp(join(tmpdir(), "svd-llm-cli-node-"));
  try {
    const bundle = join(dir, "cli.mjs");
    const bun = join(root, "node_modules/.bin/bun");
    const b = spawnSync(bun, ["build", join(root, "cli.ts"), "--target", "node", "--outfile", bundle], {
      encoding: "utf8",
      timeout: 600_000,
    });
    assert.equal(b.status, 0, b.stderr);
    const help = spawnSync("node", [bundle, "help"], { encoding: "utf8", timeout: 600_000 });
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /compress IN OUT --method/);
    const ev = spawnSync(
      "node",
      [bundle, "--threads", "1", "eval", model, "--text", text, "--max-tokens", "128", "--window", "64"],
      { encoding: "utf8", timeout: 600_000 },
    );
    assert.equal(ev.status, 0, ev.stderr);
    assert.match(ev.stdout, /128 tokens in 2 windows of 64: mean NLL [\d.]+, ppl [\d.]+/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
