/**
 * How close do cheap proxies come to ASVD's full sensitivity sweep? On tinylm-brown (32 × 256 calibration
 * tokens from brown-calib.txt, seed 0, as `compress` draws them), this computes for every linear the
 * per-component losses of ASVD's truncation (the loss-aware Fisher estimate `compress` uses by default, its
 * own output error on the calibration inputs, and SVD-LLM's whitened σ² tail), reads the full sweep's table from a cache written by `sensitivitySweep` (or runs it), then
 * allocates ranks at the target removal with each loss and each rule, and evaluates every allocation on the
 * first 20,000 tokens of brown-valid.txt in windows of 256 (the README's protocol). Prints one row per
 * allocation: achieved removal, ppl, and how far its per-linear parameters are from the sweep's.
 *
 * Usage: deno run -A tools/asvd_allocation_reference.ts [--removed 0.25] [--threads 2] [--cache FILE]
 *
 * @module
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { AbsMeanObserver } from "../src/calib/abs_mean.ts";
import { calibrationWindows } from "../src/calib/windows.ts";
import { initLinalg } from "../src/linalg/backend.ts";
import type { Matrix } from "../src/linalg/matrix.ts";
import { allocateRanks, type LossCurve } from "../src/methods/allocation.ts";
import { asvdFactors, type AsvdSpectrum, asvdSpectrum } from "../src/methods/asvd.ts";
import { allocateBySensitivity, sweepCurves } from "../src/methods/asvd_sensitivity.ts";
import { keptRank, lowRankParams } from "../src/methods/ratio.ts";
import {
  BLOCK_FIELD,
  embed,
  forwardBlock,
  type Linear,
  type LlamaBlock,
  loadBlock,
  loadHead,
  tokenNll,
} from "../src/model/llama.ts";
import { loadModel } from "../src/model/load.ts";
import { LINEAR_NAMES, type LinearName, linearPrefix } from "../src/model/names.ts";
import { sensitivitySweep } from "../src/pipeline/sensitivity.ts";
import {
  calibratedCurves,
  fisherLosses,
  lossCurves,
  truncationLosses,
} from "../src/pipeline/truncation_losses.ts";

// ../shared beside the checkout (CI), or two levels up from a git worktree.
const ROOT = fileURLToPath(new URL("../", import.meta.url));
const SHARED = [join(ROOT, "../shared"), join(ROOT, "../../shared")].find((p) => existsSync(p)) ??
  join(ROOT, "../shared");
function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const removed = Number(arg("removed", "0.25")), threads = Number(arg("threads", "2"));
const cacheFile = arg("cache", "/tmp/speed/sweep-32.json");
if (threads > 1) await initLinalg({ threads });

const m = await loadModel(join(SHARED, "models/tinylm-brown"));
const { spec, reader } = m;
const calibIds = m.tokenizer.encode(await readFile(join(SHARED, "data/brown-calib.txt"), "utf8"), {
  bos: true,
});
const validIds = m.tokenizer.encode(await readFile(join(SHARED, "data/brown-valid.txt"), "utf8"), {
  bos: true,
});
const windows = calibrationWindows(calibIds, { samples: 32, seqlen: 256, seed: 0 });
const head = await loadHead(reader, spec);
const blocks: LlamaBlock[] = [];
for (let i = 0; i < spec.numLayers; i++) blocks.push(await loadBlock(reader, spec, i));

// Per linear: the ASVD spectrum of W·S for the factors (original activations, as the sweep), and the two
// per-component losses from the library's one-pass estimate.
const t0 = performance.now();
const asvdLoss = await truncationLosses(m, windows, { method: "asvd" });
const whiteLoss = await truncationLosses(m, windows, { method: "svdllm" });
const fisherLoss = await fisherLosses(m, windows);
console.log(
  `proxies: ${((performance.now() - t0) / 1000 / 2).toFixed(1)} s each (calibration pass + 42 spectra)`,
);
interface Info {
  name: string;
  m: number;
  n: number;
  sp: AsvdSpectrum;
}
const infos: Info[] = [];
let h = embed(head, spec, windows);
const layout = { batch: 8, seq: 256 };
for (let i = 0; i < spec.numLayers; i++) {
  const abs = new Map<LinearName, AbsMeanObserver>();
  const out = new Float32Array(h.data.length);
  for (let s0 = 0; s0 < windows.length; s0 += 8) {
    const x: Matrix = {
      rows: 8 * 256,
      cols: h.cols,
      data: h.data.subarray(s0 * 256 * h.cols, (s0 + 8) * 256 * h.cols),
    };
    const y = forwardBlock(spec, blocks[i], x, layout, (l, input) => {
      if (!abs.has(l)) abs.set(l, new AbsMeanObserver(l, input.cols));
      abs.get(l)!.addBatch(input);
    });
    out.set(y.data, s0 * 256 * h.cols);
  }
  for (const l of LINEAR_NAMES) {
    const w = (blocks[i][BLOCK_FIELD[l]] as Linear & { kind: "dense" }).weight;
    infos.push({
      name: linearPrefix(i, l),
      m: w.rows,
      n: w.cols,
      sp: asvdSpectrum(w, { absMean: abs.get(l)!.mean() }),
    });
  }
  h = { rows: h.rows, cols: h.cols, data: out };
}

const skipSweep = process.argv.includes("--skip-sweep");
const sweep = skipSweep
  ? { table: {}, densePpl: NaN, fromCache: true, seconds: 0 }
  : await sensitivitySweep(m, windows, {
    cacheFile,
    onProgress: (e) => console.error(`sweep ${e.done}/${e.total}`),
  });
console.log(
  `sweep: ${
    sweep.fromCache ? "from cache" : `${sweep.seconds.toFixed(0)} s`
  }, dense calib ppl ${sweep.densePpl}`,
);

const shapes = infos.map((f) => ({ name: f.name, rows: f.m, cols: f.n }));
const curves: Record<string, LossCurve[]> = {
  ...(skipSweep ? {} : { sweep: sweepCurves(sweep.table, shapes, sweep.densePpl) }),
  "fisher (ours, the default)": lossCurves(fisherLoss),
  "output error": lossCurves(asvdLoss),
  "output error / energy": lossCurves(asvdLoss, { relative: true }),
  "whitened σ² tail": lossCurves(whiteLoss),
  "whitened σ² tail / energy": lossCurves(whiteLoss, { relative: true }),
};
// Calibrated: relative output error scaled by one end-to-end point per linear — from the full sweep's table
// (what the best single point could do), and measured by a one-ratio sweep on fewer windows (what it costs).
const pointOf = (table: Record<string, Record<string, number>>, dense: number, p: number) =>
  Object.fromEntries(shapes.map((s) => [s.name, {
    rank: Math.max(1, keptRank(s.rows, s.cols, p)),
    nll: Math.log(table[s.name][String(p)] / dense),
  }]));
if (!skipSweep && !process.argv.includes("--quick")) {
  for (const p of [0.5, 0.6, 0.7]) {
    curves[`calibrated by the sweep at p = ${p}`] = calibratedCurves(
      asvdLoss,
      pointOf(sweep.table, sweep.densePpl, p),
    );
  }
}
for (const [samples, p] of process.argv.includes("--quick") ? [] : [[8, 0.6], [4, 0.6], [8, 0.5]]) {
  const t1 = performance.now(), c1 = process.cpuUsage();
  const one = await sensitivitySweep(m, windows.slice(0, samples), { ratios: [p] });
  const cpu = process.cpuUsage(c1);
  console.log(
    `one-ratio sweep p = ${p} on ${samples} windows: ${
      ((performance.now() - t1) / 1000).toFixed(1)
    } s wall, ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s CPU`,
  );
  curves[`calibrated by ${samples} windows at p = ${p}`] = calibratedCurves(
    asvdLoss,
    pointOf(one.table, one.densePpl, p),
  );
}

// Evaluation: brown-valid, first 78 whole windows of 256.
const evalWindows: Int32Array[] = [];
for (let s = 0; s + 256 <= Math.min(20000, validIds.length); s += 256) {
  evalWindows.push(validIds.slice(s, s + 256));
}
function evaluate(ranks: Record<string, number | null>): number {
  const bs = blocks.map((b, i) => {
    const nb: LlamaBlock = { ...b };
    for (const l of LINEAR_NAMES) {
      const k = ranks[linearPrefix(i, l)];
      if (k === null || k === undefined) continue;
      const f = infos.find((x) => x.name === linearPrefix(i, l))!;
      const { a, b: bb } = asvdFactors(f.sp, k);
      (nb as unknown as Record<string, Linear>)[BLOCK_FIELD[l]] = { kind: "lowrank", a, b: bb };
    }
    return nb;
  });
  let sum = 0, cnt = 0;
  for (let s0 = 0; s0 < evalWindows.length; s0 += 8) {
    const ws = evalWindows.slice(s0, s0 + 8), lay = { batch: ws.length, seq: 256 };
    let x = embed(head, spec, ws);
    for (const b of bs) x = forwardBlock(spec, b, x, lay);
    const tg = new Int32Array(ws.length * 256);
    ws.forEach((w, j) => {
      for (let t = 0; t < 256; t++) tg[j * 256 + t] = t + 1 < 256 ? w[t + 1] : -1;
    });
    const nll = tokenNll(spec, head, x, tg);
    for (let q = 0; q < nll.length; q++) if (tg[q] >= 0) (sum += nll[q]), cnt++;
  }
  return Math.exp(sum / cnt);
}
const params = (ranks: Record<string, number | null>, name: string) => {
  const f = infos.find((x) => x.name === name)!;
  const k = ranks[name];
  return k === null ? f.m * f.n : lowRankParams(f.m, f.n, k);
};
const total = infos.reduce((t, f) => t + f.m * f.n, 0);
const rows: { label: string; ranks: Record<string, number | null> }[] = [];
if (!skipSweep) {
  const cut = allocateBySensitivity(sweep.table, shapes, 1 - removed);
  rows.push({ label: "sweep, paper's cut on the grid", ranks: cut.ranks });
}
const kind = (name: string) => name.replace(/^model\.layers\.\d+\./, "");
for (const [label, cs] of Object.entries(curves)) {
  for (const rule of ["threshold", "marginal"] as const) {
    if (
      process.argv.includes("--quick") && label !== "sweep" && !label.includes("energy") &&
      !label.startsWith("fisher")
    ) continue;
    rows.push({ label: `${label}, ${rule}`, ranks: allocateRanks(cs, 1 - removed, { rule }).ranks });
    if (label.includes("energy") && rule === "marginal") {
      rows.push({
        label: `${label}, ${rule}, within each kind of linear (ours)`,
        ranks: allocateRanks(cs, 1 - removed, { rule, groupOf: kind }).ranks,
      });
    }
  }
}
const uni: Record<string, number | null> = {};
for (const f of infos) uni[f.name] = Math.floor((f.m * f.n * (1 - removed)) / (f.m + f.n));
rows.push({ label: "uniform", ranks: uni });
const ref = rows[skipSweep ? 0 : 1].ranks; // sweep, threshold
console.log(`dense eval ppl ${evaluate(Object.fromEntries(infos.map((f) => [f.name, null])))}`);
console.log(
  `| allocation | removed | ppl | Σ|Δparams| vs sweep-threshold | ranks (block 0 q k v o gate up down) |`,
);
for (const r of rows) {
  let after = 0, diff = 0;
  for (const f of infos) {
    after += params(r.ranks, f.name);
    diff += Math.abs(params(r.ranks, f.name) - params(ref, f.name));
  }
  const b0 = LINEAR_NAMES.map((l) => r.ranks[linearPrefix(0, l)] ?? "D").join(" ");
  console.log(
    `| ${r.label} | ${(100 * (1 - after / total)).toFixed(2)} % | ${evaluate(r.ranks).toFixed(2)} | ${
      (100 * diff / total).toFixed(1)
    } % | ${b0} |`,
  );
  console.error(JSON.stringify({ label: r.label, ranks: r.ranks }));
}
await m.close();
