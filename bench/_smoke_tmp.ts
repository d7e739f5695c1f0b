import { compress } from "../src/pipeline/compress.ts";
import { loadModel } from "../src/model/load.ts";
import { forwardHidden, loadHead, tokenNll } from "../src/model/llama.ts";
import { readFile, rm } from "node:fs/promises";
import { openModelWeights } from "../src/io/sharded.ts";
import { specFromHfConfig } from "../src/model/spec.ts";

async function ppl(model: any, ids: Int32Array, win: number) {
  let sum = 0, n = 0;
  const head = await loadHead(model.reader, model.spec);
  const ws: Int32Array[] = [];
  for (let s = 0; s + 2 <= ids.length; s += win) ws.push(ids.slice(s, Math.min(ids.length, s + win)));
  for (const w of ws) {
    const h = await forwardHidden(model, [w]);
    const t = new Int32Array(w.length);
    for (let i = 0; i < w.length; i++) t[i] = i + 1 < w.length ? w[i + 1] : -1;
    const nll = tokenNll(model.spec, head, h, t);
    for (let i = 0; i + 1 < w.length; i++) { sum += nll[i]; n++; }
  }
  return { ppl: Math.exp(sum / n), n };
}
const m = await loadModel("models/stories260K/stories260K.gguf");
const text = await readFile("/work/shared/data/tinystories-valid.part1.txt", "utf8");
const ids = m.tokenizer.encode(text, { bos: true });
console.log("tokens", ids.length);
for (const method of (Deno.args[0] ?? "svd,asvd,svdllm").split(",")) {
  const out = `/tmp/scratch/out-${method}`;
  await rm(out, { recursive: true, force: true });
  const t0 = performance.now();
  const rep = await compress("models/stories260K/stories260K.gguf", out, {
    method: method as any, ratio: { removed: 0.2 }, calibration: { ids, samples: 32, seqlen: 256 },
  });
  const cfg = JSON.parse(await readFile(out + "/config.json", "utf8"));
  const reader = await openModelWeights(out);
  const spec = specFromHfConfig(cfg);
  console.log(method, ((performance.now() - t0) / 1000).toFixed(2), "s", (await ppl({ spec, reader }, ids, 512)).ppl, rep.params.linears.removed, (rep.peakRssBytes / 1e6).toFixed(0) + "MB");
}
