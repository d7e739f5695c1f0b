import { test } from "node:test";
import assert from "node:assert/strict";
import { closeLinalg, initLinalg } from "../../src/linalg/backend.ts";
import { cholesky } from "../../src/linalg/cholesky.ts";
import { eigh } from "../../src/linalg/eigh.ts";
import { matmul64 } from "../../src/linalg/gemm.ts";
import { qr } from "../../src/linalg/qr.ts";
import { createRng, randomNormal } from "../../src/linalg/random.ts";
import { svd } from "../../src/linalg/svd.ts";

test("factorisations (SVD, QR, eigh, Cholesky) on 2 worker threads are bit-identical to one thread", async (t) => {
  const info = await initLinalg({ threads: 2 });
  if (info.threads < 2) {
    await initLinalg({ threads: 1 });
    t.skip(`no worker threads here: ${info.threadsNote ?? "backend " + info.backend}`);
    return;
  }
  try {
    // Sizes above the hand-off thresholds, so every kernel (sweeps, fused bidiagonalisation, reflectors, the
    // blocked bidiagonalisation's matrix–vector products, the DGEMMs of the back-transformations and of
    // divide and conquer) really splits its rows or columns across the threads.
    const a = randomNormal(520, 400, createRng(1));
    const b = randomNormal(300, 300, createRng(2));
    const sym = matmul64(b, b, { transA: true });
    // Cholesky's trailing updates split once a strip's product reaches the threshold: a 700² Gram matrix.
    const x = randomNormal(900, 700, createRng(3));
    const gram = matmul64(x, x, { transA: true });
    const run = () => ({ svd: svd(a), qr: qr(a), eigh: eigh(sym), chol: cholesky(gram) });
    const threaded = run();
    await initLinalg({ threads: 1 });
    const single = run();
    assert.deepEqual(threaded.svd.s, single.svd.s);
    assert.deepEqual(threaded.svd.u.data, single.svd.u.data);
    assert.deepEqual(threaded.svd.vt.data, single.svd.vt.data);
    assert.deepEqual(threaded.qr.q.data, single.qr.q.data);
    assert.deepEqual(threaded.qr.r.data, single.qr.r.data);
    assert.deepEqual(threaded.eigh.values, single.eigh.values);
    assert.deepEqual(threaded.eigh.vectors.data, single.eigh.vectors.data);
    assert.deepEqual(threaded.chol.factor.data, single.chol.factor.data);
  } finally {
    await closeLinalg();
    await initLinalg({ threads: 1 });
  }
});
