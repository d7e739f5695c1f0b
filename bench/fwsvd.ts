/**
 * FWSVD benchmark: perplexity of FWSVD (Fisher per input feature, the default, and per output row) against
 * plain SVD at 20 / 40 / 60 % removed, with the time of the Fisher pass and of the factorisations and the peak
 * RSS, on the bundled stories260K and on ../shared's tinylm-brown — the protocols of bench/methods.ts:
 * - stories260K: TinyStories validation text tokenized once with one BOS; calibration windows (32 × 256, random,
 *   seed 0) from its first half; evaluation on its second half in windows of 512.
 * - tinylm-brown: calibration from brown-calib.txt (64 × 256, random, seed 0); evaluation on the first 20,000
 *   tokens of brown-valid.txt in windows of 256, whole windows only.
 * Each model runs in its own process (one Fisher pass, reused for every ratio and side); the peak RSS is that of
 * the Fisher pass (the loaded model included; the RSS before it is printed too), the factorisations and
 * evaluations come after. Plain SVD is timed in the same process as the reference.
 *
 * Usage: deno run -A bench/fwsvd.ts [--models stories,brown] [--ratios 0.2,0.4,0.6] [--samples N] [--shared DIR]
 *
 * @module
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { arg, childJson, modelPath, protocolTokens, SHARED } from "./protocol.ts";

async function child(model: string): Promise<void> {
  const { loadModel } = await import("../src/model/load.ts");
  const { perplexity } = await import("../src/eval/perplexity.ts");
  const { calibrationWindows } = await import("../src/calib/windows.ts");
  const { factoredReader, fisherInformation, fwsvdModel } = await import("../src/pipeline/fwsvd.ts");
  const { createPeakMemory } = await import("../src/pipeline/memory.ts");
  const { compressSvd } = await import("../src/methods/svd.ts");
  const { rankFor } = await import("../src/methods/ratio.ts");
  const { BLOCK_FIELD, loadBlock } = await import("../src/model/llama.ts");
  const { LINEAR_NAMES, linearPrefix } = await import("../src/model/names.ts");
  const m = await loadModel(modelPath(model as "stories" | "brown"));
  const { calib, evalIds, window, samples: protocolSamples } = await protocolTokens(
    model as "stories" | "brown",
    m.tokenizer,
  );
  const samples = Number(arg("samples", String(protocolSamples)));
  const ratios = arg("ratios", "0.2,0.4,0.6").split(",").map(Number);
  const baseMB = process.memoryUsage().rss / 2 ** 20; // the loaded model and the token streams
  const peak = createPeakMemory(10);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const windows = calibrationWindows(calib, { samples, seqlen: 256, seed: 0 });
  const fisher = await fisherInformation(m, windows);
  const fisherWall = (performance.now() - t0) / 1000, fisherCpu = (process.cpuUsage(cpu0).user) / 1e6;
  peak.sample();
  peak.stop(); // the Fisher pass's peak; the factorisations and evaluations come after
  const out: Record<string, unknown>[] = [];
  const dense = (await perplexity(m, evalIds, { window })).ppl;
  for (const r of ratios) {
    const row: Record<string, unknown> = { model, removed: r, dense, fisherWall, fisherCpu, samples };
    for (const side of ["input", "output"] as const) {
      const c0 = process.cpuUsage();
      const c = await fwsvdModel(m, { ratio: { removed: r }, calibration: { windows }, fisher, side });
      row[`${side}FactorCpu`] = process.cpuUsage(c0).user / 1e6;
      row[side] = (await perplexity(c, evalIds, { window })).ppl;
    }
    const s0 = process.cpuUsage();
    const f = new Map();
    for (let i = 0; i < m.spec.numLayers; i++) {
      const b = await loadBlock(m.reader, m.spec, i);
      for (const n of LINEAR_NAMES) {
        const lin = b[BLOCK_FIELD[n]];
        if (lin.kind !== "dense") throw new Error("dense input expected");
        const s = compressSvd(lin.weight, rankFor(lin.weight.rows, lin.weight.cols, { removed: r }));
        f.set(linearPrefix(i, n), { a: s.a, b: s.b });
      }
    }
    row.svdCpu = process.cpuUsage(s0).user / 1e6;
    row.svd =
      (await perplexity({ spec: m.spec, reader: factoredReader(m.reader, f) }, evalIds, { window })).ppl;
    out.push(row);
    console.error(JSON.stringify(row));
  }
  console.log(JSON.stringify({ rows: out, peakRssMB: peak.peak() / 2 ** 20, baseMB }));
  await m.close();
}

function runChild(
  model: string,
): Promise<{ rows: Record<string, number>[]; peakRssMB: number; baseMB: number }> {
  return childJson([fileURLToPath(import.meta.url), "--child", model, ...process.argv.slice(2)], true);
}

if (process.argv.includes("--child")) await child(arg("child", "stories"));
else {
  console.log(
    "| model · % removed | svd | fwsvd (input) | fwsvd (output rows) | Fisher pass wall / CPU s | factor CPU s (input · output · svd) | Fisher pass peak RSS MB |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- |");
  for (const model of arg("models", "stories,brown").split(",")) {
    if (model === "brown" && !existsSync(join(SHARED, "models/tinylm-brown"))) {
      console.log(`(tinylm-brown skipped: ${join(SHARED, "models/tinylm-brown")} absent; --shared DIR)`);
      continue;
    }
    const { rows, peakRssMB, baseMB } = await runChild(model);
    for (const r of rows) {
      const f = (v: number) => v >= 1000 ? v.toFixed(0) : v.toFixed(2);
      console.log(
        `| ${model === "stories" ? "stories260K" : "tinylm-brown"} · ${r.removed * 100} | ${f(r.svd)} | ${
          f(r.input)
        } | ${f(r.output)} | ${r.fisherWall.toFixed(1)} / ${r.fisherCpu.toFixed(1)} | ${
          r.inputFactorCpu.toFixed(2)
        } · ${r.outputFactorCpu.toFixed(2)} · ${r.svdCpu.toFixed(2)} | ${peakRssMB.toFixed(0)} |`,
      );
    }
    console.log(
      `(dense ppl ${rows[0].dense.toFixed(2)}, ${
        rows[0].samples
      } calibration windows of 256; RSS before the Fisher pass ${
        baseMB.toFixed(0)
      } MB, peak RSS during it in the table)`,
    );
  }
}
