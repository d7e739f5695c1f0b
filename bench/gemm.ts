/**
 * GEMM throughput: float32 C = A·B at 1024 and 2048, in GFLOP/s, for each backend of `src/linalg`, with
 * numpy (OpenBLAS, 1 and 2 threads) measured in the same run when Debian's python3-numpy is present. Then
 * float64 C = A·B, the shapes of the model's forward pass (X·Wᵀ with W stored out×in; attention products) and
 * the Gram accumulation XᵀX ("float32-blocks", as calibration runs it), each against numpy in the same run.
 *
 * Usage: `deno run -A bench/gemm.ts [sizes…] [--quick]` (or `bun bench/gemm.ts`; WebGPU only where
 * `navigator.gpu` exists). `--quick` skips the largest shapes, `--square` runs only the square table. Times are the best of a few
 * repetitions after a warm-up and include copying operands into and out of wasm memory.
 * Goals (issue): wasm 1 thread ≥ 0.23× numpy 1 thread; wasm 2 workers ≥ 1.6× wasm 1 thread.
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import process from "node:process";
import { Matrix as MlMatrix } from "ml-matrix";
import { matmul, matmul64 } from "../src/linalg/gemm.ts";
import { gramAccumulate } from "../src/linalg/gram.ts";
import { closeLinalg, initLinalg } from "../src/linalg/backend.ts";
import { closeGpu, gpuAvailable, gpuInfo, matmulGpu } from "../src/linalg/webgpu/gemm_gpu.ts";
import { type Matrix, matrix, matrix64 } from "../src/linalg/matrix.ts";

/** Matrix sizes: the command-line arguments, or 1024 and 2048. */
const SIZES = process.argv.slice(2).map(Number).filter((n) => n > 0);
const QUICK = process.argv.includes("--quick");
/** `--square`: only the square float32 table (the goals), not the shapes and the Gram. */
const SQUARE_ONLY = process.argv.includes("--square");
if (SIZES.length === 0) SIZES.push(1024, 2048);

function random(n: number, cols = n): Matrix {
  const d = new Float32Array(n * cols);
  for (let i = 0; i < d.length; i++) d[i] = Math.random() - 0.5;
  return matrix(n, cols, d);
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

/** numpy seconds (best of 3) for each Python expression over a, b built by `setup` code, one thread or more. */
function numpyTimes(cases: { setup: string; expr: string }[], threads: number): number[] | null {
  if (!existsSync("/usr/bin/python3")) return null;
  const body = cases.map(({ setup, expr }) =>
    `${setup}\nf = lambda: ${expr}\nf()\nts = []\nfor _ in range(3):\n    t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)\nout.append(min(ts))`
  ).join("\n");
  const script =
    `import json, time\nimport numpy as np\nr = np.random.default_rng(1)\nout = []\n${body}\nprint(json.dumps(out))`;
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

// ---- float64, the shapes of the forward pass, and the Gram accumulation: wasm (1 and 2 threads) vs numpy.
interface Shape {
  label: string;
  m: number;
  k: number;
  n: number;
  transB: boolean;
  f64?: boolean;
}
const shapes: Shape[] = SQUARE_ONLY ? [] : [
  { label: "f64 A·B 512", m: 512, k: 512, n: 512, transB: false, f64: true },
  { label: "f64 A·B 1024", m: 1024, k: 1024, n: 1024, transB: false, f64: true },
  { label: "attn Q·Kᵀ 256×32·32×256", m: 256, k: 32, n: 256, transB: true },
  { label: "attn P·V 256×256·256×32", m: 256, k: 256, n: 32, transB: false },
  { label: "X·Wᵀ 16384×256·256×256", m: 16384, k: 256, n: 256, transB: true },
  { label: "X·Wᵀ 16384×256·256×688", m: 16384, k: 256, n: 688, transB: true },
  { label: "X·Wᵀ 16384×688·688×256", m: 16384, k: 688, n: 256, transB: true },
  { label: "X·Wᵀ 256×4096·4096×4096", m: 256, k: 4096, n: 4096, transB: true },
];
if (!QUICK && !SQUARE_ONLY) {
  shapes.push({ label: "X·Wᵀ 256×4096·4096×11008", m: 256, k: 4096, n: 11008, transB: true });
}
const grams = SQUARE_ONLY ? [] : [
  { t: 16384, n: 256 },
  { t: 16384, n: 688 },
  ...(QUICK ? [] : [{ t: 4096, n: 4096 }]),
];

const cases = [
  ...shapes.map(({ m, k, n, transB, f64 }) => ({
    setup: `a = r.random((${m}, ${k}), dtype=np.float${f64 ? 64 : 32}); b = r.random((${transB ? n : k}, ${
      transB ? k : n
    }), dtype=np.float${f64 ? 64 : 32})`,
    expr: transB ? "a @ b.T" : "a @ b",
  })),
  ...grams.map(({ t, n }) => ({
    setup: `a = r.random((${t}, ${n}), dtype=np.float32)`,
    expr: "a.T @ a",
  })),
];
const npS1 = cases.length ? numpyTimes(cases, 1) : null;
const line = (label: string, flops: number, w1: number, w2: number | null, np: number | undefined) => {
  const g = (s: number | null | undefined) => (s == null ? "—" : (flops / s / 1e9).toFixed(1)).padStart(8);
  const ratio = np ? (np / w1).toFixed(2).padStart(7) : "      —";
  console.log(`${label.padEnd(32)}${g(w1)}${g(w2)}${g(np)}${ratio}`);
};
if (!SQUARE_ONLY) {
  console.log(
    `\n${"GFLOP/s (2·m·n·k)".padEnd(32)}${"wasm 1t".padStart(8)}${"wasm 2t".padStart(8)}${
      "numpy 1t".padStart(8)
    }${"ratio".padStart(7)}`,
  );
}
for (let i = 0; i < shapes.length; i++) {
  const { label, m, k, n, transB, f64 } = shapes[i];
  const big = 2 * m * n * k > 2e10;
  const mk = (r: number, c: number) => {
    const x = random(r, c);
    return f64 ? matrix64(r, c, Float64Array.from(x.data)) : x;
  };
  const a = mk(m, k), b = transB ? mk(n, k) : mk(k, n);
  const run = () =>
    f64 ? matmul64(a as never, b as never, { transB }) : matmul(a as Matrix, b as Matrix, { transB });
  const reps = big ? 1 : 3;
  await initLinalg({ threads: 1 });
  const w1 = await best(reps, run);
  const info = await initLinalg({ threads: 2 });
  const w2 = info.threads === 2 ? await best(reps, run) : null;
  await closeLinalg();
  line(label, 2 * m * n * k, w1, w2, npS1?.[i]);
}
if (!SQUARE_ONLY) {
  console.log(
    "(ratio: wasm 1 thread / numpy 1 thread; numpy computes a.T @ a for the Gram rows: a full GEMM)",
  );
}
for (let i = 0; i < grams.length; i++) {
  const { t, n } = grams[i];
  const x = random(t, n);
  const g = matrix64(n, n);
  const run = () => gramAccumulate(g, x, 1 / t, { precision: "float32-blocks" });
  await initLinalg({ threads: 1 });
  const w1 = await best(2, run);
  const info = await initLinalg({ threads: 2 });
  const w2 = info.threads === 2 ? await best(2, run) : null;
  await closeLinalg();
  line(
    `Gram XᵀX ${t}×${n} (ms: ${(w1 * 1000).toFixed(0)})`,
    2 * t * n * n,
    w1,
    w2,
    npS1?.[shapes.length + i],
  );
}
