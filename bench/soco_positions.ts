/**
 * Diagnostic: evaluation NLL of SoCo's trained model and of per-matrix SVD-LLM (its start) at SoCo's budget, by
 * position bucket (0–127, 128–255, 256–511) in the protocol's windows of 512, and the perplexity in windows of
 * 256. Tests whether training on windows of 256 damages what only positions 256–511 use.
 *
 * Usage: deno run -A bench/soco_positions.ts [--removed 0.2] [--seqlen 256] [--samples 32] [--steps 100] [--out DIR]
 *
 * @module
 */
import { join } from "node:path";
import { arg, protocolData } from "./protocol.ts";
import { compressSoco } from "../src/pipeline/soco.ts";
import { compress } from "../src/pipeline/compress.ts";
import { loadModel } from "../src/model/load.ts";
import { windowNll } from "../src/eval/perplexity.ts";
import type { ModelWeights } from "../src/model/llama.ts";

const removed = Number(arg("removed", "0.2")), seqlen = Number(arg("seqlen", "256"));
const samples = Number(arg("samples", "32")), steps = Number(arg("steps", "100"));
const out = arg("out", "/tmp/socodiag");
const d = await protocolData("stories");
const calibration = { ids: d.calib, samples, seqlen, seed: 0 };

/** Mean NLL per position bucket of `ids` in consecutive windows of `win`. */
async function buckets(m: ModelWeights, ids: Int32Array, win: number): Promise<number[]> {
  const edges = [0, 128, 256, 512];
  const inputs: Int32Array[] = [], targets: Int32Array[] = [];
  for (let s = 0; s + 2 <= ids.length; s += win) {
    const w = ids.subarray(s, Math.min(s + win, ids.length));
    if (w.length < 2) break;
    const t = new Int32Array(w.length).fill(-1);
    t.set(w.subarray(1));
    inputs.push(w), targets.push(t);
  }
  const nll = await windowNll(m, inputs, targets);
  const sum = new Float64Array(3), cnt = new Float64Array(3);
  for (const v of nll) {
    for (let t = 0; t < v.length - 1; t++) {
      const b = edges.findIndex((e, i) => i > 0 && t < e) - 1;
      sum[b] += v[t], cnt[b]++;
    }
  }
  const all = sum.reduce((a, b) => a + b) / cnt.reduce((a, b) => a + b);
  return [...[0, 1, 2].map((b) => sum[b] / cnt[b]), all];
}

const t0 = performance.now();
const rep = await compressSoco(d.path, join(out, `soco-${seqlen}`), {
  ratio: { removed },
  calibration,
  steps,
  overwrite: true,
});
console.error(`soco ${((performance.now() - t0) / 1000).toFixed(0)} s, validation`, rep.validation);
await compress(d.path, join(out, `svdllm-${seqlen}`), {
  method: "svdllm",
  ratio: { kept: rep.budget.target / rep.params.linears.before },
  allocation: "global",
  calibration,
  overwrite: true,
});
for (const name of [`soco-${seqlen}`, `svdllm-${seqlen}`]) {
  const m = await loadModel(join(out, name));
  const b512 = await buckets(m, d.evalIds, 512), b256 = await buckets(m, d.evalIds, 256);
  console.log(
    `${name}: win512 NLL by bucket 0–127 / 128–255 / 256–511 = ${
      b512.slice(0, 3).map((x) => x.toFixed(3)).join(" / ")
    }` +
      ` ppl512 ${Math.exp(b512[3]).toFixed(2)}; win256 ppl ${Math.exp(b256[3]).toFixed(2)}`,
  );
  await m.close();
}
