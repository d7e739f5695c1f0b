import fc from "fast-check";
import { openGguf } from "./src/io/gguf.ts";
import { GgufSentencePieceTokenizer } from "./src/tokenize/sentencepiece.ts";
const g = await openGguf("models/stories260K/stories260K.gguf");
const tok = new GgufSentencePieceTokenizer(g.kv);
for (const arb of [fc.string({ unit: "grapheme" }), fc.stringMatching(/^[a-z ,.!]{0,40}$/), fc.string({unit: "binary"}), fc.string({unit:"grapheme-composite"})]) {
try {
fc.assert(fc.property(arb, (s) => tok.decode(tok.encode(s)) === s), { numRuns: 3000 });
} catch (e) { console.log(String(e).slice(0, 600)); }
}
