/**
 * GEMM throughput: float32 C = A·B at 1024 and 2048, in GFLOP/s, for each backend of `src/linalg`, with
 * numpy (OpenBLAS, 1 and 2 threads) measured in the same run when Debian's python3-numpy is present.
 *
 * Usage: `deno run -A bench/gemm.ts [sizes…]` (or `bun bench/gemm.ts`; WebGPU only where `navigator.gpu` exists).
 * Times are the best of a few repetitions after a warm-up and include copying operands into wasm memory.
 * Goals (issue): wasm 1 thread ≥ 0.23× numpy 1 thread; wasm 2 workers ≥ 1.6× wasm 1 thread.
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import process from "node:process";
import { Matrix as MlMatrix } from "ml-matrix";
import { matmul } from "../src/linalg/gemm.ts";
import { closeLinalg, initLinalg } from "../src/linalg/backend.ts";
import { closeGpu, gpuAvailable, gpuInfo, matmulGpu } from "../src/linalg/webgpu/gemm_gpu.ts";
import { type Matrix, matrix } from "../src/linalg/matrix.ts";

/** Matrix sizes: the command-line arguments, or 1024 and 2048. */
const SIZES = process.argv.slice(2).map(Number).filter((n) => n > 0);
if (SIZES.length === 0) SIZES.push(1024, 2048);

function random(n: number): Matrix {
  const d = new Float32Array(n * n);
  for (let i = 0; i < d.length; i++) d[i] = Math.random() - 0.5;
  return matrix(n, n, d);
}

/** Best time of `reps` runs after a warm-up run; with reps = 0, the time of one run. */
async function best(reps: number, f: () => unknown): Promise<number> {
  const t0 = performance.now();
  await f(); // warm-up: tier-up of the wasm code, worker start, shader compile
  let t = reps === 0 ? performance.now() - t0 : Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await f();
    t = Math.min(t, performance.now() - t0);
  }
  return t / 1000;
}

const gflops = (n: number, seconds: number) => 2 * n ** 3 / seconds / 1e9;

function numpy(threads: number): Record<number, number> | null {
  if (!existsSync("/usr/bin/python3")) return null;
  const script = `
import json, time
import numpy as np
out = {}
for n in ${JSON.stringify(SIZES)}:
    a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
    a @ b
    t = min((lambda t0: (a @ b, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(5))
    out[n] = 2 * n ** 3 / t / 1e9
print(json.dumps(out))`;
  try {
    const env = { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
    return JSON.parse(execFileSync("/usr/bin/python3", ["-c", script], { env, encoding: "utf8" }));
  } catch {
    return null;
  }
}

const rows: { name: string; r: Record<number, number | null> }[] = [];
const np1 = numpy(1), np2 = numpy(2);

for (const n of SIZES) {
  const a = random(n), b = random(n);
  const put = (name: string, v: number | null) => {
    let row = rows.find((x) => x.name === name);
    if (!row) rows.push(row = { name, r: {} });
    row.r[n] = v;
  };
  put("TypeScript", n <= 1024 ? gflops(n, await best(0, () => matmul(a, b, { backend: "ts" }))) : null);
  if (n <= 1024) {
    const ma = new MlMatrix(
      Array.from({ length: n }, (_, i) => Array.from(a.data.subarray(i * n, (i + 1) * n))),
    );
    const mb = new MlMatrix(
      Array.from({ length: n }, (_, i) => Array.from(b.data.subarray(i * n, (i + 1) * n))),
    );
    put("ml-matrix", gflops(n, await best(0, () => ma.mmul(mb))));
  } else put("ml-matrix", null);
  await initLinalg({ threads: 1 });
  put("wasm SIMD, 1 thread", gflops(n, await best(3, () => matmul(a, b))));
  const info = await initLinalg({ threads: 2 });
  put("wasm SIMD, 2 threads", info.threads === 2 ? gflops(n, await best(3, () => matmul(a, b))) : null);
  await closeLinalg();
  // A software adapter (lavapipe: ~0.2 GFLOP/s) gets one timed run at the smallest size only.
  const gpu = (await gpuAvailable()) ? await gpuInfo() : null;
  const gpuName = gpu?.fallback ? "WebGPU (software adapter)" : "WebGPU";
  const gpuRun = gpu && (!gpu.fallback || n === SIZES[0]);
  put(gpuName, gpuRun ? gflops(n, await best(gpu.fallback ? 0 : 2, () => matmulGpu(a, b))) : null);
  put("numpy, 1 thread", np1?.[n] ?? null);
  put("numpy, 2 threads", np2?.[n] ?? null);
}
await closeGpu();

const fmt = (v: number | null | undefined) => (v == null ? "—" : v.toFixed(1)).padStart(8);
console.log(`${"GFLOP/s (float32 C = A·B)".padEnd(28)}${SIZES.map((n) => String(n).padStart(8)).join("")}`);
for (const { name, r } of rows) console.log(`${name.padEnd(28)}${SIZES.map((n) => fmt(r[n])).join("")}`);
const get = (name: string, n: number) => rows.find((x) => x.name === name)?.r[n] ?? null;
for (const n of SIZES) {
  const w1 = get("wasm SIMD, 1 thread", n), w2 = get("wasm SIMD, 2 threads", n), np = np1?.[n];
  const parts = [];
  if (w1 && np) parts.push(`wasm 1 thread / numpy 1 thread = ${(w1 / np).toFixed(2)} (goal ≥ 0.23)`);
  if (w1 && w2) parts.push(`wasm 2 threads / 1 thread = ${(w2 / w1).toFixed(2)} (goal ≥ 1.6)`);
  if (parts.length) console.log(`${n}: ${parts.join("; ")}`);
}
