// The WebGPU product checks of `webgpu.test.ts`, run as `deno run -A test/linalg/_webgpu_products.ts` so
// that the GPU device lives on a process's main thread. Under `deno test` a test module runs on a runtime
// thread that Deno tears down while the process exits; a GPU instance torn down then aborts the process
// about one exit in thirty on lavapipe ("corrupted size vs. prev_size", SIGSEGV), after every test passed.
// On the main thread of `deno run` the instance outlives the exit: 0 crashes in 90.
// Prints "webgpu products: ok (ADAPTER)" or "skip: REASON"; an assertion failure exits non-zero.
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { fillUniform as fill } from "../../src/linalg/random.ts";
import { closeGpu, gpuAvailable, gpuInfo, matmulGpu } from "../../src/linalg/webgpu/gemm_gpu.ts";
import { matmul, matmulAsync } from "../../src/linalg/gemm.ts";
import { matrix } from "../../src/linalg/matrix.ts";
import { ShapeError } from "../../src/errors.ts";

/** Largest |a − b| over two equal-length arrays. */
function maxDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

if (!(await gpuAvailable())) {
  const a = matrix(33, 20, fill(new Float32Array(660), 1));
  const b = matrix(17, 20, fill(new Float32Array(340), 2));
  await assert.rejects(matmulAsync(a, b, { transB: true, backend: "webgpu" }), /no WebGPU adapter/);
  const why = (globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu
    ? "no adapter"
    : "no navigator.gpu";
  console.log(`skip: WebGPU unavailable here (${why})`);
} else {
  try {
    // matmulAsync forced onto the GPU: the CPU product within k·ε (operands in [0, 1)).
    const a = matrix(33, 20, fill(new Float32Array(660), 1));
    const b = matrix(17, 20, fill(new Float32Array(340), 2));
    const g = await matmulAsync(a, b, { transB: true, backend: "webgpu" });
    assert.ok(maxDiff(g.data, matmul(a, b, { transB: true }).data) <= 4 * 20 * 2 ** -23);
    // A known answer, a shape error, then the TypeScript product within k·ε on random shapes.
    const sq = matrix(2, 2, new Float32Array([1, 2, 3, 4]));
    assert.deepEqual(Array.from((await matmulGpu(sq, sq, { transB: true })).data), [5, 11, 11, 25]);
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
        const d = maxDiff(want.data, got.data);
        assert.ok(d <= 4 * k * 2 ** -23, `${m}×${n}×${k} ${ta} ${tb}: error ${d}`);
      }),
      { numRuns: 25 },
    );
    // One product larger than a tile in every direction, across several k steps.
    const big = matrix(300, 200, fill(new Float32Array(60000), 7));
    const other = matrix(150, 200, fill(new Float32Array(30000), 8));
    const d = maxDiff(
      matmul(big, other, { transB: true, backend: "ts" }).data,
      (await matmulGpu(big, other, { transB: true })).data,
    );
    assert.ok(d <= 4 * 200 * 2 ** -23, `300×150×200: error ${d}`);
    console.log(`webgpu products: ok (${(await gpuInfo())?.description})`);
  } finally {
    await closeGpu();
  }
}
