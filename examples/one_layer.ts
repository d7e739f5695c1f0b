/**
 * Compress one linear layer of the bundled model GPTQ-style: observe its real inputs, then factor it with
 * each method at the same rank and compare the output error ‖(W − AB)Xᵀ‖ on those inputs.
 *
 * ```sh
 * deno run -A examples/one_layer.ts
 * ```
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { asvd, loadModel, matmul, svdLayer, svdllm } from "../mod.ts";
import { embed, forwardBlock, loadBlock, loadHead } from "../src/model/llama.ts";
import type { Matrix } from "../src/linalg/matrix.ts";

const model = await loadModel(new URL("../models/stories260K/stories260K.gguf", import.meta.url).pathname);
const text = await readFile(new URL("../data/tinystories-valid.part1.txt", import.meta.url), "utf8");
const ids = model.tokenizer.encode(text, { bos: true }).subarray(0, 512);
const head = await loadHead(model.reader, model.spec);
const block = await loadBlock(model.reader, model.spec, 0);
let inputs: Matrix | undefined; // tokens×in: what block 0's up_proj sees
forwardBlock(model.spec, block, embed(head, model.spec, [ids]), { batch: 1, seq: ids.length }, (name, x) => {
  if (name === "mlp.up_proj") inputs = x;
});
await model.close();
if (block.up.kind !== "dense" || !inputs) throw new Error("expected a dense up_proj and its inputs");
const w = block.up.weight; // out×in
const reference = matmul(inputs, w, { transB: true });
for (const [name, make] of [["svd", svdLayer], ["asvd", asvd], ["svdllm", svdllm]] as const) {
  const layer = make(w);
  layer.addBatch(inputs);
  const { a, b } = layer.compress({ rank: 16 });
  const approx = matmul(matmul(inputs, b, { transB: true }), a, { transB: true });
  let err = 0, ref = 0;
  for (let i = 0; i < approx.data.length; i++) {
    err += (approx.data[i] - reference.data[i]) ** 2;
    ref += reference.data[i] ** 2;
  }
  console.log(
    `${name.padEnd(7)} rank 16 of ${Math.min(w.rows, w.cols)}: relative output error ${
      Math.sqrt(err / ref).toFixed(4)
    }`,
  );
}
