/** A tiny random LLaMA held in memory, as a TensorReader under Hugging Face names (test fixture). */
import type { TensorInfo, TensorReader } from "../../src/io/tensor_reader.ts";
import type { LlamaSpec } from "../../src/model/spec.ts";
import {
  EMBED,
  FINAL_NORM,
  inputNormName,
  LINEAR_NAMES,
  linearPrefix,
  LM_HEAD,
  postNormName,
} from "../../src/model/names.ts";
import { createRng } from "../../src/linalg/random.ts";

export const TINY: LlamaSpec = Object.freeze({
  architecture: "llama",
  hiddenSize: 16,
  intermediateSize: 24,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 4,
  vocabSize: 40,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeStyle: "halves",
  maxPositions: 64,
  tieWordEmbeddings: false,
  attentionBias: false,
  bosTokenId: 1,
  eosTokenId: 2,
});

/** An in-memory reader over named tensors. */
export function memoryReader(
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
  name = "memory",
): TensorReader {
  const infos: TensorInfo[] = [...tensors].map(([n, t]) => ({
    name: n,
    dtype: "F32",
    shape: t.shape,
    byteLength: t.data.length * 4,
  }));
  const byName = new Map(infos.map((i) => [i.name, i]));
  return {
    name,
    metadata: {},
    tensors: () => infos,
    has: (n) => tensors.has(n),
    info: (n) => {
      const i = byName.get(n);
      if (!i) throw new Error(`no tensor ${n}`);
      return i;
    },
    read: (n) => {
      const t = tensors.get(n);
      if (!t) return Promise.reject(new Error(`no tensor ${n}`));
      return Promise.resolve(Float32Array.from(t.data));
    },
    close: () => Promise.resolve(),
  };
}

/** Random weights for `spec` (normal, scaled 1/sqrt(in)); norms near 1. */
export function randomWeights(
  spec: LlamaSpec,
  seed = 1,
): Map<string, { shape: number[]; data: Float32Array }> {
  const rng = createRng(seed);
  const m = new Map<string, { shape: number[]; data: Float32Array }>();
  const rand = (shape: number[], scale: number, offset = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = offset + scale * rng.normal();
    m.set("", { shape, data });
    return { shape, data };
  };
  const d = spec.hiddenSize, f = spec.intermediateSize, q = spec.numHeads * spec.headDim;
  const kv = spec.numKvHeads * spec.headDim;
  m.set(EMBED, rand([spec.vocabSize, d], 1));
  m.set(FINAL_NORM, rand([d], 0.1, 1));
  m.set(LM_HEAD, rand([spec.vocabSize, d], 1 / Math.sqrt(d)));
  const shapes: Record<string, number[]> = {
    "self_attn.q_proj": [q, d],
    "self_attn.k_proj": [kv, d],
    "self_attn.v_proj": [kv, d],
    "self_attn.o_proj": [d, q],
    "mlp.gate_proj": [f, d],
    "mlp.up_proj": [f, d],
    "mlp.down_proj": [d, f],
  };
  for (let i = 0; i < spec.numLayers; i++) {
    m.set(inputNormName(i), rand([d], 0.1, 1));
    m.set(postNormName(i), rand([d], 0.1, 1));
    for (const name of LINEAR_NAMES) {
      const s = shapes[name];
      m.set(`${linearPrefix(i, name)}.weight`, rand(s, 1 / Math.sqrt(s[1])));
      if (spec.attentionBias && name.startsWith("self_attn.") && name !== "self_attn.o_proj") {
        m.set(`${linearPrefix(i, name)}.bias`, rand([s[0]], 0.1));
      }
    }
  }
  m.delete("");
  return m;
}
