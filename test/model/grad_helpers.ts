/** Shared by the gradient checks: random float64 models of any small shape, finite differences, errors. */
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { createRng, type Rng } from "../../src/linalg/random.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";
import type { GradBlock, GradModel } from "../../src/model/backward.ts";
import type { GradHead, GradLinear } from "../../src/model/backward_ops.ts";
import type { LlamaSpec } from "../../src/model/spec.ts";

export type M64 = Matrix<Float64Array>;

/** A rows×cols matrix of N(0, scale²) values. */
export function rand64(rows: number, cols: number, rng: Rng, scale = 1, offset = 0): M64 {
  const data = new Float64Array(rows * cols);
  for (let i = 0; i < data.length; i++) data[i] = offset + scale * rng.normal();
  return { rows, cols, data };
}

/** The small shapes the checks draw: GQA groups, odd widths, both RoPE styles, optional window and biases. */
export interface SpecShape {
  kvHeads: number;
  group: number;
  halfHead: number;
  hidden: number;
  inter: number;
  vocab: number;
  layers: number;
  style: "halves" | "interleaved";
  slidingWindow?: number;
  bias: boolean;
}

export function specOf(s: SpecShape): LlamaSpec {
  return {
    architecture: "llama",
    hiddenSize: s.hidden,
    intermediateSize: s.inter,
    numLayers: s.layers,
    numHeads: s.kvHeads * s.group,
    numKvHeads: s.kvHeads,
    headDim: 2 * s.halfHead,
    vocabSize: s.vocab,
    rmsNormEps: 1e-5,
    ropeTheta: 100, // a small base turns the angles fast enough for a few positions to matter
    ropeStyle: s.style,
    maxPositions: 16,
    slidingWindow: s.slidingWindow,
    tieWordEmbeddings: false,
    attentionBias: s.bias,
    bosTokenId: 1,
    eosTokenId: 2,
  };
}

export const specShape: fc.Arbitrary<SpecShape> = fc.record({
  kvHeads: fc.integer({ min: 1, max: 2 }),
  group: fc.integer({ min: 1, max: 3 }),
  halfHead: fc.integer({ min: 1, max: 3 }),
  hidden: fc.integer({ min: 3, max: 9 }),
  inter: fc.integer({ min: 3, max: 11 }),
  vocab: fc.integer({ min: 5, max: 13 }),
  layers: fc.integer({ min: 1, max: 2 }),
  style: fc.constantFrom("halves" as const, "interleaved" as const),
  slidingWindow: fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined }),
  bias: fc.boolean(),
});

function randLinear(
  out: number,
  inp: number,
  rng: Rng,
  lowrank: boolean,
  bias: boolean,
): GradLinear<Float64Array> {
  const b = bias ? rand64(1, out, rng, 0.1).data : undefined;
  if (!lowrank) return { kind: "dense", weight: rand64(out, inp, rng, 1 / Math.sqrt(inp)), bias: b };
  const r = Math.max(1, Math.min(out, inp) - 1);
  return {
    kind: "lowrank",
    a: rand64(out, r, rng, 1 / Math.sqrt(r)),
    b: rand64(r, inp, rng, 1 / Math.sqrt(inp)),
    bias: b,
  };
}

/** A random float64 block; `lowrank` makes every other linear A·B. */
export function randomBlock64(spec: LlamaSpec, rng: Rng, lowrank = false): GradBlock<Float64Array> {
  const d = spec.hiddenSize, f = spec.intermediateSize;
  const q = spec.numHeads * spec.headDim, kv = spec.numKvHeads * spec.headDim, ab = spec.attentionBias;
  return {
    inputNorm: rand64(1, d, rng, 0.1, 1).data,
    q: randLinear(q, d, rng, lowrank, ab),
    k: randLinear(kv, d, rng, false, ab),
    v: randLinear(kv, d, rng, lowrank, ab),
    o: randLinear(d, q, rng, false, false),
    postNorm: rand64(1, d, rng, 0.1, 1).data,
    gate: randLinear(f, d, rng, lowrank, false),
    up: randLinear(f, d, rng, false, false),
    down: randLinear(d, f, rng, lowrank, false),
  };
}

/** A random float64 model of `spec` from `seed` (its head, then its blocks; `lowrank` as in {@link randomBlock64}). */
export function randomModel64(
  spec: LlamaSpec,
  seed: number,
  lowrank = false,
): GradModel<Float64Array> & { blocks: GradBlock<Float64Array>[] } {
  const rng = createRng(seed), head = randomHead64(spec, rng);
  const blocks = Array.from({ length: spec.numLayers }, () => randomBlock64(spec, rng, lowrank));
  return { spec, head, blocks, block: (i) => blocks[i] };
}

export function randomHead64(spec: LlamaSpec, rng: Rng): GradHead<Float64Array> {
  const d = spec.hiddenSize, V = spec.vocabSize;
  return {
    embed: rand64(V, d, rng),
    norm: rand64(1, d, rng, 0.1, 1).data,
    lmHead: rand64(V, d, rng, 1 / Math.sqrt(d)),
  };
}

export function randomWindows(batch: number, seq: number, vocab: number, seed: number): Int32Array[] {
  const rng = createRng(seed);
  return Array.from({ length: batch }, () => Int32Array.from({ length: seq }, () => rng.nextU32() % vocab));
}

/** Σ a ⊙ b in float64. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Central differences of f with respect to every element of `data` (perturbed in place, then restored). */
export function fdGrad(f: () => number, data: Float64Array, h = 1e-6): Float64Array {
  const g = new Float64Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    data[i] = v + h;
    const up = f();
    data[i] = v - h;
    const down = f();
    data[i] = v;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

/**
 * Central difference (f(p + h·dir) − f(p − h·dir)) / 2h of f along direction `dir` of `data` (perturbed in
 * place, then restored; f may be async).
 */
export async function fdDirectional(
  f: () => number | Promise<number>,
  data: Float64Array,
  dir: ArrayLike<number>,
  h = 1e-6,
): Promise<number> {
  const v = data.slice();
  for (let i = 0; i < data.length; i++) data[i] = v[i] + h * dir[i];
  const up = await f();
  for (let i = 0; i < data.length; i++) data[i] = v[i] - h * dir[i];
  const down = await f();
  data.set(v);
  return (up - down) / (2 * h);
}

/**
 * FD-check gradient `grad` of the loss `f` in `param` (what it claims is df/dparam) along a direction drawn
 * from `rng` (N(0, 1) per element): |fd − grad·dir| ≤ tol · max(1e-3, |fd|), the floor keeping a near-zero
 * derivative's round-off from counting. `what` names the parameter in the failure message.
 */
export async function assertDirectionalGrad(
  what: string,
  f: () => number | Promise<number>,
  param: Float64Array,
  grad: ArrayLike<number>,
  rng: Rng,
  tol: number,
): Promise<void> {
  const dir = rand64(1, param.length, rng).data;
  const fd = await fdDirectional(f, param, dir), an = dot(grad, dir);
  assert.ok(Math.abs(fd - an) <= tol * Math.max(1e-3, Math.abs(fd)), `${what}: ${an} vs fd ${fd}`);
}

/** ‖a − b‖ / max(‖a‖, ‖b‖, floor): the floor keeps round-off of near-zero gradients (~1e-10) from counting. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-4): number {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    na += a[i] ** 2;
    nb += b[i] ** 2;
  }
  return Math.sqrt(d) / Math.max(Math.sqrt(na), Math.sqrt(nb), floor);
}
