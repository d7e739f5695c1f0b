// Run by onnx_node.test.ts under Node: an exported model in onnxruntime-node (CPU), one sequence, full pass
// and one cached step. Usage: node _ort_node.mjs MODEL.onnx IDS_JSON OUT.bin — OUT.bin receives the full
// pass's logits (seq×vocab float32) followed by the cached step's (vocab).
import * as ort from "onnxruntime-node";
import { readFileSync, writeFileSync } from "node:fs";

const [model, idsJson, out] = process.argv.slice(2);
const { ids, layers, kvHeads, headDim } = JSON.parse(readFileSync(idsJson, "utf8"));
const s = await ort.InferenceSession.create(model, { executionProviders: ["cpu"], intraOpNumThreads: 1 });
const i64 = (a) => BigInt64Array.from(a, (v) => BigInt(v));
const feeds = (part, past, kv) => {
  const f = {
    input_ids: new ort.Tensor("int64", i64(part), [1, part.length]),
    attention_mask: new ort.Tensor("int64", new BigInt64Array(past + part.length).fill(1n), [
      1,
      past + part.length,
    ]),
    position_ids: new ort.Tensor("int64", i64(part.map((_, i) => past + i)), [1, part.length]),
  };
  for (let i = 0; i < layers; i++) {
    for (const k of ["key", "value"]) {
      f[`past_key_values.${i}.${k}`] = kv?.[`present.${i}.${k}`] ??
        new ort.Tensor("float32", new Float32Array(0), [1, kvHeads, 0, headDim]);
    }
  }
  return f;
};
const full = await s.run(feeds(ids, 0));
const n = ids.length - 1;
const pre = await s.run(feeds(ids.slice(0, n), 0));
const step = await s.run(feeds(ids.slice(n), n, pre));
const a = full.logits.data, b = step.logits.data, all = new Float32Array(a.length + b.length);
all.set(a);
all.set(b, a.length);
writeFileSync(out, new Uint8Array(all.buffer));
