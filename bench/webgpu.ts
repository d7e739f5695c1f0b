/**
 * The WebGPU path against the wasm path, measured in the same run: one large SGEMM, the stories260K perplexity
 * (5148 tokens, windows of 512) and an svdllm compression of stories260K at 20 % (16 × 128 calibration
 * tokens). Prints wall seconds and the GPU/wasm ratio. On this machine the adapter is lavapipe (Mesa's
 * software Vulkan on the CPU): its figures say nothing about a real GPU's speed, and the script says so
 * whenever the adapter reports itself as a fallback or as llvmpipe.
 *
 * Usage: deno run -A bench/webgpu.ts [--min-work 65536] [--n 1024]
 *
 * @module
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { closeLinalg, initLinalg, linalgInfo } from "../src/linalg/backend.ts";
import { matmul } from "../src/linalg/gemm.ts";
import { matrix } from "../src/linalg/matrix.ts";
import { fillUniform } from "../src/linalg/random.ts";
import { loadModel } from "../src/model/load.ts";
import { perplexity } from "../src/eval/perplexity.ts";
import { compress } from "../src/pipeline/compress.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const MODEL = join(ROOT, "models/stories260K/stories260K.gguf");

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const minWork = Number(arg("min-work", String(1 << 16))), n = Number(arg("n", "1024"));
const text = await readFile(join(ROOT, "data/tinystories-valid.part1.txt"), "utf8");
const dir = await mkdtemp(join(tmpdir(), "svd-llm-bench-gpu-"));

async function timed<T>(f: () => Promise<T> | T): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await f();
  return [r, (performance.now() - t0) / 1000];
}

async function workload(tag: string): Promise<Record<string, number>> {
  const a = matrix(n, n, fillUniform(new Float32Array(n * n), 1));
  const [, gemm] = await timed(() => matmul(a, a, { transB: true }));
  const m = await loadModel(MODEL);
  const ids = m.tokenizer.encode(text, { bos: true });
  const [res, ppl] = await timed(() => perplexity(m, ids, { window: 512 }));
  await m.close();
  const [, comp] = await timed(() =>
    compress(MODEL, join(dir, tag), {
      method: "svdllm",
      ratio: { removed: 0.2 },
      calibration: { text, samples: 16, seqlen: 128 },
    })
  );
  return { gemm, ppl, comp, value: res.ppl };
}

try {
  const info = await initLinalg({ gpu: true, gpuMinWork: minWork });
  if (!info.gpu) {
    console.log(`no GPU path here: ${info.gpuNote}`);
    process.exit(0);
  }
  const soft = info.gpu.fallback || /llvmpipe|lavapipe|swiftshader/i.test(info.gpu.adapter);
  await initLinalg({}); // wasm, one thread
  const wasm = await workload("wasm");
  await initLinalg({ gpu: true, gpuMinWork: minWork });
  const gpu = await workload("gpu");
  const done = linalgInfo().gpu!;
  console.log(
    `adapter: ${done.adapter}${soft ? " — SOFTWARE adapter: says nothing about real-GPU speed" : ""}`,
  );
  console.log(
    `GPU work: ${done.products} products, ${done.grams} Gram accumulations (gpuMinWork ${minWork})`,
  );
  console.log("what                               wasm s     GPU s   GPU/wasm");
  for (
    const [label, key] of [
      [`SGEMM ${n}×${n}×${n}`, "gemm"],
      ["stories260K perplexity (5148 tok)", "ppl"],
      ["stories260K svdllm 20 % compress", "comp"],
    ] as const
  ) {
    console.log(
      `${label.padEnd(34)} ${wasm[key].toFixed(3).padStart(7)} ${gpu[key].toFixed(3).padStart(9)} ${
        (gpu[key] / wasm[key]).toFixed(2).padStart(9)
      }`,
    );
  }
  console.log(`perplexity: wasm ${wasm.value.toFixed(6)}, GPU ${gpu.value.toFixed(6)}`);
} finally {
  await closeLinalg();
  await rm(dir, { recursive: true, force: true });
}
