// Shared helpers of the ONNX export tests: build a model's ONNX bytes in memory, run them in onnxruntime-web
// (wasm, one thread, no network), and our own forward pass for comparison.
import * as ort from "onnxruntime-web";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { encode } from "../../src/export/protobuf.ts";
import { onnxModel } from "../../src/export/onnx.ts";
import type { ExportDtype } from "../../src/export/graph.ts";
import { finalLogits, forwardHidden, loadHead, logSumExp, type ModelWeights } from "../../src/model/llama.ts";

ort.env.wasm.numThreads = 1;

const ROOT = new URL("../../", import.meta.url).pathname;
/** The shared folder: beside the repository (../shared), or beside its worktree folder (../../shared). */
export const SHARED_DIR =
  [join(ROOT, "../shared"), join(ROOT, "../../shared")].find((d) =>
    existsSync(join(d, "models/tinylm-brown/model.safetensors"))
  ) ?? join(ROOT, "../shared");
/** tinylm-brown (skipped when absent). */
export const BROWN = join(SHARED_DIR, "models/tinylm-brown");
/** Its validation text. */
export const BROWN_VALID = join(SHARED_DIR, "data/brown-valid.txt");
ort.env.logLevel = "error";

export { ort };

/** The ONNX model of `model` as one byte array. */
export async function onnxBytes(
  model: ModelWeights,
  dtype: ExportDtype = "f32",
  kvCache: "full" | "latent" = "full",
): Promise<Uint8Array> {
  return await encode(onnxModel(model, { dtype, externalData: false, kvCache }).proto);
}

/** A session over ONNX bytes (onnxruntime-web, wasm backend). */
export async function session(bytes: Uint8Array): Promise<ort.InferenceSession> {
  return await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
}

/** Inputs feeding `ids` (one sequence) after `past` cached positions, with the given past tensors. */
export function feeds(
  model: ModelWeights,
  ids: Int32Array,
  past: number,
  pastKv?: Record<string, ort.Tensor>,
  cacheShape: (layer: number, kind: "key" | "value") => [number, number] = () => [
    model.spec.numKvHeads,
    model.spec.headDim,
  ],
): Record<string, ort.Tensor> {
  const { spec } = model, n = ids.length;
  const f: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor("int64", BigInt64Array.from(ids, (v) => BigInt(v)), [1, n]),
    attention_mask: new ort.Tensor("int64", new BigInt64Array(past + n).fill(1n), [1, past + n]),
    position_ids: new ort.Tensor("int64", BigInt64Array.from({ length: n }, (_, i) => BigInt(past + i)), [
      1,
      n,
    ]),
  };
  const empty = (i: number, kind: "key" | "value") => {
    const [heads, width] = cacheShape(i, kind);
    return [1, heads, 0, width];
  };
  for (let i = 0; i < spec.numLayers; i++) {
    for (const kv of ["key", "value"]) {
      f[`past_key_values.${i}.${kv}`] = pastKv?.[`present.${i}.${kv}`] ??
        new ort.Tensor("float32", new Float32Array(0), empty(i, kv as "key" | "value"));
    }
  }
  return f;
}

/** Our logits for every position of `ids` (seq×vocab), by the full forward pass. */
export async function ourLogits(model: ModelWeights, ids: Int32Array): Promise<Float32Array> {
  const h = await forwardHidden(model, [ids]);
  return finalLogits(model.spec, await loadHead(model.reader, model.spec), h).data;
}

/** Largest |a - b|. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return Number.isNaN(m) ? Infinity : m;
}

/**
 * Perplexity of `ids` through an ONNX session in the papers' protocol (as `perplexity()`): consecutive
 * windows of `window` tokens each run from position 0, a last window of ≥ 2 tokens counts, NLL in float64.
 */
export async function onnxPerplexity(
  s: ort.InferenceSession,
  model: ModelWeights,
  ids: Int32Array,
  window: number,
): Promise<{ ppl: number; predicted: number }> {
  const V = model.spec.vocabSize;
  let nll = 0, n = 0;
  for (let w0 = 0; w0 + 1 < ids.length; w0 += window) {
    const win = ids.subarray(w0, Math.min(w0 + window, ids.length));
    const logits = (await s.run(feeds(model, win, 0))).logits.data as Float32Array;
    for (let t = 0; t + 1 < win.length; t++) {
      nll += logSumExp(logits, t * V, V) - logits[t * V + win[t + 1]];
      n++;
    }
  }
  return { ppl: Math.exp(nll / n), predicted: n };
}
