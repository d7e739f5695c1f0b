// The WebGPU path in the pipeline: `initLinalg({ gpu: true })` routes large float32 products (gemm.ts) and the
// calibration Gram accumulation (gram.ts) to a worker owning the GPU device, synchronously. Checked where an
// adapter exists (Deno + lavapipe here: a software adapter, so nothing here says anything about speed):
// products within float32 tolerance of the wasm kernel, the Gram within float32-block tolerance, perplexity
// of stories260K and of its svdllm-compressed model equal to the wasm path to 1e-4 relative. Without an
// adapter (Bun, Node) the option stays off with a note and products stay on the CPU.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeLinalg, initLinalg, linalgInfo } from "../../src/linalg/backend.ts";
import { gemmInto, matmul } from "../../src/linalg/gemm.ts";
import { gramAccumulate } from "../../src/linalg/gram.ts";
import { matrix, matrix64 } from "../../src/linalg/matrix.ts";
import { fillUniform } from "../../src/linalg/random.ts";
import { OptionError } from "../../src/errors.ts";
import { loadModel } from "../../src/model/load.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { compress } from "../../src/pipeline/compress.ts";
import { root } from "./_deno.ts";

const MODEL = join(root, "models/stories260K/stories260K.gguf");
const TEXT = readFileSync(join(root, "data/tinystories-valid.part1.txt"), "utf8");

/** Start the GPU path with every product routed; null (after a skip message) where there is no adapter. */
async function gpuOn(minWork = 0): Promise<boolean> {
  const info = await initLinalg({ gpu: true, gpuMinWork: minWork });
  if (!info.gpu) {
    assert.ok(info.gpuNote, "the GPU path is off without a note");
    console.log(`skip: no GPU path here (${info.gpuNote})`);
    return false;
  }
  return true;
}

test("initLinalg validates gpu and gpuMinWork; without an adapter the GPU path stays off with a note", async () => {
  await assert.rejects(initLinalg({ gpu: "yes" as unknown as boolean }), OptionError);
  await assert.rejects(initLinalg({ gpu: true, gpuMinWork: -1 }), /gpuMinWork must be a whole number/);
  try {
    const info = await initLinalg({ gpu: true });
    assert.ok(info.gpu || info.gpuNote, "neither a GPU nor a reason");
    // A call without `gpu` states a configuration without it: the worker stops.
    assert.equal((await initLinalg({})).gpu, undefined);
  } finally {
    await closeLinalg();
  }
  assert.equal(linalgInfo().gpu, undefined);
});

test("GPU products equal the wasm kernel's within float32 tolerance (all transposes, ragged, alpha/beta)", async () => {
  try {
    if (!(await gpuOn())) return;
    let seed = 1;
    for (const [m, n, k] of [[67, 129, 33], [130, 65, 200], [1, 300, 77], [256, 256, 256]]) {
      for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]]) {
        const a = matrix(ta ? k : m, ta ? m : k, fillUniform(new Float32Array(m * k), seed++));
        const b = matrix(tb ? n : k, tb ? k : n, fillUniform(new Float32Array(k * n), seed++));
        const c0 = fillUniform(new Float32Array(m * n), seed++);
        const before = linalgInfo().gpu!.products;
        const gpu = gemmInto(a, b, matrix(m, n, c0.slice()), {
          transA: ta,
          transB: tb,
          alpha: 0.5,
          beta: -2,
        });
        assert.equal(linalgInfo().gpu!.products, before + 1, "the product did not go to the GPU");
        const cpu = gemmInto(a, b, matrix(m, n, c0.slice()), {
          transA: ta,
          transB: tb,
          alpha: 0.5,
          beta: -2,
          backend: "wasm",
        });
        // |a|, |b| ≤ 1: each float32 sum of k terms is within k·2⁻²³ of exact, either order.
        const tol = 2 * k * 2 ** -23 * 0.5 + 4 * 2 ** -23;
        let worst = 0;
        for (let i = 0; i < m * n; i++) worst = Math.max(worst, Math.abs(gpu.data[i] - cpu.data[i]));
        assert.ok(worst <= tol, `${m}×${n}×${k} ta=${ta} tb=${tb}: differs by ${worst} > ${tol}`);
      }
    }
    // Below gpuMinWork a product stays on the CPU.
    await gpuOn(1 << 30);
    const before = linalgInfo().gpu!.products;
    matmul(matrix(8, 8, new Float32Array(64)), matrix(8, 8, new Float32Array(64)));
    assert.equal(linalgInfo().gpu!.products, before);
  } finally {
    await closeLinalg();
  }
});

test("GPU Gram (float32 partials of 256 tokens, float64 sum) equals the wasm kernel's to float32-block accuracy", async () => {
  try {
    const n = 96, t = 700; // 2 full runs of 256 and a ragged one
    const x = matrix(t, n, fillUniform(new Float32Array(t * n), 7));
    const prior = fillUniform(new Float64Array(n * n), 8);
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) prior[i * n + j] = prior[j * n + i];
    const cpu = matrix64(n, n, prior.slice());
    gramAccumulate(cpu, x, 1 / t, { precision: "float32-blocks", keep: 0.25 });
    if (!(await gpuOn())) return;
    const gpu = matrix64(n, n, prior.slice());
    gramAccumulate(gpu, x, 1 / t, { precision: "float32-blocks", keep: 0.25 });
    assert.equal(linalgInfo().gpu!.grams, 1, "the Gram did not go to the GPU");
    let worst = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        assert.equal(gpu.data[i * n + j], gpu.data[j * n + i], "G is not exactly symmetric");
        worst = Math.max(worst, Math.abs(gpu.data[i * n + j] - cpu.data[i * n + j]));
      }
    }
    // Each 256-token float32 partial is within 256·2⁻²³ (|x| ≤ 1) of exact, in either summation order.
    assert.ok(worst <= 2 * 256 * 2 ** -23, `GPU and wasm Gram differ by ${worst}`);
  } finally {
    await closeLinalg();
  }
});

test(
  "stories260K: perplexity with the GPU path equals the wasm path to 1e-4; so does its svdllm-compressed model",
  {
    timeout: 600_000,
  },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "svd-llm-gpu-"));
    try {
      const run = async (gpu: boolean) => {
        const m = await loadModel(MODEL);
        let ppl: number;
        try {
          ppl = (await perplexity(m, m.tokenizer.encode(TEXT, { bos: true }), { window: 512 })).ppl;
        } finally {
          await m.close();
        }
        const out = join(dir, gpu ? "gpu" : "wasm");
        await compress(MODEL, out, {
          method: "svdllm",
          ratio: { removed: 0.2 },
          calibration: { text: TEXT, samples: 8, seqlen: 128 },
        });
        const c = await loadModel(out);
        try {
          const compressed =
            (await perplexity(c, c.tokenizer.encode(TEXT, { bos: true }), { window: 512 })).ppl;
          return { ppl, compressed };
        } finally {
          await c.close();
        }
      };
      if (!(await gpuOn())) return;
      await initLinalg({}); // the wasm path first
      const wasm = await run(false);
      assert.ok(Math.abs(wasm.ppl / 5.3885 - 1) < 1e-3, `wasm ppl ${wasm.ppl}`);
      // Products of 2¹⁶ multiply-adds and more: the model's linears, attention and head, and every Gram.
      assert.ok(await gpuOn(1 << 16));
      const gpu = await run(true);
      const info = linalgInfo().gpu!;
      assert.ok(info.products > 100 && info.grams > 0, `too little ran on the GPU: ${JSON.stringify(info)}`);
      assert.ok(Math.abs(gpu.ppl / wasm.ppl - 1) <= 1e-4, `ppl GPU ${gpu.ppl} vs wasm ${wasm.ppl}`);
      assert.ok(
        Math.abs(gpu.compressed / wasm.compressed - 1) <= 1e-4,
        `compressed ppl GPU ${gpu.compressed} vs wasm ${wasm.compressed}`,
      );
      assert.ok(gpu.compressed > wasm.ppl, "compression did not change the model");
    } finally {
      await closeLinalg();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
