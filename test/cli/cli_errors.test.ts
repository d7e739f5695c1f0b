// Command-line mistakes: a one-line error naming the option or path and what is wrong, exit code 1, no stack.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cli, model, text } from "./_helpers.ts";

test(
  "cli: bad options and unreadable text files give a one-line error naming them",
  { timeout: 600_000 },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "svd-llm-cli-errors-"));
    try {
      const empty = join(dir, "empty.txt");
      await writeFile(empty, "");
      const out = join(dir, "out");
      const cases: [string[], RegExp][] = [
        [
          ["--threads", "abc", "eval", model],
          /^error: --threads: expected a whole number or "auto", got "abc"$/,
        ],
        [["--threads", "0", "eval", model], /^error: OptionError: initLinalg: threads must be .* got 0$/],
        [
          ["compress", model, out, "--method", "svd", "--ratio", ""],
          /^error: --ratio: expected a number, got ""$/,
        ],
        [["generate", model, "--tokens", "0"], /^error: --tokens: expected a whole number ≥ 1, got "0"$/],
        [["generate", model, "--tokens", "2.5"], /^error: --tokens: expected a whole number ≥ 1, got "2.5"$/],
        [["eval", model, "--window", "1"], /^error: --window: expected a whole number ≥ 2, got "1"$/],
        [
          ["eval", model, "--text", dir],
          /^error: --text .*: cannot read the file \(it is a folder, not a text file\)$/,
        ],
        [
          ["eval", model, "--text", join(dir, "none.txt")],
          /^error: --text .*none\.txt: cannot read the file \(ENOENT/,
        ],
        [["eval", model, "--text", empty], /^error: --text .*empty\.txt: the file is empty$/],
        [
          ["compress", model, out, "--ratio", "0.2", "--calib", dir],
          /^error: --calib .*: cannot read the file \(it is a folder/,
        ],
        [
          ["compress", model, out, "--ratio", "0.2", "--calib", empty],
          /^error: --calib .*empty\.txt: the file is empty$/,
        ],
        [
          ["compress", model, out, "--ratio", "0.2", "--calib", text, "--samples", "0"],
          /^error: --samples: .*≥ 1/,
        ],
        [["eval", model, model], /^error: eval: unexpected argument .* \(takes at most 1 path\)$/],
        [["eval", model, "--windw", "3"], /^error: Unknown option '--windw'/],
      ];
      for (const [args, expected] of cases) {
        const r = cli(...args);
        assert.equal(r.code, 1, `${args.join(" ")}: ${r.err}`);
        const lines = r.err.trim().split("\n");
        assert.match(lines[0], expected, args.join(" "));
        assert.ok(!/^\s+at /m.test(r.err), `no stack trace: ${r.err}`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);
