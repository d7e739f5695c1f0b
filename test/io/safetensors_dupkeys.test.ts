/** firstDuplicateKey: the top-level duplicate detector behind "tensor … appears twice in the header". */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { firstDuplicateKey } from "../../src/io/safetensors_reader.ts";

test("firstDuplicateKey: escapes decoded, nested keys and string values ignored", () => {
  assert.equal(firstDuplicateKey('{"a\\"b": 1, "x": {"a\\"b": 2}, "a\\u0022b": 3}'), 'a"b');
  assert.equal(firstDuplicateKey('{"a": "b", "b": ["a", "b", {"a": 1}], "c": {"c": 1}}'), undefined);
  assert.equal(firstDuplicateKey('{ "t" : {"shape": [1]} ,\n "t"\t: {}}'), "t");
});

test("firstDuplicateKey: property — none in JSON.stringify output, found when a key is repeated", () => {
  fc.assert(
    fc.property(fc.dictionary(fc.string(), fc.jsonValue(), { minKeys: 1 }), fc.nat(), (obj, pick) => {
      const text = JSON.stringify(obj);
      assert.equal(firstDuplicateKey(text), undefined);
      const keys = Object.keys(obj);
      const k = keys[pick % keys.length];
      const dup = `{${JSON.stringify(k)}:null,${text.slice(1)}`;
      assert.equal(firstDuplicateKey(dup), k);
    }),
    { numRuns: 300, seed: 3 },
  );
});
