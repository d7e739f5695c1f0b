// The CLI's progress bar: an ETA from the rate measured since the stage began (fraction and timer count the
// same units), per-stage timing that survives interleaved stages, one line per block without a TTY.
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatDuration, progressBar, stageEta } from "../../src/cli/progress.ts";

test("stageEta: units left over the rate measured since the stage's first event", () => {
  // A stage first seen at 8 of 42 units (the previous blocks' linears), 10 s later at 13: 0.5 unit/s, 29 left.
  assert.equal(stageEta(0, 8, 10_000, 13, 42), 58);
  // Nothing done since the stage began: no rate yet.
  assert.ok(Number.isNaN(stageEta(0, 8, 10_000, 8, 42)));
  assert.equal(formatDuration(58), "0:58");
  assert.equal(formatDuration(NaN), "--:--");
});

test("progressBar without a TTY: one line per block and stage, the finished line last", () => {
  const lines: string[] = [];
  const bar = progressBar((s) => void lines.push(s), false);
  for (let b = 0; b < 3; b++) {
    for (let k = 1; k <= 2; k++) {
      bar({ stage: "compress", label: `compress block ${b}`, done: 2 * b + k, total: 6 });
    }
    bar({ stage: "write", label: `write block ${b}`, done: b + 1, total: 3 });
  }
  const text = lines.join("");
  for (let b = 0; b < 3; b++) {
    assert.match(text, new RegExp(`^compress block ${b} .* ${2 * b + 2}/6 `, "m"));
    assert.match(text, new RegExp(`^write block ${b} .* ${b + 1}/3`, "m"));
  }
  assert.equal(lines.length, 6);
  assert.ok(lines.every((l) => l.endsWith("\n") && !l.includes("\r")));
});
