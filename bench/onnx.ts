/**
 * ONNX export benchmark, onnxruntime-web (wasm backend, one thread):
 *
 * 1. dtypes: perplexity of the exported stories260K (bundled text, window 512) and tinylm-brown (first 8192
 *    tokens of brown-valid, window 512) in f32, f16 and int8, against our forward pass's, and each file's size;
 * 2. size and speed at 40 % removed: tinylm-brown (../shared; stories260K when absent) compressed by svdllm
 *    40 %, exported, against the dense export: file-size ratio next to the achieved parameter ratio, and the
 *    per-token latency of cached greedy decoding, dense and compressed measured alternately in the same run
 *    (median of `--repeat` rounds, wall and CPU time).
 *
 * Usage: deno run -A bench/onnx.ts [--tokens 64] [--repeat 5] [--skip-dtypes] [--skip-speed]
 *
 * @module
 */
import { existsSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { exportOnnx } from "../src/export/onnx.ts";
import { compress } from "../src/pipeline/compress.ts";
import { loadModel } from "../src/model/load.ts";
import { perplexity } from "../src/eval/perplexity.ts";
import type { ExportDtype } from "../src/export/graph.ts";
import { BROWN, feeds, onnxPerplexity, ort, SHARED_DIR } from "../test/export/_onnx.ts";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const STORIES = join(ROOT, "models/stories260K/stories260K.gguf");

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const tokens = Number(arg("tokens", "64")), repeat = Number(arg("repeat", "5"));
const skipSpeed = process.argv.includes("--skip-speed");
const work = await mkdtemp(join(tmpdir(), "svdllm-bench-onnx-"));
const fileBytes = async (dir: string) => (await readFile(join(dir, "onnx/model.onnx"))).length;

try {
  if (!process.argv.includes("--skip-dtypes")) {
    const cases: [string, string, string, number][] = [
      ["stories260K", STORIES, join(ROOT, "data/tinystories-valid.part1.txt"), 512],
    ];
    if (existsSync(join(BROWN, "model.safetensors"))) {
      cases.push(["tinylm-brown", BROWN, join(SHARED_DIR, "data/brown-valid.txt"), 512]);
    }
    for (const [name, path, textFile, window] of cases) {
      const m = await loadModel(path);
      const ids = m.tokenizer.encode(await readFile(textFile, "utf8"), { bos: true }).slice(0, 8192);
      const ours = await perplexity(m, ids, { window });
      console.log(`\n${name}, ${textFile.split("/").pop()} (${ids.length} tokens), window ${window}:`);
      console.log(`  our forward pass ppl ${ours.ppl.toFixed(4)}`);
      console.log("  dtype  file bytes  ratio  onnxruntime-web ppl  Δ vs ours");
      let dense = 0;
      for (const dtype of ["f32", "f16", "int8"] as ExportDtype[]) {
        const out = join(work, `${name}-${dtype}`);
        await exportOnnx(path, out, { dtype });
        const bytes = await fileBytes(out);
        dense ||= bytes;
        const s = await ort.InferenceSession.create(join(out, "onnx/model.onnx"));
        const r = await onnxPerplexity(s, m, ids, window);
        await s.release();
        const delta = r.ppl - ours.ppl;
        console.log(
          `  ${dtype.padEnd(5)}  ${String(bytes).padStart(10)}  ${(bytes / dense).toFixed(3)}  ${
            r.ppl.toFixed(4).padStart(19)
          }  ${(delta >= 0 ? "+" : "") + delta.toFixed(4)}`,
        );
      }
      await m.close();
    }
  }

  if (!skipSpeed) {
    const useBrown = existsSync(join(BROWN, "model.safetensors"));
    const input = useBrown ? BROWN : STORIES, name = useBrown ? "tinylm-brown" : "stories260K";
    const calibText = await readFile(
      useBrown ? join(SHARED_DIR, "data/brown-calib.txt") : join(ROOT, "data/tinystories-valid.part1.txt"),
      "utf8",
    );
    const small = join(work, "svdllm40");
    const report = await compress(input, small, {
      method: "svdllm",
      ratio: { removed: 0.4 },
      calibration: { text: calibText.slice(0, 400_000), samples: 16, seqlen: 256, seed: 1 },
    });
    await exportOnnx(input, join(work, "dense-onnx"));
    await exportOnnx(small, join(work, "small-onnx"));
    const db = await fileBytes(join(work, "dense-onnx")), sb = await fileBytes(join(work, "small-onnx"));
    const params = report.params.model;
    console.log(`\n${name}, svdllm 40 % of each linear removed:`);
    console.log(`  parameters kept ${(1 - params.removed).toFixed(4)} of the model's`);
    console.log(`  ONNX file ${sb} vs dense ${db} bytes: ratio ${(sb / db).toFixed(4)}`);

    const m = await loadModel(input);
    const prompt = m.tokenizer.encode("The jury said", { bos: true });
    const sessions = {
      dense: await ort.InferenceSession.create(join(work, "dense-onnx/onnx/model.onnx")),
      small: await ort.InferenceSession.create(join(work, "small-onnx/onnx/model.onnx")),
    };
    /** Greedy cached decoding of `tokens` tokens; returns [wall ms, cpu ms] per generated token. */
    const decode = async (s: ort.InferenceSession): Promise<[number, number]> => {
      let out = await s.run(feeds(m, prompt, 0));
      let past = prompt.length;
      const t0 = performance.now(), c0 = process.cpuUsage();
      for (let i = 0; i < tokens; i++) {
        const l = out.logits.data as Float32Array, V = m.spec.vocabSize, off = l.length - V;
        let best = 0;
        for (let j = 1; j < V; j++) if (l[off + j] > l[off + best]) best = j;
        out = await s.run(feeds(m, Int32Array.of(best), past, out as Record<string, ort.Tensor>));
        past++;
      }
      const c = process.cpuUsage(c0);
      return [(performance.now() - t0) / tokens, (c.user + c.system) / 1000 / tokens];
    };
    await decode(sessions.dense), await decode(sessions.small); // warm-up
    const rows: Record<"dense" | "small", [number, number][]> = { dense: [], small: [] };
    for (let r = 0; r < repeat; r++) {
      rows.dense.push(await decode(sessions.dense));
      rows.small.push(await decode(sessions.small));
    }
    const median = (a: number[]) => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)];
    const [dw, dc] = [median(rows.dense.map((r) => r[0])), median(rows.dense.map((r) => r[1]))];
    const [sw, sc] = [median(rows.small.map((r) => r[0])), median(rows.small.map((r) => r[1]))];
    console.log(
      `  per-token latency, onnxruntime-web wasm 1 thread, ${tokens} cached tokens, median of ${repeat}:`,
    );
    console.log(`    dense ${dw.toFixed(3)} ms wall / ${dc.toFixed(3)} ms CPU`);
    console.log(`    svdllm 40 % ${sw.toFixed(3)} ms wall / ${sc.toFixed(3)} ms CPU`);
    console.log(`    ratio compressed/dense: wall ${(sw / dw).toFixed(3)}, CPU ${(sc / dc).toFixed(3)}`);
    await sessions.dense.release();
    await sessions.small.release();
    await m.close();
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
