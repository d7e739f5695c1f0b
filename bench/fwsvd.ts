/**
 * FWSVD benchmark: perplexity of FWSVD's weightings against plain SVD (and SVD-LLM for context) at 20 / 40 /
 * 60 % removed, with the CPU time of the Fisher passes and the peak RSS, on the bundled stories260K and on
 * ../shared's tinylm-brown — the protocol of bench/methods.ts, set up by bench/protocol.ts (calibration
 * windows of 256 drawn at random, seed 0; 32 on stories260K, 64 on tinylm-brown).
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
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { arg, childJson, modelPath, type ProtocolModel, protocolTokens, SHARED } from "./protocol.ts";

const ALL = ["svd", "svdllm", "kfac-seq", "kfac", "both", "input", "output"];
const VARIANTS = arg("variants", ALL.join(",")).split(",");

/** CPU seconds (user + system) of this process so far. */
function cpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function child(model: ProtocolModel): Promise<void> {
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
  const path = modelPath(model);
  const m = await loadModel(path);
  const { calib, evalIds, window, samples: protocolSamples } = await protocolTokens(model, m.tokenizer);
  const samples = Number(arg("samples", String(protocolSamples)));
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

/** One model's rows in a child process of its own (its time and peak RSS are its own; its log is echoed). */
function runChild(
  model: ProtocolModel,
): Promise<{ rows: Record<string, number>[]; peakRssMB: number; baseMB: number }> {
  return childJson([fileURLToPath(import.meta.url), "--child", model, ...process.argv.slice(2)], true);
}

if (process.argv.includes("--child")) await child(arg("child", "stories") as ProtocolModel);
else {
  const f = (v: number | undefined) => v === undefined ? "—" : v >= 1000 ? v.toFixed(0) : v.toFixed(2);
  console.log(`| model · % removed | ${VARIANTS.join(" | ")} | CPU s (${VARIANTS.join(" · ")}) |`);
  console.log(`| --- | ${VARIANTS.map(() => "---").join(" | ")} | --- |`);
  for (const model of arg("models", "stories,brown").split(",") as ProtocolModel[]) {
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
