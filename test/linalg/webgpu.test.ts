import { test } from "node:test";
import { fillUniform as fill } from "../../src/linalg/random.ts";
import assert from "node:assert/strict";
import fc from "fast-check";
import { closeGpu, gpuAvailable, matmulGpu } from "../../src/linalg/webgpu/gemm_gpu.ts";
import { matmul, matmulAsync } from "../../src/linalg/gemm.ts";
import { matrix } from "../../src/linalg/matrix.ts";
import { ShapeError } from "../../src/errors.ts";

test("matmulAsync: the CPU result for small products, the GPU one when forced", async () => {
  const a = matrix(33, 20, fill(new Float32Array(660), 1));
  const b = matrix(17, 20, fill(new Float32Array(340), 2));
  const cpu = matmul(a, b, { transB: true });
  assert.deepEqual((await matmulAsync(a, b, { transB: true })).data, cpu.data);
  assert.deepEqual(
    (await matmulAsync(a, b, { transB: true, backend: "ts" })).data,
    matmul(a, b, { transB: true, backend: "ts" }).data,
  );
  if (await gpuAvailable()) {
    try {
      const g = await matmulAsync(a, b, { transB: true, backend: "webgpu" });
      for (let i = 0; i < g.data.length; i++) {
        assert.ok(Math.abs(g.data[i] - cpu.data[i]) <= 4 * 20 * 2 ** -23);
      }
    } finally {
      await closeGpu();
    }
  } else await assert.rejects(matmulAsync(a, b, { transB: true, backend: "webgpu" }), /no WebGPU adapter/);
});

test("WebGPU GEMM agrees with the TypeScript product within k·ε·max|a|·max|b|", async (t) => {
  if (!(await gpuAvailable())) {
    const why = (globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu
      ? "no adapter"
      : "no navigator.gpu";
    console.log(`skip: WebGPU unavailable here (${why})`);
    t.skip(why);
    return;
  }
  try {
    assert.deepEqual(
      Array.from(
        (await matmulGpu(
          matrix(2, 2, new Float32Array([1, 2, 3, 4])),
          matrix(2, 2, new Float32Array([1, 2, 3, 4])),
          { transB: true },
        )).data,
      ),
      [5, 11, 11, 25],
    );
    await assert.rejects(matmulGpu(matrix(2, 3), matrix(2, 3)), ShapeError);
    const dim = fc.oneof(fc.integer({ min: 1, max: 70 }), fc.constantFrom(1, 63, 64, 65, 129));
    await fc.assert(
      fc.asyncProperty(dim, dim, dim, fc.boolean(), fc.boolean(), fc.nat(), async (m, n, k, ta, tb, seed) => {
        const a = matrix(ta ? k : m, ta ? m : k, fill(new Float32Array(m * k), seed));
        const b = matrix(tb ? n : k, tb ? k : n, fill(new Float32Array(n * k), seed + 1));
        const want = matmul(a, b, { transA: ta, transB: tb, backend: "ts" });
        const got = await matmulGpu(a, b, { transA: ta, transB: tb });
        assert.equal(got.rows, m);
        assert.equal(got.cols, n);
        let d = 0;
        for (let i = 0; i < want.data.length; i++) d = Math.max(d, Math.abs(want.data[i] - got.data[i]));
        assert.ok(d <= 4 * k * 2 ** -23, `${m}×${n}×${k} ${ta} ${tb}: error ${d}`);
      }),
      { numRuns: 25 },
    );
    // One product larger than a tile in every direction, across several k steps.
    const a = matrix(300, 200, fill(new Float32Array(60000), 7));
    const b = matrix(150, 200, fill(new Float32Array(30000), 8));
    const want = matmul(a, b, { transB: true, backend: "ts" });
    const got = await matmulGpu(a, b, { transB: true });
    let d = 0;
    for (let i = 0; i < want.data.length; i++) d = Math.max(d, Math.abs(want.data[i] - got.data[i]));
    assert.ok(d <= 4 * 200 * 2 ** -23, `300×150×200: error ${d}`);
  } finally {
    await closeGpu();
  }
});
