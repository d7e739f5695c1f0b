/**
 * Bad-input corpus, calibration and evaluation text: binary data, a model file, NUL bytes, invalid UTF-8 in
 * quantity, empty text and a FIFO are refused by {@link checkText} / {@link readCalibrationText} naming the
 * input; real text with a few stray bytes is accepted.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { checkText, readCalibrationText } from "../../src/calib/text.ts";
import { assertRefused, FIXTURE, STORIES, tempDir } from "./_corpus.ts";

const STORY = "Once upon a time, there was a little girl named Lily. She liked to play in the park.\n";

/** Write `bytes` to a temporary file and expect readCalibrationText to refuse it with `problem`. */
async function refusedFile(bytes: Uint8Array | string, problem: RegExp): Promise<void> {
  const t = await tempDir();
  try {
    const p = join(t.dir, "calib.txt");
    await writeFile(p, bytes);
    await assertRefused(() => readCalibrationText(p), p, problem, p);
  } finally {
    await t.cleanup();
  }
}

test("text: the GGUF model file itself as calibration text is refused", async () => {
  await assertRefused(
    () => readCalibrationText(STORIES),
    STORIES,
    /this is a GGUF model file, not text/,
    STORIES,
  );
});

test("text: a safetensors file as calibration text is refused (binary)", async () => {
  const p = join(FIXTURE, "model.safetensors");
  await assertRefused(() => readCalibrationText(p), p, /NUL character at offset \d+: binary data/, p);
});

test("text: NUL bytes inside otherwise good text are refused with their offset", async () => {
  await refusedFile(STORY + "\0" + STORY, /holds a NUL character at offset 85: binary data, not text/);
});

test("text: invalid UTF-8 in quantity is refused", async () => {
  const bytes = new Uint8Array(4000);
  for (let i = 0; i < bytes.length; i++) bytes[i] = i % 3 === 0 ? 0x41 : 0x80 + (i % 64);
  await refusedFile(
    bytes,
    /more than 8 invalid UTF-8 sequences or control characters \(the first at offset 1\)/,
  );
});

test("text: control characters in quantity are refused", async () => {
  await refusedFile(STORY + "\u0001\u0002\u0003".repeat(10), /invalid UTF-8 sequences or control characters/);
});

test("text: an empty file and a file of white space are refused", async () => {
  await refusedFile("", /holds no text/);
  await refusedFile(" \n\t\n", /holds no text/);
});

test(
  "text: a FIFO named calib.txt is refused, not read forever",
  { skip: process.platform === "win32" },
  async () => {
    const t = await tempDir();
    try {
      const p = join(t.dir, "calib.txt");
      execFileSync("mkfifo", [p]);
      await assertRefused(() => readCalibrationText(p), p, /not a regular file/);
    } finally {
      await t.cleanup();
    }
  },
);

test("text: a missing file is named", async () => {
  await assertRefused(
    () => readCalibrationText("/nonexistent/calib.txt"),
    "/nonexistent/calib.txt",
    /ENOENT/,
  );
});

test("text: checkText refuses in-memory binary text naming what the caller calls it", () => {
  assert.throws(
    () => checkText("GGUF\u0003\u0000\u0000\u0000", "calibration.text"),
    /^FormatError: calibration\.text: this is a GGUF model file/,
  );
  assert.throws(() => checkText("a\u0000b", "--text"), /--text: holds a NUL character at offset 1/);
});

test("text: real text with a few stray Latin-1 bytes is accepted (control)", async () => {
  const t = await tempDir();
  try {
    const p = join(t.dir, "calib.txt");
    const story = new TextEncoder().encode(STORY.repeat(20));
    const bytes = new Uint8Array(story.length + 3);
    bytes.set(story);
    bytes.set([0xe9, 0x20, 0xe8], story.length); // "é è" in Latin-1: invalid UTF-8, but only two bytes
    await writeFile(p, bytes);
    const text = await readCalibrationText(p);
    assert.ok(text.startsWith("Once upon a time"));
    assert.equal(await readFile(p).then((b) => b.length), bytes.length);
    checkText(STORY, "calibration.text");
  } finally {
    await t.cleanup();
  }
});
