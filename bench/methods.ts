/**
 * Methods benchmark: perplexity, compression time (wall and CPU) and peak RSS of plain SVD, ASVD, SVD-LLM
 * (whitening) and SVD-LLM (+ update) — and on request FWSVD, per-matrix-rank SVD-LLM and SoCo — at 20 / 40 /
 * 60 % removed, on the bundled stories260K and on ../shared's tinylm-brown.
 * Each compression runs in its own process so that its time and peak RSS are its own.
 *
 * Protocols.
 * - tinylm-brown (methods.md "Peers"): calibration from brown-calib.txt, 64 × 256 tokens for SVD-LLM and
 *   32 × 256 for ASVD (random windows, seed 0); evaluation on the first 20,000 tokens of brown-valid.txt
 *   (tokenized once with one BOS) in windows of 256, whole windows only (19,968 tokens, as the peers'
 *   evaluator drops the partial last window). Dense ppl 118.85. Also ASVD with the
 *   sensitivity sweep (0.4…0.9) at kept 0.8, the peers' ASVD setting, except that the sweep measures
 *   perplexity on the first 8 calibration windows (`--sweep-samples N` to change; the peers used all 32).
 * - stories260K: TinyStories validation text tokenized once with one BOS; calibration windows (32 × 256)
 *   from its first half, evaluation on its second half in windows of 512.
 * - SVD-LLM three ways: whitening from the original model's activations (the paper's and the reference
 *   code's "SVD-LLM (W)"), that whitening + the closed-form update of A on the compressed prefix's
 *   activations (the reference's whitening_local_update), and sequential whitening (our default, whitening
 *   from the compressed prefix's activations; not in the paper). The paper's ordering
 *   (whitening ≥ + update) compares the first two. ASVD: uniform allocation, scales from the sequential
 *   stream (our default; the ASVD reference scales from the original activations).
 *
 * The protocol set-up (paths, tokens, windows, one child per job) is bench/protocol.ts, shared with
 * bench/soco.ts and bench/fwsvd.ts.
 *
 * - FWSVD (K-FAC, its default), per-matrix-rank SVD-LLM (`allocation: "global"`) and SoCo (both bases), each
 *   with the library's defaults, on the same protocol (`--methods fwsvd,svdllm-global,soco,soco-svd`).
 *
 * Usage: deno run -A bench/methods.ts [--models stories,brown] [--ratios 0.2,0.4,0.6] [--threads N]
 *        [--methods svd,asvd,svdllm-orig,svdllm,svdllm-update,svdllm-global,fwsvd,soco,soco-svd,asvd-sweep]
 *        [--no-sweep]
 *
 * @module
 */
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { arg, childJson, protocolData, SHARED } from "./protocol.ts";

interface Job {
  model: "stories" | "brown";
  method: "svd" | "asvd" | "svdllm" | "fwsvd" | "soco";
  /** Key for `--methods`: svd, asvd, svdllm-orig, svdllm, svdllm-update, svdllm-global, fwsvd, soco, soco-svd, asvd-sweep. */
  key: string;
  label: string;
  ratio: { removed: number } | { kept: number };
  update?: boolean;
  /** false: statistics from the original model's activations (the references' protocol). */
  sequential?: boolean;
  allocation?: "uniform" | "sweep" | "global";
  /** SoCo's basis (library default: whitened). */
  basis?: "whitened" | "svd";
  samples: number;
}

interface JobResult {
  job: Job;
  ppl: number;
  densePpl: number;
  seconds: number;
  /** The child's user + system CPU seconds for the compression alone (all threads). */
  cpuSeconds: number;
  sweepSeconds?: number;
  peakRssMB: number;
  linearsRemoved: number;
  modelRemoved: number;
}

/** Child: run one job, print its JSON result as the last line. */
async function runOne(job: Job): Promise<void> {
  const { compress } = await import("../src/pipeline/compress.ts");
  const { perplexity } = await import("../src/eval/perplexity.ts");
  const { openModelWeights } = await import("../src/io/sharded.ts");
  const { specFromHfConfig } = await import("../src/model/spec.ts");
  const { loadModel } = await import("../src/model/load.ts");
  const { initLinalg } = await import("../src/linalg/backend.ts");
  const threads = Number(arg("threads", "1"));
  if (threads > 1) await initLinalg({ threads });
  const d = await protocolData(job.model);
  const dir = await mkdtemp(join(tmpdir(), "bench-methods-"));
  try {
    const out = join(dir, "out");
    const cpu0 = process.cpuUsage();
    const rep = await compress(d.path, out, {
      method: job.method,
      ratio: job.ratio,
      update: job.update,
      sequential: job.sequential,
      allocation: job.allocation,
      sensitivity: job.allocation === "sweep"
        ? {
          cacheFile: join(tmpdir(), `svd-llm-bench-asvd-sensitivity-${job.model}.json`),
          samples: Number(arg("sweep-samples", "8")),
        }
        : undefined,
      soco: job.method === "soco" ? { basis: job.basis } : undefined,
      calibration: { ids: d.calib, samples: job.samples, seqlen: 256, seed: 0 },
      onProgress: (e) => {
        if (e.stage === "sensitivity") {
          console.error(`sweep ${e.done}/${e.total} eta ${e.etaSeconds?.toFixed(0)} s`);
        }
      },
    });
    const cpu = process.cpuUsage(cpu0);
    const config = JSON.parse(await readFile(join(out, "config.json"), "utf8"));
    const reader = await openModelWeights(out);
    const ppl =
      (await perplexity({ spec: specFromHfConfig(config), reader }, d.evalIds, { window: d.window })).ppl;
    await reader.close();
    const dm = await loadModel(d.path);
    const densePpl = (await perplexity(dm, d.evalIds, { window: d.window })).ppl;
    await dm.close();
    const result: JobResult = {
      job,
      ppl,
      densePpl,
      seconds: rep.seconds,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      sweepSeconds: rep.sensitivity?.seconds,
      peakRssMB: rep.peakRssBytes / 2 ** 20,
      linearsRemoved: rep.params.linears.removed,
      modelRemoved: rep.params.model.removed,
    };
    console.log(JSON.stringify(result));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function child(job: Job): Promise<JobResult> {
  const argv = [
    fileURLToPath(import.meta.url),
    "--one",
    JSON.stringify(job),
    "--threads",
    arg("threads", "1"),
  ];
  return childJson<JobResult>(argv);
}

async function main(): Promise<void> {
  const one = process.argv.indexOf("--one");
  if (one >= 0) return await runOne(JSON.parse(process.argv[one + 1]));
  const models = arg("models", "stories,brown").split(",") as Job["model"][];
  const ratios = arg("ratios", "0.2,0.4,0.6").split(",").map(Number);
  const jobs: Job[] = [];
  for (const model of models) {
    if (model === "brown" && !existsSync(join(SHARED, "models/tinylm-brown"))) {
      console.log("skipping tinylm-brown: ../shared is absent");
      continue;
    }
    const svdSamples = model === "brown" ? 64 : 32, asvdSamples = 32;
    for (const r of ratios) {
      const ratio = { removed: r }, samples = svdSamples;
      jobs.push({ model, method: "svd", key: "svd", label: "svd", ratio, samples });
      jobs.push({ model, method: "asvd", key: "asvd", label: "asvd (uniform)", ratio, samples: asvdSamples });
      // The paper's SVD-LLM (W) whitens with the original model's activations; "+ update" also starts from
      // that whitening. Sequential whitening (our default) is a third, stronger variant, not the paper's.
      jobs.push({
        model,
        method: "svdllm",
        key: "svdllm-orig",
        label: "svdllm (whitening, original activations)",
        ratio,
        sequential: false,
        samples,
      });
      jobs.push({
        model,
        method: "svdllm",
        key: "svdllm",
        label: "svdllm (whitening, sequential)",
        ratio,
        samples,
      });
      jobs.push({
        model,
        method: "svdllm",
        key: "svdllm-update",
        label: "svdllm (+update)",
        ratio,
        update: true,
        samples,
      });
      jobs.push({
        model,
        method: "svdllm",
        key: "svdllm-global",
        label: "svdllm, per-matrix ranks (global)",
        ratio,
        allocation: "global",
        samples,
      });
      jobs.push({ model, method: "fwsvd", key: "fwsvd", label: "fwsvd (K-FAC)", ratio, samples });
      // SoCo with the library's defaults (start from per-matrix SVD-LLM, 100 steps of 4 × 256, KL 1).
      jobs.push({ model, method: "soco", key: "soco", label: "soco (whitened basis)", ratio, samples });
      jobs.push({
        model,
        method: "soco",
        key: "soco-svd",
        label: "soco (svd basis)",
        ratio,
        basis: "svd",
        samples,
      });
    }
    if (model === "brown") {
      jobs.push({
        model,
        method: "asvd",
        key: "asvd-sweep",
        label: "asvd (sensitivity, kept 0.8)",
        ratio: { kept: 0.8 },
        allocation: "sweep",
        samples: asvdSamples,
      });
    }
  }
  // The default keeps the paper-method table's set; `--methods` picks any (see Job.key).
  const keys = arg("methods", "svd,asvd,svdllm-orig,svdllm,svdllm-update,asvd-sweep").split(",")
    .filter((k) => !(k === "asvd-sweep" && process.argv.includes("--no-sweep")));
  const rows: JobResult[] = [];
  for (const job of jobs.filter((j) => keys.includes(j.key))) {
    const r = await child(job);
    rows.push(r);
    console.error(
      `${job.model} ${job.label} ${JSON.stringify(job.ratio)}: ppl ${r.ppl.toFixed(2)} in ${
        r.seconds.toFixed(2)
      } s`,
    );
  }
  console.log(
    "| model | method | ratio | linears removed | model removed | ppl (dense) | time s | CPU s | peak RSS MB |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) {
    const ratio = "removed" in r.job.ratio ? `removed ${r.job.ratio.removed}` : `kept ${r.job.ratio.kept}`;
    const time = r.sweepSeconds !== undefined
      ? `${r.seconds.toFixed(2)} (${r.job.allocation === "sweep" ? "sweep" : "ranks pass"} ${
        r.sweepSeconds.toFixed(1)
      })`
      : r.seconds.toFixed(2);
    console.log(
      `| ${r.job.model === "brown" ? "tinylm-brown" : "stories260K"} | ${r.job.label} | ${ratio} | ${
        (100 * r.linearsRemoved).toFixed(1)
      } % | ${(100 * r.modelRemoved).toFixed(1)} % | ${r.ppl.toFixed(2)} (${
        r.densePpl.toFixed(2)
      }) | ${time} | ${r.cpuSeconds.toFixed(1)} | ${r.peakRssMB.toFixed(0)} |`,
    );
  }
}

await main();
