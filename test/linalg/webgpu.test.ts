// WebGPU products (`matmulGpu`, `matmulAsync`): the CPU result for small products here, and the GPU checks
// (a known answer, shape errors, the TypeScript product within k·ε on random shapes and on one product larger
// than a tile) in `_webgpu_products.ts`, run as a `deno run` child so that its device lives on a main thread:
// under `deno test` a GPU instance on the test's thread is torn down during the process exit, which aborts
// Deno about one exit in thirty on lavapipe after every test passed. The child's crash fails this test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fillUniform as fill } from "../../src/linalg/random.ts";
import { matmul, matmulAsync } from "../../src/linalg/gemm.ts";
import { matrix } from "../../src/linalg/matrix.ts";
import { runDenoChild } from "./_deno_child.ts";

test("matmulAsync: the CPU result for small products", async () => {
  const a = matrix(33, 20, fill(new Float32Array(660), 1));
  const b = matrix(17, 20, fill(new Float32Array(340), 2));
  const cpu = matmul(a, b, { transB: true });
  assert.deepEqual((await matmulAsync(a, b, { transB: true })).data, cpu.data);
  assert.deepEqual(
    (await matmulAsync(a, b, { transB: true, backend: "ts" })).data,
    matmul(a, b, { transB: true, backend: "ts" }).data,
  );
});

test(
  "WebGPU GEMM agrees with the TypeScript product within k·ε·max|a|·max|b|",
  { timeout: 600_000 },
  async (t) => {
    if (!("Deno" in globalThis)) {
      // Bun and Node have no navigator.gpu: forcing the GPU is refused with a reason.
      const a = matrix(3, 2), b = matrix(2, 3);
      await assert.rejects(matmulAsync(a, b, { backend: "webgpu" }), /no WebGPU adapter|navigator\.gpu/);
      t.skip("no navigator.gpu outside Deno");
      return;
    }
    const line = runDenoChild(
      new URL("./_webgpu_products.ts", import.meta.url),
      /^webgpu products: ok \(.+\)$/,
    );
    if (line.startsWith("skip: ")) {
      console.log(line);
      t.skip(line.slice(6));
    }
  },
);
