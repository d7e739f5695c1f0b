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
      const nul = join(dir, "nul.txt");
      await writeFile(nul, "Once \0upon a time");
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
          /^error: FormatError: --text .*: read calibration text: it is a folder, expected a file$/,
        ],
        [
          ["eval", model, "--text", join(dir, "none.txt")],
          /^error: FormatError: --text .*none\.txt: read calibration text: cannot read the file \(ENOENT/,
        ],
        [
          ["eval", model, "--text", empty],
          /^error: FormatError: --text .*empty\.txt: holds no text \(empty or only white space\)$/,
        ],
        [
          ["compress", model, out, "--ratio", "0.2", "--calib", dir],
          /^error: FormatError: --calib .*: read calibration text: it is a folder/,
        ],
        [
          ["compress", model, out, "--ratio", "0.2", "--calib", empty],
          /^error: FormatError: --calib .*empty\.txt: holds no text \(empty or only white space\)$/,
        ],
        [
          ["compress", model, out, "--ratio", "0.2", "--calib", text, "--samples", "0"],
          /^error: --samples: .*≥ 1/,
        ],
        // binary "text" (the model file itself, NUL bytes) is refused before tokenising, naming the flag
        [
          ["compress", model, out, "--ratio", "0.2", "--calib", model],
          /^error: FormatError: --calib .*stories260K\.gguf: this is a GGUF model file, not text$/,
        ],
        [
          ["compress", model, out, "--ratio", "0.2", "--calib", nul],
          /^error: FormatError: --calib .*nul\.txt: holds a NUL character at offset 5: binary data, not text$/,
        ],
        [
          ["eval", model, "--text", nul],
          /^error: FormatError: --text .*nul\.txt: holds a NUL character at offset 5/,
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
