// Statistics kept in wasm memory (gram_resident.ts, cholesky_resident.ts) give the same bits as the host
// path they replace: the running-mean Gram accumulation, the damped Cholesky factorisation (retries rebuild
// A from its upper triangle and the saved band; the eigh last resort), the products X·L, and SVD-LLM's
// factors through GramObserver.cholesky.
import { test } from "node:test";
import assert from "node:assert/strict";
import { GramObserver } from "../../src/calib/gram.ts";
import { cholesky } from "../../src/linalg/cholesky.ts";
import { choleskyResident, ResidentCholesky } from "../../src/linalg/cholesky_resident.ts";
import { gemmInto } from "../../src/linalg/gemm.ts";
import { closeLinalg, initLinalg, linalgInfo } from "../../src/linalg/backend.ts";
import { gramAccumulate } from "../../src/linalg/gram.ts";
import { ResidentGram } from "../../src/linalg/gram_resident.ts";
import { type Matrix, type Matrix64, matrix64 } from "../../src/linalg/matrix.ts";
import { fillUniform } from "../../src/linalg/random.ts";
import { wasmRuntime } from "../../src/linalg/wasm/runtime.ts";
import { compressSvdLlm } from "../../src/methods/svdllm.ts";

const SKIP = wasmRuntime() ? false : "the wasm kernels did not load (resident statistics need them)";

function activations(t: number, n: number, seed: number, dead: number[] = []): Matrix {
  const x = fillUniform(new Float32Array(t * n), seed);
  for (const c of dead) for (let r = 0; r < t; r++) x[r * n + c] = 0;
  return { rows: t, cols: n, data: x };
}

/** The host path: G ← (seen/total)·G + (1/total)·XᵀX per batch, as GramObserver did before. */
function hostMean(batches: Matrix[], n: number): Matrix64 {
  const g = matrix64(n, n);
  let seen = 0;
  for (const x of batches) {
    const total = seen + x.rows;
    gramAccumulate(g, x, 1 / total, { precision: "float32-blocks", keep: seen / total });
    seen = total;
  }
  return g;
}

function residentMean(batches: Matrix[], n: number): ResidentGram {
  const r = ResidentGram.create(n)!;
  assert.ok(r, "a resident accumulator on the wasm backend");
  let seen = 0;
  for (const x of batches) {
    const total = seen + x.rows;
    r.accumulate(x as Matrix<Float32Array>, 1 / total, seen / total);
    seen = total;
  }
  return r;
}

function sameBits(got: Float64Array, want: Float64Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: lengths`);
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) assert.fail(`${what}: entry ${i} is ${got[i]}, want ${want[i]}`);
  }
}

test(
  "ResidentGram: the running mean has the bits of gramAccumulate's, batch after batch",
  { skip: SKIP },
  () => {
    for (const [n, sizes] of [[1, [3]], [37, [300, 5]], [300, [256, 700, 1]]] as [number, number[]][]) {
      const batches = sizes.map((t, i) => activations(t, n, 17 * n + i));
      const want = hostMean(batches, n);
      const got = residentMean(batches, n).take();
      sameBits(got.data, want.data, `n ${n}`);
    }
    const r = ResidentGram.create(4)!;
    r.take();
    assert.throws(() => r.take(), /already taken/);
    assert.throws(() => r.accumulate(activations(1, 4, 1) as Matrix<Float32Array>, 1, 1), /already taken/);
  },
);

test(
  "choleskyResident: the factor, shift and tries of cholesky(), through damping retries and the eigh resort",
  { skip: SKIP },
  () => {
    // n > 256 + 64: several trailing-update strips, so a failed attempt changes the band above the diagonal.
    const cases: { n: number; t: number; dead: number[]; negate?: boolean; retries: boolean }[] = [
      { n: 96, t: 400, dead: [], retries: false }, // positive definite: one attempt
      { n: 520, t: 200, dead: [300], retries: true }, // rank < 200: fails past several trailing updates
      { n: 130, t: 300, dead: [], negate: true, retries: true }, // negative definite: eigh's shift
    ];
    for (const c of cases) {
      const batches = [activations(c.t, c.n, c.n + c.t, c.dead)];
      const host = hostMean(batches, c.n);
      const res = residentMean(batches, c.n);
      if (c.negate) {
        for (let i = 0; i < host.data.length; i++) host.data[i] = -host.data[i];
        res.accumulate({ rows: 0, cols: c.n, data: new Float32Array(0) }, 1, -1);
      }
      const want = cholesky(host, { inPlace: true });
      const got = choleskyResident(res);
      assert.ok(res.taken, "the accumulator's region was handed over");
      assert.equal(got.shift, want.shift, `n ${c.n}: shift`);
      assert.equal(got.tries, want.tries, `n ${c.n}: tries`);
      assert.equal(got.tries > 1, c.retries, `n ${c.n}: retried ${got.tries}`);
      if (c.negate) assert.equal(got.tries, 7, "the last resort (eigh) was reached");
      sameBits(got.toHost().data, want.factor.data, `n ${c.n}: L`);
      // X·L with L left in wasm memory: gemmInto's bits.
      const x = fillUniform(new Float64Array(40 * c.n), c.n);
      const xm: Matrix64 = { rows: 40, cols: c.n, data: x };
      const p = matrix64(40, c.n), q = matrix64(40, c.n);
      got.mulInto(xm, p);
      gemmInto(xm, want.factor, q);
      sameBits(p.data, q.data, `n ${c.n}: X·L`);
      got.dispose();
      got.dispose(); // idempotent
      assert.throws(() => got.toHost(), /disposed/);
    }
  },
);

test("GramObserver.cholesky: resident factor, the statistics consumed, SVD-LLM factors unchanged", {
  skip: SKIP,
}, () => {
  const n = 150, m = 90, k = 20;
  const batches = [activations(128, n, 1), activations(64, n, 2)];
  const w: Matrix = { rows: m, cols: n, data: fillUniform(new Float32Array(m * n), 3) };
  const o = new GramObserver("l", n);
  for (const x of batches) o.addBatch(x);
  const chol = o.cholesky();
  assert.ok(chol instanceof ResidentCholesky, "factored in wasm memory");
  assert.throws(() => o.gram(), /consumed/);
  assert.throws(() => o.addBatch(batches[0]), /consumed/);
  assert.throws(() => o.cholesky(), /already factored/);
  const stats = { cholesky: chol, release: true };
  const got = compressSvdLlm(w, stats, k);
  assert.equal("cholesky" in stats, false, "released");
  assert.throws(() => (chol as ResidentCholesky).toHost(), /disposed/, "and its wasm memory freed");
  const want = compressSvdLlm(w, { gram: hostMean(batches, n) }, k);
  assert.deepEqual(got.a.data, want.a.data);
  assert.deepEqual(got.b.data, want.b.data);
  assert.equal(got.report.shift, want.report.shift);
  // Small orders factor on the host (one panel), the same call.
  const small = new GramObserver("s", 8);
  small.addBatch(activations(20, 8, 4));
  assert.ok(!(small.cholesky() instanceof ResidentCholesky));
});

test("ResidentGram: wasm memory is returned after take, transfer + factor + dispose", { skip: SKIP }, () => {
  const rt = wasmRuntime()!;
  const before = rt.bytesInUse();
  const r = residentMean([activations(50, 200, 9)], 200);
  assert.ok(rt.bytesInUse() >= before + 8 * 200 * 200);
  r.take();
  assert.equal(rt.bytesInUse(), before);
  const c = choleskyResident(residentMean([activations(300, 200, 10)], 200));
  c.dispose();
  assert.equal(rt.bytesInUse(), before);
});

test(
  "ResidentCholesky.mulInto skips L's zero upper half with gemmInto's bits, on 1 and 2 threads",
  { skip: SKIP },
  async () => {
    // Orders across several inner blocks of dgemm (256), odd widths, and row counts splitting into uneven stripes.
    const cases = [{ n: 688, rows: 101 }, { n: 257, rows: 64 }, { n: 770, rows: 9 }];
    const factors = cases.map(({ n }) => choleskyResident(residentMean([activations(n + 40, n, n)], n)));
    const host = factors.map((c) => c.toHost());
    for (let j = 0; j < host[0].cols; j++) assert.equal(host[0].data[j * host[0].cols + j + 1] ?? 0, 0);
    try {
      for (const threads of [1, 2]) {
        await initLinalg({ threads });
        if (threads === 2 && linalgInfo().threads !== 2) continue; // no shared memory here: one thread only
        cases.forEach(({ n, rows }, i) => {
          const x: Matrix64 = { rows, cols: n, data: fillUniform(new Float64Array(rows * n), 3 + n) };
          const got = matrix64(rows, n), want = matrix64(rows, n);
          factors[i].mulInto(x, got);
          gemmInto(x, host[i], want);
          sameBits(got.data, want.data, `n ${n}, ${rows} rows, ${threads} thread(s)`);
        });
      }
    } finally {
      for (const f of factors) f.dispose();
      await closeLinalg();
    }
  },
);
