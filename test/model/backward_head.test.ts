/**
 * The head loss with lm_head multiplied a chunk of vocabulary rows at a time (so that the wasm kernels never
 * copy the whole lm_head) against one whole-vocabulary product: the same logits, loss, KL and dL/dh, on odd
 * sizes (fast-check), in float32 through the wasm kernels and in float64.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { gemmInto } from "../../src/linalg/gemm.ts";
import type { FloatArray, Matrix } from "../../src/linalg/matrix.ts";
import { createRng, type Rng } from "../../src/linalg/random.ts";
import {
  type GradHead,
  headBackward,
  headChunkRows,
  headLogitsInto,
  headLossBackward,
} from "../../src/model/backward_ops.ts";
import type { LlamaSpec } from "../../src/model/spec.ts";

// The head loss reads only the RMSNorm epsilon of the spec.
const spec = { rmsNormEps: 1e-5 } as LlamaSpec;

function rand<T extends FloatArray>(
  C: { new (n: number): T },
  rows: number,
  cols: number,
  rng: Rng,
): Matrix<T> {
  const data = new C(rows * cols);
  for (let i = 0; i < data.length; i++) data[i] = 2 * rng.next() - 1;
  return { rows, cols, data };
}

/** Largest |a − b| over max(1, max |b|). */
function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0, m = 1;
  for (let i = 0; i < b.length; i++) {
    e = Math.max(e, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return e / m;
}

const shape = fc.record({
  rows: fc.integer({ min: 1, max: 9 }),
  d: fc.integer({ min: 1, max: 37 }),
  vocab: fc.integer({ min: 2, max: 301 }),
  chunk: fc.integer({ min: 1, max: 310 }),
  withRef: fc.boolean(),
  seed: fc.nat(),
});

for (const [name, C, tol] of [["float32", Float32Array, 2e-6], ["float64", Float64Array, 1e-13]] as const) {
  test(`head loss (${name}): lm_head by vocabulary chunks equals one whole-vocabulary product`, () => {
    fc.assert(
      fc.property(shape, ({ rows, d, vocab, chunk, withRef, seed }) => {
        const rng = createRng(seed);
        const A = C as unknown as { new (n: number): Float32Array };
        const head: GradHead<Float32Array> = {
          embed: rand(A, vocab, d, rng),
          norm: rand(A, 1, d, rng).data,
          lmHead: rand(A, vocab, d, rng),
        };
        const h = rand(A, rows, d, rng);
        h.data.forEach((v, i) => (h.data[i] = 3 * v)); // logits of a few units: a spread-out softmax
        const targets = Int32Array.from(
          { length: rows },
          (_, i) => (i % 4 === 3 ? -1 : rng.nextU32() % vocab),
        );
        const ref = rand(A, rows, vocab, rng);
        const opts = {
          scale: 0.25,
          klWeight: 0.6,
          reference: withRef
            ? (r0: number, n: number) => ({
              rows: n,
              cols: vocab,
              data: ref.data.subarray(r0 * vocab, (r0 + n) * vocab),
            })
            : undefined,
        };
        const whole = headLossBackward(spec, head, h, targets, { ...opts, vocabRows: vocab });
        const chunked = headLossBackward(spec, head, h, targets, { ...opts, vocabRows: chunk, chunkRows: 3 });
        assert.equal(chunked.count, whole.count);
        assert.ok(Math.abs(chunked.nllSum - whole.nllSum) <= tol * Math.max(1, Math.abs(whole.nllSum)));
        assert.ok(Math.abs(chunked.klSum - whole.klSum) <= tol * Math.max(1, Math.abs(whole.klSum)));
        if (!withRef) assert.equal(chunked.klSum, 0);
        const e = maxRel(chunked.dh.data, whole.dh.data);
        assert.ok(e <= tol, `dh differs by ${e}`);
        // the loss moved: a wrong chunk would not give these
        assert.ok(whole.nllSum > 0);
      }),
      { numRuns: 60 },
    );
  });
}

test("head products by vocabulary chunks: logits and dx equal to one product's to rounding", () => {
  fc.assert(
    fc.property(shape, ({ rows, d, vocab, chunk, seed }) => {
      const rng = createRng(seed);
      const x = rand(Float32Array, rows * 7, d + 40, rng); // large enough for the wasm kernels
      const lm = rand(Float32Array, vocab, d + 40, rng);
      const one = gemmInto(x, lm, { rows: x.rows, cols: vocab, data: new Float32Array(x.rows * vocab) }, {
        transB: true,
      });
      const parts = headLogitsInto(x, lm, {
        rows: x.rows,
        cols: vocab,
        data: new Float32Array(x.rows * vocab),
      }, chunk);
      // the kernels may sum a small product (one chunk) in another order than a larger one: equal to rounding
      assert.ok(maxRel(parts.data, one.data) < 1e-6 * Math.sqrt(d + 40), `${maxRel(parts.data, one.data)}`);
      const g = rand(Float32Array, x.rows, vocab, rng);
      const dx1 = headBackward(g, lm, vocab), dx2 = headBackward(g, lm, chunk);
      assert.ok(maxRel(dx2.data, dx1.data) < 1e-5 * Math.sqrt(vocab));
    }),
    { numRuns: 40 },
  );
});

test("head chunk: at most about 2M values of lm_head per product, at least one row", () => {
  assert.equal(headChunkRows(1024), 2048);
  assert.equal(headChunkRows(1 << 22), 1);
  assert.ok(headChunkRows(7) * 7 <= 1 << 21);
});
