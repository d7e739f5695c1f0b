/**
 * The block as an interpreter of BLOCK_PROGRAM: its forward equals llama.ts's forwardBlock (an independent
 * implementation) in float32, and its backward — input gradient and every parameter gradient — equals
 * central finite differences in float64 over small random shapes (GQA, odd widths, both RoPE styles,
 * sliding windows, biases, low-rank linears).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { createRng } from "../../src/linalg/random.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";
import { blockBackward, blockForward, type BlockValues, type GradBlock } from "../../src/model/backward.ts";
import type { GradLinear } from "../../src/model/backward_ops.ts";
import { BLOCK_FIELD, forwardBlock, type LlamaBlock } from "../../src/model/llama.ts";
import { LINEAR_NAMES } from "../../src/model/names.ts";
import {
  assertDirectionalGrad,
  dot,
  fdGrad,
  type M64,
  rand64,
  randomBlock64,
  relErr,
  specOf,
  specShape,
} from "./grad_helpers.ts";

const TOL = 1e-5;

const f32 = (m: M64): Matrix => ({ rows: m.rows, cols: m.cols, data: Float32Array.from(m.data) });

function linear32(l: GradLinear<Float64Array>): LlamaBlock["q"] {
  const bias = l.bias ? Float32Array.from(l.bias) : undefined;
  return l.kind === "dense"
    ? { kind: "dense", weight: f32(l.weight), bias }
    : { kind: "lowrank", a: f32(l.a), b: f32(l.b), bias };
}

function block32(b: GradBlock<Float64Array>): LlamaBlock {
  return {
    inputNorm: Float32Array.from(b.inputNorm),
    q: linear32(b.q),
    k: linear32(b.k),
    v: linear32(b.v),
    o: linear32(b.o),
    postNorm: Float32Array.from(b.postNorm),
    gate: linear32(b.gate),
    up: linear32(b.up),
    down: linear32(b.down),
  };
}

test("grad: the interpreted block forward equals llama.ts's forwardBlock (float32)", () => {
  fc.assert(
    fc.property(
      specShape,
      fc.boolean(),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 9 }),
      fc.nat(),
      (s, lowrank, batch, seq, seed) => {
        const spec = specOf(s), rng = createRng(seed), b64 = randomBlock64(spec, rng, lowrank);
        const x = f32(rand64(batch * seq, spec.hiddenSize, rng));
        const layout = { batch, seq };
        const ours = blockForward(spec, block32(b64), x, layout).out!;
        const theirs = forwardBlock(spec, block32(b64), x, layout);
        assert.ok(relErr(ours.data, theirs.data) < 1e-5, `${relErr(ours.data, theirs.data)}`);
      },
    ),
    { numRuns: 40 },
  );
});

test("grad: block backward: dx and every parameter gradient against finite differences (float64)", async () => {
  await fc.assert(
    fc.asyncProperty(
      specShape,
      fc.boolean(),
      fc.integer({ min: 1, max: 2 }),
      fc.integer({ min: 1, max: 5 }),
      fc.nat(),
      async (s, lowrank, batch, seq, seed) => {
        const spec = specOf(s), rng = createRng(seed), block = randomBlock64(spec, rng, lowrank);
        const x = rand64(batch * seq, spec.hiddenSize, rng), r = rand64(batch * seq, spec.hiddenSize, rng);
        const layout = { batch, seq };
        const L = () => dot(blockForward(spec, block, x, layout, false).out!.data, r.data);
        const values: BlockValues<Float64Array> = blockForward(spec, block, x, layout);
        const seen: string[] = [];
        const { dx, grads } = blockBackward(spec, block, values, r, layout, {
          params: true,
          onLinear: (lin, xi, dy) => {
            seen.push(lin);
            const l = block[BLOCK_FIELD[lin]];
            const [out, inp] = l.kind === "dense" ? [l.weight.rows, l.weight.cols] : [l.a.rows, l.b.cols];
            assert.deepEqual([xi.rows, xi.cols, dy.rows, dy.cols], [batch * seq, inp, batch * seq, out]);
          },
        });
        assert.deepEqual([...seen].sort(), [...LINEAR_NAMES].sort());
        assert.ok(relErr(dx.data, fdGrad(L, x.data)) < TOL, "dx");
        // Norm weights element by element; each linear's parameters along a random direction.
        assert.ok(relErr(grads!.inputNorm, fdGrad(L, block.inputNorm)) < TOL, "inputNorm");
        assert.ok(relErr(grads!.postNorm, fdGrad(L, block.postNorm)) < TOL, "postNorm");
        for (const name of LINEAR_NAMES) {
          const lin = block[BLOCK_FIELD[name]], g = grads!.linears[name]!;
          const params: [Float64Array, Float64Array][] = lin.kind === "dense"
            ? [[lin.weight.data, g.weight!.data]]
            : [[lin.a.data, g.a!.data], [lin.b.data, g.b!.data]];
          if (lin.bias) params.push([lin.bias, g.bias!]);
          for (const [p, gp] of params) await assertDirectionalGrad(name, L, p, gp, rng, TOL);
        }
      },
    ),
    { numRuns: 30 },
  );
});

test("grad: the hook's dyᵀ·x is the dense weight gradient", () => {
  const spec = specOf({
    kvHeads: 2,
    group: 2,
    halfHead: 2,
    hidden: 7,
    inter: 9,
    vocab: 5,
    layers: 1,
    style: "interleaved",
    bias: true,
  });
  const rng = createRng(11), block = randomBlock64(spec, rng), layout = { batch: 2, seq: 4 };
  const x = rand64(8, 7, rng), r = rand64(8, 7, rng);
  const hooked = new Map<string, Float64Array>(), r0 = r.data.slice();
  const { grads } = blockBackward(spec, block, blockForward(spec, block, x, layout), r, layout, {
    params: true,
    onLinear: (lin, xi, dy) => {
      const out = dy.cols, inp = xi.cols, g = new Float64Array(out * inp);
      for (let t = 0; t < xi.rows; t++) {
        for (let i = 0; i < out; i++) {
          for (let j = 0; j < inp; j++) g[i * inp + j] += dy.data[t * out + i] * xi.data[t * inp + j];
        }
      }
      hooked.set(lin, g);
    },
  });
  for (const name of LINEAR_NAMES) {
    assert.ok(relErr(hooked.get(name)!, grads!.linears[name]!.weight!.data) < 1e-12);
  }
  assert.deepEqual(r.data, r0); // the caller's dOut is not written
});
