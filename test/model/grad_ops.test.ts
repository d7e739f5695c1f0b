/**
 * Every op's VJP against central finite differences in float64, over small random shapes (fast-check): the
 * scalar L = Σ R ⊙ op(inputs) for a random R, whose gradient is the VJP of R. Also the head's loss against
 * the forward pass's own `tokenNll`, and the KL term against its definition.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { createRng } from "../../src/linalg/random.ts";
import {
  attentionBackward,
  attentionForward,
  embeddingBackward,
  embeddingForward,
  type GradLinear,
  headLossBackward,
  linearBackward,
  linearForward,
  rmsnormBackward,
  rmsnormForward,
  ropeBackward,
  ropeForward,
  swigluBackward,
  swigluForward,
} from "../../src/model/backward_ops.ts";
import { tokenNll } from "../../src/model/llama.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";
import {
  dot,
  fdGrad,
  type M64,
  rand64,
  randomHead64,
  randomWindows,
  relErr,
  specOf,
  specShape,
} from "./grad_helpers.ts";

const TOL = 1e-5; // float64 central differences (h = 1e-6) agree to ~1e-9 on O(1) gradients; 1e-5 leaves room
const RUNS = { numRuns: 25 };

test("grad: rmsnorm dx and dw", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 9 }),
      fc.nat(),
      (rows, cols, seed) => {
        const rng = createRng(seed);
        const x = rand64(rows, cols, rng), w = rand64(1, cols, rng, 0.5, 1).data, r = rand64(rows, cols, rng);
        const L = () => dot(rmsnormForward(x, w, 1e-5).data, r.data);
        const dw = new Float64Array(cols);
        const dx = rmsnormBackward(x, w, 1e-5, r, dw);
        assert.ok(relErr(dx.data, fdGrad(L, x.data)) < TOL);
        assert.ok(relErr(dw, fdGrad(L, w)) < TOL);
      },
    ),
    RUNS,
  );
});

test("grad: linear dense and low-rank: dx, dW, dA, dB, dbias", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 7 }),
      fc.integer({ min: 1, max: 7 }),
      fc.integer({ min: 1, max: 4 }),
      fc.boolean(),
      fc.nat(),
      (rows, inp, out, rank, bias, seed) => {
        const rng = createRng(seed);
        const x = rand64(rows, inp, rng), r = rand64(rows, out, rng);
        const b = bias ? rand64(1, out, rng).data : undefined;
        const lins: GradLinear<Float64Array>[] = [
          { kind: "dense", weight: rand64(out, inp, rng), bias: b },
          { kind: "lowrank", a: rand64(out, rank, rng), b: rand64(rank, inp, rng), bias: b },
        ];
        for (const lin of lins) {
          const L = () => dot(linearForward(lin, x).data, r.data);
          const { dx, grads } = linearBackward(lin, x, r, true);
          assert.ok(relErr(dx.data, fdGrad(L, x.data)) < TOL);
          if (lin.kind === "dense") assert.ok(relErr(grads!.weight!.data, fdGrad(L, lin.weight.data)) < TOL);
          else {
            assert.ok(relErr(grads!.a!.data, fdGrad(L, lin.a.data)) < TOL);
            assert.ok(relErr(grads!.b!.data, fdGrad(L, lin.b.data)) < TOL);
          }
          if (b) assert.ok(relErr(grads!.bias!, fdGrad(L, b)) < TOL);
          else assert.equal(grads!.bias, undefined);
        }
      },
    ),
    RUNS,
  );
});

test("grad: rope, both conventions, is a rotation whose VJP is its inverse", () => {
  fc.assert(
    fc.property(
      specShape,
      fc.integer({ min: 1, max: 2 }),
      fc.integer({ min: 1, max: 5 }),
      fc.nat(),
      (s, batch, seq, seed) => {
        const spec = specOf(s), rng = createRng(seed), heads = spec.numHeads, w = heads * spec.headDim;
        const x = rand64(batch * seq, w, rng), r = rand64(batch * seq, w, rng);
        const L = () => dot(ropeForward(x, heads, spec, seq).data, r.data);
        assert.ok(relErr(ropeBackward(r, heads, spec, seq).data, fdGrad(L, x.data)) < TOL);
        // a rotation keeps norms: ‖rope(x)‖ = ‖x‖ (to the float32 tables' cos² + sin² = 1 ± 1e-7)
        const y = ropeForward(x, heads, spec, seq);
        assert.ok(Math.abs(dot(y.data, y.data) - dot(x.data, x.data)) < 1e-6 * dot(x.data, x.data));
      },
    ),
    RUNS,
  );
});

test("grad: causal GQA attention dq, dk, dv (sliding window sometimes)", () => {
  fc.assert(
    fc.property(
      specShape,
      fc.integer({ min: 1, max: 2 }),
      fc.integer({ min: 1, max: 5 }),
      fc.nat(),
      (s, batch, seq, seed) => {
        const spec = specOf(s), rng = createRng(seed), T = batch * seq;
        const q = rand64(T, spec.numHeads * spec.headDim, rng),
          r = rand64(T, spec.numHeads * spec.headDim, rng);
        const k = rand64(T, spec.numKvHeads * spec.headDim, rng),
          v = rand64(T, spec.numKvHeads * spec.headDim, rng);
        const layout = { batch, seq };
        const L = () => dot(attentionForward(spec, q, k, v, layout).data, r.data);
        const g = attentionBackward(spec, q, k, v, r, layout);
        assert.ok(relErr(g.dq.data, fdGrad(L, q.data)) < TOL);
        assert.ok(relErr(g.dk.data, fdGrad(L, k.data)) < TOL);
        assert.ok(relErr(g.dv.data, fdGrad(L, v.data)) < TOL);
      },
    ),
    RUNS,
  );
});

test("grad: attention is causal: the first row of each window is its own value", () => {
  const spec = specOf({
    kvHeads: 2,
    group: 2,
    halfHead: 2,
    hidden: 4,
    inter: 4,
    vocab: 5,
    layers: 1,
    style: "halves",
    bias: false,
  });
  const rng = createRng(3), seq = 4, T = 2 * seq;
  const q = rand64(T, 16, rng), k = rand64(T, 8, rng), v = rand64(T, 8, rng);
  const out = attentionForward(spec, q, k, v, { batch: 2, seq });
  for (const row of [0, seq]) {
    for (let h = 0; h < 4; h++) {
      for (let j = 0; j < 4; j++) {
        assert.ok(Math.abs(out.data[row * 16 + h * 4 + j] - v.data[row * 8 + (h >> 1) * 4 + j]) < 1e-12);
      }
    }
  }
});

test("grad: swiglu dg and du", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 9 }),
      fc.nat(),
      (rows, cols, seed) => {
        const rng = createRng(seed);
        const g = rand64(rows, cols, rng, 2), u = rand64(rows, cols, rng), r = rand64(rows, cols, rng);
        const L = () => dot(swigluForward(g, u).data, r.data);
        const { dg, du } = swigluBackward(g, u, r);
        assert.ok(relErr(dg.data, fdGrad(L, g.data)) < TOL);
        assert.ok(relErr(du.data, fdGrad(L, u.data)) < TOL);
      },
    ),
    RUNS,
  );
});

test("grad: embedding scatter-adds repeated ids", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 2, max: 7 }),
      fc.nat(),
      (batch, seq, vocab, seed) => {
        const rng = createRng(seed),
          table = rand64(vocab, 3, rng),
          windows = randomWindows(batch, seq, vocab, seed);
        const r = rand64(batch * seq, 3, rng);
        const L = () => dot(embeddingForward(table, windows).data, r.data);
        assert.ok(relErr(embeddingBackward(r, windows, vocab).data, fdGrad(L, table.data)) < TOL);
      },
    ),
    RUNS,
  );
  assert.throws(
    () => embeddingForward(rand64(4, 2, createRng(1)), [Int32Array.of(1, 4)]),
    /token id 4 outside/,
  );
});

test("grad: cross-entropy and KL at the head, chunked over rows", () => {
  fc.assert(
    fc.property(
      specShape,
      fc.integer({ min: 1, max: 7 }),
      fc.boolean(),
      fc.nat(),
      (s, rows, withRef, seed) => {
        const spec = specOf(s), rng = createRng(seed), head = randomHead64(spec, rng), V = spec.vocabSize;
        const h = rand64(rows, spec.hiddenSize, rng, 2);
        const targets = Int32Array.from({ length: rows }, (_, i) => (i % 3 === 2 ? -1 : rng.nextU32() % V));
        const ref = rand64(rows, V, rng, 2);
        const opts = withRef
          ? {
            reference: (r0: number, n: number): M64 => ({
              rows: n,
              cols: V,
              data: ref.data.subarray(r0 * V, (r0 + n) * V),
            }),
            klWeight: 0.7,
            scale: 0.5,
          }
          : { scale: 0.5 };
        const L = () => {
          const o = headLossBackward(spec, head, h, targets, opts);
          return 0.5 * (o.nllSum + (withRef ? 0.7 * o.klSum : 0));
        };
        const { dh, count, klSum, nllSum } = headLossBackward(spec, head, h, targets, opts);
        // chunk by chunk (2 rows at a time) gives the same loss and gradient
        const chunked = headLossBackward(spec, head, h, targets, { ...opts, chunkRows: 2 });
        assert.ok(Math.abs(chunked.nllSum - nllSum) <= 1e-12 * Math.max(1, nllSum));
        assert.ok(relErr(chunked.dh.data, dh.data) < 1e-12);
        assert.equal(count, targets.filter((t) => t >= 0).length);
        assert.ok(relErr(dh.data, fdGrad(L, h.data)) < TOL);
        if (withRef) assert.ok(klSum >= -1e-12); // KL ≥ 0
      },
    ),
    RUNS,
  );
});

test("grad: the head's NLL equals tokenNll of the forward pass, and KL to itself is 0", () => {
  const spec = specOf({
    kvHeads: 1,
    group: 1,
    halfHead: 1,
    hidden: 6,
    inter: 4,
    vocab: 11,
    layers: 1,
    style: "halves",
    bias: false,
  });
  const rng = createRng(5), h64 = rand64(9, 6, rng, 2), head64 = randomHead64(spec, rng);
  const f32 = (m: M64): Matrix => ({ rows: m.rows, cols: m.cols, data: Float32Array.from(m.data) });
  const head = { embed: f32(head64.embed), norm: Float32Array.from(head64.norm), lmHead: f32(head64.lmHead) };
  const targets = Int32Array.from({ length: 9 }, (_, i) => (i * 7) % 11);
  const h = f32(h64);
  const ref = tokenNll(spec, head, h, targets).reduce((a, b) => a + b, 0);
  const got = headLossBackward(spec, head, h, targets).nllSum;
  assert.ok(Math.abs(got - ref) < 1e-5 * Math.abs(ref), `${got} vs ${ref}`);
  // the reference = the model's own logits: KL 0 and the KL gradient vanishes
  const own = (r0: number, n: number) => {
    const rows = { rows: n, cols: 6, data: h64.data.subarray(r0 * 6, (r0 + n) * 6) };
    const normed = rmsnormForward(rows, head64.norm, spec.rmsNormEps);
    return linearForward({ kind: "dense", weight: head64.lmHead }, normed);
  };
  const o = headLossBackward(spec, head64, h64, targets, { reference: own, nllWeight: 0 });
  assert.ok(Math.abs(o.klSum) < 1e-12);
  assert.ok(o.dh.data.every((v) => Math.abs(v) < 1e-12));
});
