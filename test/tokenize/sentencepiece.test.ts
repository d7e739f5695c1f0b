/** The GGUF SentencePiece-style tokenizer of stories260K: known counts, merges by score, byte fallback. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { readFileSync } from "node:fs";
import { openGguf } from "../../src/io/gguf.ts";
import { GgufSentencePieceTokenizer, sentencePieceFromJson } from "../../src/tokenize/sentencepiece.ts";
import { FormatError } from "../../src/errors.ts";

const STORIES = new URL("../../models/stories260K/stories260K.gguf", import.meta.url).pathname;
const TEXT = new URL("../../data/tinystories-valid.part1.txt", import.meta.url).pathname; // bundled copy;
const g = await openGguf(STORIES);
const kv = g.kv;
await g.close();
const tok = new GgufSentencePieceTokenizer(kv, STORIES);

test("sentencepiece: a known sentence tokenizes to the expected pieces", () => {
  const ids = tok.encode("Once upon a time, there was a little girl named Lily.", { bos: true });
  assert.equal(ids[0], 1);
  assert.deepEqual(
    Array.from(ids.subarray(1), (i) => tok.pieces[i]),
    [
      "▁Once",
      "▁upon",
      "▁a",
      "▁time",
      ",",
      "▁there",
      "▁was",
      "▁a",
      "▁little",
      "▁g",
      "ir",
      "l",
      "▁named",
      "▁Lily",
      ".",
    ],
  );
  assert.deepEqual(Array.from(tok.encode("")), []);
  assert.deepEqual(Array.from(tok.encode("", { bos: true })), [1]);
});

test("sentencepiece: the TinyStories sample gives exactly 5148 tokens with one BOS", {}, () => {
  const text = readFileSync(TEXT, "utf8");
  const ids = tok.encode(text, { bos: true });
  assert.equal(ids.length, 5148);
  assert.equal(ids.filter((i) => i === 1).length, 1);
  assert.equal(tok.decode(ids), text);
});

test("sentencepiece: unknown characters fall back to UTF-8 byte tokens", () => {
  const ids = tok.encode("ж\n😀");
  const pieces = Array.from(ids, (i) => tok.pieces[i]);
  assert.deepEqual(pieces, ["▁", "<0xD0>", "<0xB6>", "<0x0A>", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]);
});

test("sentencepiece: decode(encode(s)) = s for any string without a literal ▁, and no merge with a higher score is left", () => {
  const mergeable = new Map<string, number>();
  tok.pieces.forEach((p, i) => tok.types[i] === 1 && mergeable.set(p, i));
  fc.assert(
    // a literal "▁" in the text decodes as a space, as in SentencePiece itself
    fc.property(fc.oneof(fc.string({ unit: "grapheme" }), fc.stringMatching(/^[a-z ,.!]{0,40}$/)), (s) => {
      fc.pre(!s.includes("\u2581"));
      const ids = tok.encode(s);
      assert.equal(tok.decode(ids), s);
      for (const id of ids) assert.ok(id >= 0 && id < tok.vocabSize);
      // greedy merging stops only when no adjacent pair forms a piece of the vocabulary
      for (let i = 0; i + 1 < ids.length; i++) {
        if (tok.types[ids[i]] !== 1 || tok.types[ids[i + 1]] !== 1) continue;
        assert.ok(
          !mergeable.has(tok.pieces[ids[i]] + tok.pieces[ids[i + 1]]),
          `unmerged pair at ${i} in ${JSON.stringify(s)}`,
        );
      }
    }),
    { numRuns: 300 },
  );
});

test("sentencepiece: metadata without a llama vocabulary is refused", () => {
  const m = new Map(kv);
  m.set("tokenizer.ggml.model", "gpt2");
  assert.throws(() => new GgufSentencePieceTokenizer(m, "x.gguf"), FormatError);
  const n = new Map(kv);
  n.set("tokenizer.ggml.scores", new Float32Array(3));
  assert.throws(() => new GgufSentencePieceTokenizer(n, "x.gguf"), /scores/);
});

test("sentencepiece: rebuilt from a JSON copy of the GGUF tokenizer keys, it encodes identically", () => {
  const obj: Record<string, unknown> = {};
  for (const [k, v] of kv) {
    if (k.startsWith("tokenizer.")) {
      obj[k] = ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v;
    }
  }
  const copy = sentencePieceFromJson(JSON.parse(JSON.stringify(obj)));
  const s = "Once upon a time, a fox said: «ж»!\nThe end.";
  assert.deepEqual(copy.encode(s, { bos: true }), tok.encode(s, { bos: true }));
  assert.equal(copy.bosId, 1);
});
