/**
 * Compress the bundled stories260K with each method at the same ratio and compare perplexity.
 *
 * ```sh
 * deno run -A examples/compress_stories.ts [removed-ratio]
 * ```
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { compareMethods, loadModel } from "../mod.ts";

const removed = Number(process.argv[2] ?? 0.3);
const source = fileURLToPath(new URL("../models/stories260K/stories260K.gguf", import.meta.url));
const text = await readFile(new URL("../data/tinystories-valid.part1.txt", import.meta.url), "utf8");
const dense = await loadModel(source);
const evalIds = dense.tokenizer.encode(text, { bos: true });
await dense.close();
const rows = await compareMethods(source, {
  ratio: { removed },
  calibration: { text, samples: 16, seqlen: 256 },
  evalIds,
  window: 512,
});
for (const { method, ppl, report } of rows) {
  console.log(
    `${method.padEnd(7)} removed ${
      (report.params.linears.removed * 100).toFixed(1)
    } % of the block linears: ppl ${ppl.toFixed(3)}`,
  );
}
