/**
 * Diagnostic: how far ASVD's per-channel scale s_j^α (α = 0.5, s_j = mean |x_j| over 32 × 256 calibration
 * tokens of the original model) is from a constant, per block and input (q/k/v share q's input, gate/up
 * share gate's). When the scale is nearly constant, W·S ≈ c·W and ASVD reduces to plain SVD.
 * Prints the coefficient of variation, max/median and p90/p10 of s^0.5 for stories260K and tinylm-brown.
 *
 * Usage: deno run -A tools/asvd_scale_spread.ts
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { loadModel } from "../src/model/load.ts";
import { loadBlock } from "../src/model/llama.ts";
import { EMBED } from "../src/model/names.ts";
import { embedWindows, runBlock } from "../src/pipeline/hidden.ts";
import { calibrationWindows } from "../src/calib/windows.ts";
for (
  const [name, path, text] of [
    ["stories260K", "models/stories260K/stories260K.gguf", "data/tinystories-valid.part1.txt"],
    ["tinylm-brown", "../shared/models/tinylm-brown", "../shared/data/brown-calib.txt"],
  ]
) {
  const m = await loadModel(path);
  let ids = m.tokenizer.encode(await readFile(text, "utf8"), { bos: true });
  if (name === "stories260K") ids = ids.slice(0, Math.floor(ids.length / 2));
  const ws = calibrationWindows(ids, { samples: 32, seqlen: 256, seed: 0, layout: "random" });
  const emb = await m.reader.read(EMBED);
  const h = embedWindows(m.spec, { rows: m.spec.vocabSize, cols: m.spec.hiddenSize, data: emb }, ws);
  const rows: string[] = [];
  for (let i = 0; i < m.spec.numLayers; i++) {
    const block = await loadBlock(m.reader, m.spec, i);
    const sums = new Map<string, Float64Array>();
    const count = new Map<string, number>();
    runBlock(m.spec, block, h, 4, (lin, x) => {
      let s = sums.get(lin);
      if (!s) sums.set(lin, s = new Float64Array(x.cols));
      for (let r = 0; r < x.rows; r++) {
        for (let c = 0; c < x.cols; c++) s[c] += Math.abs(x.data[r * x.cols + c]);
      }
      count.set(lin, (count.get(lin) ?? 0) + x.rows);
    }, "inplace");
    for (const [lin, s] of sums) {
      if (!["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"].includes(lin)) continue;
      const sc = Array.from(s, (v) => Math.sqrt(v / count.get(lin)!)).sort((a, b) => a - b);
      const mean = sc.reduce((a, b) => a + b) / sc.length;
      const cv = Math.sqrt(sc.reduce((a, b) => a + (b - mean) ** 2, 0) / sc.length) / mean;
      const ratio = sc[sc.length - 1] / sc[Math.floor(sc.length / 2)];
      rows.push(
        `${name} L${i} ${lin}: cv(s^.5) ${cv.toFixed(3)} max/median ${ratio.toFixed(2)} p90/p10 ${
          (sc[Math.floor(0.9 * sc.length)] / sc[Math.floor(0.1 * sc.length)]).toFixed(2)
        }`,
      );
    }
  }
  console.log(rows.join("\n"));
  await m.close();
}
