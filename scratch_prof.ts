import { loadModel } from "./src/model/load.ts";
import { perplexity } from "./src/eval/perplexity.ts";
import { readFileSync } from "node:fs";
const m = await loadModel("models/stories260K/stories260K.gguf");
const ids = m.tokenizer.encode(readFileSync("data/tinystories-valid.part1.txt", "utf8"), { bos: true });
for (let k = 0; k < 2; k++) {
const t0 = performance.now();
const r = await perplexity(m, ids, { window: 512 });
console.log(r.meanNll, performance.now() - t0);
}
