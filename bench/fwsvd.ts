/**
 * FWSVD benchmark: perplexity of FWSVD's weightings against plain SVD (and SVD-LLM for context) at 20 / 40 /
 * 60 % removed, with the CPU time of the Fisher passes and the peak RSS, on the bundled stories260K and on
 * ../shared's tinylm-brown — the protocols of bench/methods.ts:
 * - stories260K: TinyStories validation text tokenized once with one BOS; calibration windows (32 × 256, random,
 *   seed 0) from its first half; evaluation on its second half in windows of 512.
 * - tinylm-brown: calibration from brown-calib.txt (64 × 256, random, seed 0); evaluation on the first 20,000
 *   tokens of brown-valid.txt in windows of 256, whole windows only.
 * Variants (`--variants`, default all): `svd`; `svdllm` (the library's default, sequential whitening, written
 * by compress() and reloaded); `kfac-seq` (FWSVD's default: K-FAC two-sided, input factors on the compressed
 * prefix); `kfac` (K-FAC from the dense model); `both` (diagonal two-sided); `input`; `output` (the paper's
 * rows). Each model runs in its own process; one dense Fisher pass (with K-FAC factors) serves every ratio and
 * dense variant; `kfac-seq` reuses its output factors and adds a forward pass per ratio. Peak RSS is the whole
 * child's (the loaded model included; the RSS before the Fisher pass is printed too).
 *
 * Usage: deno run -A bench/fwsvd.ts [--models stories,brown] [--ratios 0.2,0.4,0.6] [--samples N]
 *   [--variants svd,svdllm,kfac-seq,kfac,both,input,output] [--shared DIR]
 *
 * @module
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

/** The shared material (models, texts): `--shared DIR`, default ../shared beside the checkout. */
const SHARED = arg("shared", join(ROOT, "../shared"));
const ALL = ["svd", "svdllm", "kfac-seq", "kfac", "both", "input", "output"];
const VARIANTS = arg("variants", ALL.join(",")).split(",");

/** CPU seconds (user + system) of this process so far. */
function cpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function child(model: string): Promise<void> {
  const { loadModel } = await import("../src/model/load.ts");
  const { perplexity } = await import("../src/eval/perplexity.ts");
  const { calibrationWindows } = await import("../src/calib/windows.ts");
  const { factoredReader, fisherInformation, fwsvdModel } = await import("../src/pipeline/fwsvd.ts");
  const { compress } = await import("../src/pipeline/compress.ts");
  const { createPeakMemory } = await import("../src/pipeline/memory.ts");
  const { compressSvd } = await import("../src/methods/svd.ts");
  const { rankFor } = await import("../src/methods/ratio.ts");
  const { BLOCK_FIELD, loadBlock } = await import("../src/model/llama.ts");
  const { LINEAR_NAMES, linearPrefix } = await import("../src/model/names.ts");
  const stories = model === "stories";
  const path = stories
    ? join(ROOT, "models/stories260K/stories260K.gguf")
    : join(SHARED, "models/tinylm-brown");
  const m = await loadModel(path);
  let calib: number[] | Int32Array, evalIds: Int32Array | number[], window: number, samples: number;
  if (stories) {
    const shared = join(SHARED, "data/tinystories-valid.part1.txt");
    const text = await readFile(
      existsSync(shared) ? shared : join(ROOT, "data/tinystories-valid.part1.txt"),
      "utf8",
    );
    const ids = m.tokenizer.encode(text, { bos: true }), half = Math.floor(ids.length / 2);
    [calib, evalIds, window, samples] = [ids.slice(0, half), ids.slice(half), 512, 32];
  } else {
    calib = m.tokenizer.encode(await readFile(join(SHARED, "data/brown-calib.txt"), "utf8"), { bos: true });
    const valid = m.tokenizer.encode(await readFile(join(SHARED, "data/brown-valid.txt"), "utf8"), {
      bos: true,
    });
    [evalIds, window, samples] = [valid.slice(0, Math.floor(20000 / 256) * 256), 256, 64];
  }
  samples = Number(arg("samples", String(samples)));
  const ratios = arg("ratios", "0.2,0.4,0.6").split(",").map(Number);
  const baseMB = process.memoryUsage().rss / 2 ** 20; // the loaded model and the token streams
  const peak = createPeakMemory(10);
  const windows = calibrationWindows(calib, { samples, seqlen: 256, seed: 0 });
  const t0 = performance.now();
  let c0 = cpu();
  const fisher = await fisherInformation(m, windows, { kfac: true });
  const fisherCpu = cpu() - c0, fisherWall = (performance.now() - t0) / 1000;
  const ppl = async (x: Parameters<typeof perplexity>[0]) => (await perplexity(x, evalIds, { window })).ppl;
  const out: Record<string, unknown>[] = [];
  const dense = await ppl(m);
  const dir = await mkdtemp(join(tmpdir(), "bench-fwsvd-"));
  try {
    for (const r of ratios) {
      const row: Record<string, number | string> = {
        model,
        removed: r,
        dense,
        fisherCpu,
        fisherWall,
        samples,
      };
      const ratio = { removed: r };
      for (const v of VARIANTS) {
        c0 = cpu();
        if (v === "svd") {
          const f = new Map();
          for (let i = 0; i < m.spec.numLayers; i++) {
            const b = await loadBlock(m.reader, m.spec, i);
            for (const n of LINEAR_NAMES) {
              const lin = b[BLOCK_FIELD[n]];
              if (lin.kind !== "dense") throw new Error("dense input expected");
              const s = compressSvd(lin.weight, rankFor(lin.weight.rows, lin.weight.cols, ratio));
              f.set(linearPrefix(i, n), { a: s.a, b: s.b });
            }
          }
          row[`${v}Cpu`] = cpu() - c0;
          row[v] = await ppl({ spec: m.spec, reader: factoredReader(m.reader, f) });
        } else if (v === "svdllm") {
          const text = { ids: calib, samples, seqlen: 256, seed: 0 };
          await compress(path, join(dir, `svdllm-${r}`), { method: "svdllm", ratio, calibration: text });
          row[`${v}Cpu`] = cpu() - c0;
          const c = await loadModel(join(dir, `svdllm-${r}`));
          row[v] = await ppl(c);
          await c.close();
        } else {
          const side = v === "kfac-seq" ? "kfac" : v as "kfac" | "both" | "input" | "output";
          const c = await fwsvdModel(m, {
            ratio,
            calibration: { windows },
            fisher,
            side,
            sequential: v === "kfac-seq" ? "inputs" : false,
          });
          row[`${v}Cpu`] = cpu() - c0;
          row[v] = await ppl(c);
        }
        console.error(JSON.stringify({ model, removed: r, variant: v, ppl: row[v], cpu: row[`${v}Cpu`] }));
      }
      out.push(row);
    }
  } finally {
    await fisher.kfac?.close();
    await rm(dir, { recursive: true, force: true });
  }
  peak.stop();
  console.log(JSON.stringify({ rows: out, peakRssMB: peak.peak() / 2 ** 20, baseMB }));
  await m.close();
}

function runChild(
  model: string,
): Promise<{ rows: Record<string, number>[]; peakRssMB: number; baseMB: number }> {
  return new Promise((resolve, reject) => {
    const args = ["run", "-A", fileURLToPath(import.meta.url), "--child", model, ...process.argv.slice(2)];
    const p = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    let s = "";
    p.stdout.on("data", (d) => (s += d));
    p.on(
      "close",
      (code) =>
        code === 0
          ? resolve(JSON.parse(s.trim().split("\n").pop()!))
          : reject(new Error(`${model}: exit ${code}`)),
    );
  });
}

if (process.argv.includes("--child")) await child(arg("child", "stories"));
else {
  const f = (v: number | undefined) => v === undefined ? "—" : v >= 1000 ? v.toFixed(0) : v.toFixed(2);
  console.log(`| model · % removed | ${VARIANTS.join(" | ")} | CPU s (${VARIANTS.join(" · ")}) |`);
  console.log(`| --- | ${VARIANTS.map(() => "---").join(" | ")} | --- |`);
  for (const model of arg("models", "stories,brown").split(",")) {
    if (model === "brown" && !existsSync(join(SHARED, "models/tinylm-brown"))) {
      console.log(`(tinylm-brown skipped: ${join(SHARED, "models/tinylm-brown")} absent; --shared DIR)`);
      continue;
    }
    const { rows, peakRssMB, baseMB } = await runChild(model);
    for (const r of rows) {
      console.log(
        `| ${model === "stories" ? "stories260K" : "tinylm-brown"} · ${r.removed * 100} | ${
          VARIANTS.map((v) => f(r[v])).join(" | ")
        } | ${VARIANTS.map((v) => r[`${v}Cpu`].toFixed(1)).join(" · ")} |`,
      );
    }
    console.log(
      `(dense ppl ${f(rows[0].dense)}; ${
        rows[0].samples
      } calibration windows of 256; dense Fisher pass with K-FAC factors ${
        rows[0].fisherCpu.toFixed(1)
      } CPU-s, ${rows[0].fisherWall.toFixed(1)} s wall, shared by every ratio and variant; peak RSS ${
        peakRssMB.toFixed(0)
      } MB, ${baseMB.toFixed(0)} MB before the Fisher pass)`,
    );
  }
}
