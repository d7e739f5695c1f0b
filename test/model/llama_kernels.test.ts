/**
 * The block's kernels in src/linalg (fused causal GQA attention, SwiGLU, row log-sum-exp) against direct
 * float64 formulas, on the wasm kernels (threaded and not) and on the TypeScript path.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { type AttentionShape, causalAttention } from "../../src/linalg/attention.ts";
import { logSumExp, rowsLogSumExp } from "../../src/linalg/logsumexp.ts";
import { silu, siluMulInto } from "../../src/linalg/swiglu.ts";
import { initLinalg } from "../../src/linalg/backend.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";
import { createRng } from "../../src/linalg/random.ts";
import { ShapeError } from "../../src/errors.ts";

function randomMatrix(rows: number, cols: number, seed: number): Matrix {
  const rng = createRng(seed), data = new Float32Array(rows * cols);
  for (let i = 0; i < data.length; i++) data[i] = 2 * rng.normal();
  return { rows, cols, data };
}

/** Attention straight from its definition, in float64: query i of a window at position past+i. */
function naiveAttention(
  s: AttentionShape,
  q: Matrix,
  k: Matrix,
  v: Matrix,
  batch: number,
  nq: number,
  nk: number,
) {
  const { heads: H, kvHeads: KV, headDim: hd } = s,
    past = nk - nq,
    out = new Float64Array(batch * nq * H * hd);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / (H / KV));
      for (let i = 0; i < nq; i++) {
        const pos = past + i, first = Math.max(0, pos - (s.slidingWindow ?? Infinity) + 1);
        const w: number[] = [];
        for (let j = first; j <= pos; j++) {
          let dot = 0;
          for (let c = 0; c < hd; c++) {
            dot += q.data[(b * nq + i) * H * hd + h * hd + c] * k.data[(b * nk + j) * KV * hd + kh * hd + c];
          }
          w.push(dot / Math.sqrt(hd));
        }
        const max = Math.max(...w), e = w.map((x) => Math.exp(x - max)), sum = e.reduce((a, x) => a + x, 0);
        for (let c = 0; c < hd; c++) {
          let acc = 0;
          for (let j = first; j <= pos; j++) {
            acc += (e[j - first] / sum) * v.data[(b * nk + j) * KV * hd + kh * hd + c];
          }
          out[(b * nq + i) * H * hd + h * hd + c] = acc;
        }
      }
    }
  }
  return out;
}

const attentionCase = fc.record({
  kvHeads: fc.integer({ min: 1, max: 3 }),
  group: fc.integer({ min: 1, max: 3 }),
  headDim: fc.constantFrom(2, 4, 6, 8, 12, 36),
  batch: fc.integer({ min: 1, max: 3 }),
  nq: fc.integer({ min: 1, max: 11 }),
  past: fc.integer({ min: 0, max: 6 }),
  window: fc.option(fc.integer({ min: 1, max: 5 }), { nil: undefined }),
  seed: fc.nat({ max: 10_000 }),
});

/** Run on wasm (one thread), wasm on 2 worker threads, then the TypeScript path; restores one wasm thread. */
async function onEachBackend(run: (backend: string) => void): Promise<void> {
  try {
    for (const opts of [{ threads: 1 }, { threads: 2 }, { backend: "ts" as const }]) {
      const info = await initLinalg(opts);
      assert.equal(info.threads, opts.threads ?? 1, `threads: ${info.threadsNote}`);
      run(`${info.backend} on ${info.threads} thread(s)`);
    }
  } finally {
    await initLinalg({ backend: "auto", threads: 1 });
  }
}

test("attention: causal GQA attention (sliding window, cached past) equals its float64 definition", async () => {
  const cases = fc.sample(attentionCase, { numRuns: 60, seed: 42 });
  await onEachBackend((backend) => {
    for (const c of cases) {
      const H = c.kvHeads * c.group, nk = c.nq + c.past, hd = c.headDim;
      const shape = { heads: H, kvHeads: c.kvHeads, headDim: hd, slidingWindow: c.window };
      const q = randomMatrix(c.batch * c.nq, H * hd, c.seed);
      const k = randomMatrix(c.batch * nk, c.kvHeads * hd, c.seed + 1);
      const v = randomMatrix(c.batch * nk, c.kvHeads * hd, c.seed + 2);
      const want = naiveAttention(shape, q, k, v, c.batch, c.nq, nk);
      const into = new Float32Array(want.length);
      for (
        const got of [
          causalAttention(shape, q, k, v, c.batch, c.nq, nk),
          causalAttention(shape, q, k, v, c.batch, c.nq, nk, into),
        ]
      ) {
        assert.equal(got.rows, c.batch * c.nq);
        for (let i = 0; i < want.length; i++) {
          assert.ok(
            Math.abs(got.data[i] - want[i]) <= 2e-5 * (1 + Math.abs(want[i])),
            `${backend} ${JSON.stringify(c)} [${i}]`,
          );
        }
      }
    }
  });
});

test("attention: work large enough for the threads splits windows and gives the one-thread result exactly", async () => {
  const shape = { heads: 4, kvHeads: 2, headDim: 32 }, batch = 5, n = 96; // 5·96·96·128 > 2^22
  const q = randomMatrix(batch * n, 128, 1),
    k = randomMatrix(batch * n, 64, 2),
    v = randomMatrix(batch * n, 64, 3);
  const results: Float32Array[] = [];
  await onEachBackend(() => results.push(causalAttention(shape, q, k, v, batch, n, n).data));
  assert.deepEqual(results[1], results[0], "2 threads = 1 thread, bit for bit");
  for (let i = 0; i < results[0].length; i++) assert.ok(Math.abs(results[2][i] - results[0][i]) < 1e-5);
});

test("attention: shapes that do not fit are refused, naming the shapes", () => {
  const m = (r: number, c: number) => ({ rows: r, cols: c, data: new Float32Array(r * c) });
  const s = { heads: 2, kvHeads: 1, headDim: 4 };
  assert.throws(() => causalAttention(s, m(3, 8), m(3, 4), m(3, 4), 1, 3, 2), ShapeError); // nk < nq
  assert.throws(() => causalAttention(s, m(3, 8), m(3, 8), m(3, 8), 1, 3, 3), /k 3×8/); // k too wide
  assert.throws(
    () => causalAttention({ ...s, kvHeads: 3 }, m(3, 8), m(3, 12), m(3, 12), 1, 3, 3),
    ShapeError,
  );
  assert.throws(() => causalAttention(s, m(3, 8), m(3, 4), m(3, 4), 1, 3, 3, new Float32Array(5)), /out 5/);
});

test("swiglu and log-sum-exp: the wasm and TypeScript paths equal their formulas, in place or not", async () => {
  const g = randomMatrix(1, 1001, 5).data, u = randomMatrix(1, 1001, 6).data;
  const logits = randomMatrix(7, 333, 7).data;
  logits.fill(-Infinity, 333, 666); // an all −∞ row
  logits[700] = NaN;
  await onEachBackend((backend) => {
    const out = siluMulInto(g, u, new Float32Array(g.length)), inU = siluMulInto(g, u.slice(), u.slice());
    for (let i = 0; i < g.length; i++) {
      const want = silu(g[i]) * u[i];
      assert.ok(Math.abs(out[i] - want) <= 1e-6 * (1 + Math.abs(want)), `${backend} silu ${i}`);
    }
    const gg = g.slice();
    assert.equal(siluMulInto(gg, u), gg);
    assert.deepEqual(gg, out);
    assert.deepEqual(inU, out);
    const lse = rowsLogSumExp(logits, 7, 333);
    assert.equal(lse[1], -Infinity);
    assert.ok(Number.isNaN(lse[2]));
    for (const r of [0, 3, 6]) {
      assert.ok(Math.abs(lse[r] - logSumExp(logits, r * 333, 333)) < 1e-5, `${backend} lse row ${r}`);
    }
  });
  assert.throws(() => siluMulInto(g, u.subarray(1)), /lengths 1001 \(gate\), 1000 \(up\)/);
});
