/** tokenizer.json through @huggingface/tokenizers: tinylm-brown's reference ids. Skips without ../shared. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { loadHfTokenizer } from "../../src/tokenize/hf.ts";
import { FormatError } from "../../src/errors.ts";

const DIR = new URL("../../../shared/models/tinylm-brown/", import.meta.url).pathname;
const present = existsSync(DIR + "tokenizer.json");
if (!present) console.log("skip tinylm-brown tokenizer test: ../shared/models/tinylm-brown absent");

test(
  "hf tokenizer: tinylm-brown prompt ids, BOS only when asked, round trip",
  { skip: !present },
  async () => {
    const ref = JSON.parse(readFileSync(DIR + "reference.json", "utf8"));
    const tok = await loadHfTokenizer(DIR);
    assert.equal(tok.bosId, 1);
    assert.equal(tok.eosId, 2);
    assert.equal(tok.vocabSize, 4096);
    for (const p of ref.prompts) {
      assert.deepEqual(Array.from(tok.encode(p.text, { bos: true })), p.input_ids);
      assert.deepEqual(Array.from(tok.encode(p.text)), p.input_ids.slice(1));
      assert.equal(tok.decode(tok.encode(p.text, { bos: true })), p.text);
    }
  },
);

test("hf tokenizer: a folder without tokenizer.json is a FormatError naming the file", async () => {
  const dir = new URL("../../models/stories260K/", import.meta.url).pathname;
  await assert.rejects(
    loadHfTokenizer(dir),
    (e: Error) => e instanceof FormatError && e.message.includes("tokenizer.json"),
  );
});
