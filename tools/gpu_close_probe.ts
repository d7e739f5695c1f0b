/**
 * A library user's `--gpu` life cycle, for repeating with `tools/repeat_exit.mjs`: `initLinalg({ gpu: true })`,
 * one product routed to the GPU and checked against the CPU, `closeLinalg()`, then the process ends by itself
 * (no `process.exit`). Prints the adapter, the products run on the GPU, the largest difference and how long
 * `closeLinalg()` took; exits 1 if the GPU was not used or the product is wrong.
 *
 *   node tools/repeat_exit.mjs 60 -- deno run -A tools/gpu_close_probe.ts
 *
 * @module
 */
import { closeLinalg, initLinalg, linalgInfo } from "../src/linalg/backend.ts";
import { matmul } from "../src/linalg/gemm.ts";
import { matrix } from "../src/linalg/matrix.ts";

const n = 128;
const a = matrix(n, n), b = matrix(n, n);
for (let i = 0; i < n * n; i++) {
  a.data[i] = Math.sin(i);
  b.data[i] = Math.cos(3 * i);
}
const cpu = matmul(a, b);
const info = await initLinalg({ gpu: true, gpuMinWork: 1 });
if (!info.gpu) {
  console.log(`no GPU: ${info.gpuNote}`);
  Deno.exit(1);
}
const gpu = matmul(a, b);
let diff = 0;
for (let i = 0; i < n * n; i++) diff = Math.max(diff, Math.abs(gpu.data[i] - cpu.data[i]));
const products = linalgInfo().gpu?.products ?? 0;
const t0 = performance.now();
await closeLinalg();
const closeMs = performance.now() - t0;
console.log(
  `${info.gpu.adapter}: ${products} GPU products, max |gpu - cpu| ${diff.toExponential(1)}; closeLinalg ${
    closeMs.toFixed(0)
  } ms`,
);
if (products < 1 || !(diff < 1e-3)) Deno.exitCode = 1;
