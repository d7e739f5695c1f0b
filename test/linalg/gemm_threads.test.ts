import { test } from "node:test";
import { fillUniform as fill } from "../../src/linalg/random.ts";
import assert from "node:assert/strict";
import { gemmInto, matmul, matmul64 } from "../../src/linalg/gemm.ts";
import { closeLinalg, initLinalg, linalgInfo } from "../../src/linalg/backend.ts";
import { THREAD_MIN_WORK } from "../../src/linalg/wasm/gemm_wasm.ts";
import { matrix, matrix64 } from "../../src/linalg/matrix.ts";
import { OptionError } from "../../src/errors.ts";
import { canBlock, type Job, ThreadPool } from "../../src/linalg/threads/pool.ts";
import { wasmRuntime } from "../../src/linalg/wasm/runtime.ts";

// Row splits (m ≥ n) and column splits (n > m), sizes that are not multiples of the 4×8 tile, all transposes.
const SHAPES: [number, number, number][] = [[263, 129, 131], [97, 389, 113], [256, 256, 64], [61, 1031, 67]];

test("2 worker threads give bit-identical results to one thread (float32 and float64, all transposes)", async () => {
  const cases = SHAPES.flatMap(([m, n, k], i) =>
    [[false, false], [false, true], [true, false], [true, true]].map(([ta, tb], j) => {
      const seed = 10 * i + j;
      const a = matrix(ta ? k : m, ta ? m : k, fill(new Float32Array(m * k), seed));
      const b = matrix(tb ? n : k, tb ? k : n, fill(new Float32Array(n * k), seed + 1));
      const a64 = matrix64(a.rows, a.cols, fill(new Float64Array(m * k), seed + 2));
      const b64 = matrix64(b.rows, b.cols, fill(new Float64Array(n * k), seed + 3));
      assert.ok(m * n * k >= THREAD_MIN_WORK / 2, "shape too small to exercise the threads");
      return { ta, tb, a, b, a64, b64 };
    })
  );
  const single = cases.map((c) => ({
    f32: matmul(c.a, c.b, { transA: c.ta, transB: c.tb, backend: "wasm" }).data,
    f64: matmul64(c.a64, c.b64, { transA: c.ta, transB: c.tb, backend: "wasm" }).data,
  }));
  const info = await initLinalg({ threads: 2 });
  try {
    if (info.threads !== 2) {
      console.log(`skip: threads unavailable here: ${info.threadsNote}`);
      return;
    }
    assert.equal(linalgInfo().threads, 2);
    assert.equal(linalgInfo().sharedMemory, true);
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i];
      const big = c.a.rows * c.b.rows * c.a.cols >= THREAD_MIN_WORK;
      const f32 = matmul(c.a, c.b, { transA: c.ta, transB: c.tb }).data;
      const f64 = matmul64(c.a64, c.b64, { transA: c.ta, transB: c.tb }).data;
      assert.deepEqual(f32, single[i].f32, `f32 case ${i} (threaded: ${big})`);
      assert.deepEqual(f64, single[i].f64, `f64 case ${i}`);
    }
    // Accumulating update through the pool: C ← C − A·Bᵀ, compared with the single-thread result.
    const a = matrix64(300, 200, fill(new Float64Array(60000), 99));
    const c0 = fill(new Float64Array(300 * 300), 98);
    const threaded = gemmInto(a, a, matrix64(300, 300, c0.slice()), { transB: true, alpha: -1, beta: 1 });
    await closeLinalg();
    assert.equal(linalgInfo().threads, 1);
    const one = gemmInto(a, a, matrix64(300, 300, c0.slice()), { transB: true, alpha: -1, beta: 1 });
    assert.deepEqual(threaded.data, one.data);
  } finally {
    await closeLinalg();
  }
});

test("initLinalg validates its options and can force the TypeScript backend", async () => {
  await assert.rejects(initLinalg({ threads: 0 }), OptionError);
  await assert.rejects(initLinalg({ threads: 1.5 }), OptionError);
  // deno-lint-ignore no-explicit-any
  await assert.rejects(initLinalg({ backend: "gpu" as any }), OptionError);
  try {
    assert.equal((await initLinalg({ backend: "ts" })).backend, "ts");
    const a = matrix(70, 70, fill(new Float32Array(4900), 5));
    const t = matmul(a, a);
    assert.equal((await initLinalg()).backend, "wasm");
    const w = matmul(a, a);
    let d = 0;
    for (let i = 0; i < t.data.length; i++) d = Math.max(d, Math.abs(t.data[i] - w.data[i]));
    assert.ok(d > 0 && d < 1e-4, `TS (float64 accumulation) and wasm (float32) should differ slightly: ${d}`);
  } finally {
    await initLinalg();
  }
});

test("thread pool: jobs posted right after start are not lost; worker failures surface; close is idempotent", async () => {
  const rt = wasmRuntime();
  if (!rt?.shared || !canBlock()) {
    console.log("skip: no shared wasm memory or this thread may not block");
    return;
  }
  const noop: Job = { fn: "sgemm", args: [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0] };
  for (let cycle = 0; cycle < 3; cycle++) {
    const pool = await ThreadPool.create(rt, 2);
    try {
      assert.equal(pool.size, 2);
      for (let i = 0; i < 300; i++) pool.run([noop, noop]);
      // A worker's job traps (operands far outside memory): run throws, and the pool keeps working.
      const bad: Job = { fn: "sgemm", args: [0, 0, 4, 4, 4, 1, 0x7ffffff0, 4, 0, 4, 0, 0, 4, 0] };
      assert.throws(() => pool.run([noop, bad]), /a worker failed running sgemm/);
      assert.throws(() => pool.run([bad, noop]), WebAssembly.RuntimeError);
      assert.throws(() => pool.run([noop, noop, noop]), RangeError);
      assert.throws(() => pool.run([noop, { fn: "nope", args: [] }]), /no function "nope"/);
      pool.run([noop, noop]);
    } finally {
      await pool.close();
      await pool.close();
    }
    assert.throws(() => pool.run([noop]), /closed/);
  }
});
