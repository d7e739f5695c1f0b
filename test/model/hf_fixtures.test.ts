/**
 * The forward pass against the real Hugging Face classes on architectures other than the bundled models:
 * LLaMA with GQA, LLaMA with tied embeddings (no lm_head tensor), Qwen2 (q/k/v biases), Mistral
 * (head_dim ≠ hidden/heads), RoPE scaling "llama3" and "linear", and a checkpoint in three safetensors shards
 * with model.safetensors.index.json. The fixtures in test/fixtures/models/ and their reference.json (float64 outputs
 * of transformers' own forward) come from tools/make_hf_fixtures.py; no Python runs here.
 *
 * Each fixture is also checked to be sensitive: the same weights with RoPE pairs interleaved, another θ, no RoPE
 * scaling or the biases dropped must miss the reference by far more than the tolerance, so a loader that gets one of them
 * wrong cannot pass.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { loadModel } from "../../src/model/load.ts";
import type { ModelWeights } from "../../src/model/llama.ts";
import type { LlamaSpec } from "../../src/model/spec.ts";
import type { TensorReader } from "../../src/io/tensor_reader.ts";
import { perplexity, windowNll } from "../../src/eval/perplexity.ts";
import { generate, nextTokenLogits } from "../../src/eval/generate.ts";
import {
  LOGIT_TOL,
  logitError,
  maxAbsDiff,
  MUTATION_MIN,
  NLL_TOL,
  type Reference,
  ROOT,
} from "./_hf_fixtures.ts";

/** What the spec must say for each fixture (known answers, written from the generator's settings). */
const EXPECTED: Record<string, Partial<LlamaSpec>> = {
  "llama-gqa-tiny": {
    hiddenSize: 64,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    vocabSize: 101,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    tieWordEmbeddings: false,
    attentionBias: false,
  },
  "llama-tied-tiny": {
    hiddenSize: 48,
    numHeads: 4,
    numKvHeads: 4,
    headDim: 12,
    vocabSize: 113,
    ropeTheta: 500000,
    rmsNormEps: 1e-6,
    tieWordEmbeddings: true,
    attentionBias: false,
  },
  "qwen2-tiny": {
    hiddenSize: 64,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    vocabSize: 127,
    ropeTheta: 1000000,
    rmsNormEps: 1e-6,
    tieWordEmbeddings: false,
    attentionBias: true,
  },
  "llama-sharded-tiny": {
    hiddenSize: 32,
    numHeads: 2,
    numKvHeads: 2,
    headDim: 16,
    vocabSize: 97,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    tieWordEmbeddings: false,
    attentionBias: false,
  },
  "llama3-rope-tiny": {
    hiddenSize: 32,
    numHeads: 2,
    numKvHeads: 1,
    headDim: 16,
    vocabSize: 97,
    ropeTheta: 10000,
    ropeScaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 32 },
    maxPositions: 256,
    tieWordEmbeddings: false,
  },
  "llama-linear-rope-tiny": {
    hiddenSize: 32,
    numHeads: 2,
    numKvHeads: 2,
    headDim: 16,
    vocabSize: 97,
    ropeTheta: 10000,
    ropeScaling: { type: "linear", factor: 4 },
    tieWordEmbeddings: false,
  },
  "mistral-tiny": {
    hiddenSize: 48,
    numHeads: 4,
    numKvHeads: 1,
    headDim: 16,
    vocabSize: 97,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    tieWordEmbeddings: false,
    attentionBias: false,
  },
};

/** The same tensors with every `.bias` hidden, as a loader that ignores biases would see them. */
function withoutBiases(r: TensorReader): TensorReader {
  const keep = (n: string) => !n.endsWith(".bias");
  return {
    name: `${r.name} (biases hidden)`,
    metadata: r.metadata,
    tensors: () => r.tensors().filter((t) => keep(t.name)),
    has: (n) => keep(n) && r.has(n),
    info: (n) => r.info(n),
    read: (n) => r.read(n),
    close: () => Promise.resolve(),
  };
}

for (const name of Object.keys(EXPECTED)) {
  const dir = ROOT + name;
  const ref: Reference = JSON.parse(readFileSync(`${dir}/reference.json`, "utf8"));
  const seqs = ref.sequences.map((s) => Int32Array.from(s.input_ids));

  test(`${name}: loadModel reads the Hugging Face ${ref.class} folder into the expected spec`, async () => {
    const m = await loadModel(dir);
    try {
      for (const [k, v] of Object.entries(EXPECTED[name])) {
        assert.deepEqual(m.spec[k as keyof LlamaSpec], v, `spec.${k}`);
      }
      assert.equal(m.spec.ropeStyle, "halves");
      assert.equal(m.reader.has("lm_head.weight"), !m.spec.tieWordEmbeddings, "lm_head present iff untied");
      // embed, final norm, lm_head unless tied; per block 2 norms + 7 linears, + 3 biases for Qwen2
      const L = m.spec.numLayers;
      const count = 3 - (m.spec.tieWordEmbeddings ? 1 : 0) + 9 * L + (m.spec.attentionBias ? 3 * L : 0);
      assert.equal(m.reader.tensors().length, count, "tensor count (every shard read)");
      for (const s of ref.sequences) {
        assert.deepEqual(Array.from(m.tokenizer.encode(s.text, { bos: true })), s.input_ids, "tokenizer ids");
      }
    } finally {
      await m.close();
    }
  });

  test(`${name}: logits of the first four and the last position match transformers (batched windows)`, async () => {
    const m = await loadModel(dir);
    try {
      const err = await logitError(m, ref);
      assert.ok(err < LOGIT_TOL, `max |logit - reference| = ${err}`);
      // one window at a time through the no-cache next-token path: the last row alone
      for (const [b, s] of ref.sequences.entries()) {
        assert.equal(s.logits_positions.at(-1), seqs[b].length - 1, "the reference keeps the last position");
        const last = await nextTokenLogits(m, seqs[b]);
        const e = maxAbsDiff(last, s.logits[s.logits.length - 1]);
        assert.ok(e < LOGIT_TOL, `sequence ${b}: last-position logits off by ${e}`);
      }
    } finally {
      await m.close();
    }
  });

  test(`${name}: per-position NLL, mean NLL and windowed perplexity match transformers`, async () => {
    const m = await loadModel(dir);
    try {
      const targets = seqs.map((ids) => {
        const t = new Int32Array(ids.length).fill(-1);
        t.set(ids.subarray(1));
        return t;
      });
      const nll = await windowNll(m, seqs, targets);
      for (const [b, s] of ref.sequences.entries()) {
        const e = maxAbsDiff(nll[b].subarray(0, s.nll.length), s.nll);
        assert.ok(e < 1e-4, `sequence ${b}: per-position NLL off by ${e}`);
        assert.ok(Number.isNaN(nll[b][s.nll.length]), "the last position has no target");
        // one whole sequence = one window of the papers' protocol
        const r = await perplexity(m, seqs[b], { window: seqs[b].length });
        assert.equal(r.predicted, s.nll.length);
        assert.ok(Math.abs(r.meanNll - s.mean_nll) < NLL_TOL, `sequence ${b}: mean NLL ${r.meanNll}`);
      }
      // windows of 8 over the concatenated stream, with a last partial window of 2
      const w = ref.windowed;
      const r = await perplexity(m, Int32Array.from(w.input_ids), { window: w.window });
      assert.equal(r.predicted, w.predicted, "predicted positions");
      assert.equal(r.nonFinite, 0);
      assert.ok(
        Math.abs(r.meanNll - w.mean_nll) < NLL_TOL,
        `windowed mean NLL ${r.meanNll} vs ${w.mean_nll}`,
      );
      assert.ok(Math.abs(r.ppl - Math.exp(w.mean_nll)) < 1e-4 * Math.exp(w.mean_nll), "ppl = exp(mean NLL)");
    } finally {
      await m.close();
    }
  });

  test(`${name}: greedy continuation (KV-cached) equals transformers' argmax path`, async () => {
    const m = await loadModel(dir);
    try {
      for (const [b, s] of ref.sequences.entries()) {
        const got = await generate(m, seqs[b], s.greedy_next.length, { stopAtEos: false });
        assert.deepEqual(Array.from(got), s.greedy_next, `sequence ${b}`);
      }
    } finally {
      await m.close();
    }
  });

  test(`${name}: the fixture detects wrong RoPE pairing, θ, scaling and (Qwen2) dropped biases`, async () => {
    const m = await loadModel(dir);
    try {
      const mutants: [string, ModelWeights][] = [
        ["interleaved RoPE", { spec: { ...m.spec, ropeStyle: "interleaved" }, reader: m.reader }],
        ["θ / 10", { spec: { ...m.spec, ropeTheta: m.spec.ropeTheta / 10 }, reader: m.reader }],
      ];
      if (m.spec.ropeScaling) {
        mutants.push(["plain RoPE", { spec: { ...m.spec, ropeScaling: undefined }, reader: m.reader }]);
        const r = m.spec.ropeScaling;
        if (r.type === "llama3") {
          // moves the pair of wavelength 19.9 from the smoothed band into the divided one
          const lowFreqFactor = 2 * r.lowFreqFactor;
          mutants.push(["llama3 band edge", {
            spec: { ...m.spec, ropeScaling: { ...r, lowFreqFactor } },
            reader: m.reader,
          }]);
        }
      }
      if (m.spec.attentionBias) {
        mutants.push(["no biases", {
          spec: { ...m.spec, attentionBias: false },
          reader: withoutBiases(m.reader),
        }]);
      }
      for (const [what, mutant] of mutants) {
        const err = await logitError(mutant, ref);
        assert.ok(err > MUTATION_MIN, `${what}: logits moved only ${err}, the fixture would not notice`);
      }
    } finally {
      await m.close();
    }
  });
}
