/**
 * Compress the bundled stories260K with each method at the same ratio and compare perplexity.
 *
 * ```sh
 * deno run -A examples/compress_stories.ts [removed-ratio]
 * ```
 *
 * @module
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compress, loadModel, perplexity } from "../mod.ts";

const removed = Number(process.argv[2] ?? 0.3);
const source = new URL("../models/stories260K/stories260K.gguf", import.meta.url).pathname;
const text = await readFile(new URL("../data/tinystories-valid.part1.txt", import.meta.url), "utf8");
const dir = await mkdtemp(join(tmpdir(), "svd-llm-example-"));
try {
  for (const method of ["svd", "asvd", "svdllm"] as const) {
    const out = join(dir, method);
    const report = await compress(source, out, {
      method,
      ratio: { removed },
      calibration: { text, samples: 16, seqlen: 256 },
    });
    const model = await loadModel(out);
    const { ppl } = await perplexity(model, model.tokenizer.encode(text, { bos: true }), { window: 512 });
    await model.close();
    console.log(
      `${method.padEnd(7)} removed ${
        (report.params.linears.removed * 100).toFixed(1)
      } % of the block linears: ppl ${ppl.toFixed(3)}`,
    );
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
