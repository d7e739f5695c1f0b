/**
 * SoCo benchmark: perplexity, time and peak RSS of SoCo (both bases) at 20 / 40 / 60 % removed, on the
 * protocol of bench/methods.ts — stories260K calibrated on the first half of the bundled TinyStories text
 * (32 × 256 tokens, seed 0) and evaluated on its second half in windows of 512; tinylm-brown (../shared)
 * calibrated on brown-calib.txt (64 × 256) and evaluated on the first 19,968 tokens of brown-valid.txt in
 * windows of 256. Each job runs in its own process, so that its time and peak RSS are its own.
 *
 * Usage: deno run -A bench/soco.ts [--models stories,brown] [--ratios 0.2,0.4,0.6] [--bases whitened,svd]
 *        [--steps 100] [--lr 0.05] [--batch 4] [--kl 10] [--nll 1]
 *
 * @module
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { arg, childJson, protocolData } from "./protocol.ts";

interface Job {
  model: "stories" | "brown";
  basis: "whitened" | "svd";
  removed: number;
  steps: number;
  lr: number;
  batch: number;
  kl: number;
  nll: number;
}

async function runOne(job: Job): Promise<void> {
  const { compressSoco } = await import("../src/pipeline/soco.ts");
  const { perplexity } = await import("../src/eval/perplexity.ts");
  const { loadModel } = await import("../src/model/load.ts");
  const d = await protocolData(job.model);
  const dir = await mkdtemp(join(tmpdir(), "bench-soco-"));
  try {
    const out = join(dir, "out");
    let last = 0;
    const rep = await compressSoco(d.path, out, {
      ratio: { removed: job.removed },
      basis: job.basis,
      calibration: { ids: d.calib, samples: d.samples, seqlen: 256, seed: 0 },
      steps: job.steps,
      lr: job.lr,
      batch: job.batch,
      klWeight: job.kl,
      nllWeight: job.nll,
      onProgress: (e) => {
        if (e.stage !== "train") return;
        const t = e.train;
        if (t.recovery) console.error(t.recovery);
        if (t.step - last >= 10 || t.step === t.steps) {
          last = t.step;
          console.error(
            `${t.stage} ${t.step}/${t.steps} loss ${t.loss.toFixed(4)} budget ${t.budget.toFixed(3)} ${
              t.stepsPerSecond.toFixed(2)
            } steps/s`,
          );
        }
      },
    });
    const m = await loadModel(out);
    const ppl = (await perplexity(m, d.evalIds, { window: d.window })).ppl;
    // The loss on every calibration window (what the training fitted), beside the held-out perplexity.
    const { calibrationWindows } = await import("../src/calib/windows.ts");
    const wins = calibrationWindows(d.calib, { samples: d.samples, seqlen: 256, seed: 0 });
    const calibNll = Math.log(
      (await perplexity(m, new Int32Array(wins.flatMap((w) => [...w])), { window: 256 })).ppl,
    );
    await m.close();
    console.log(JSON.stringify({
      job,
      ppl,
      calibNll,
      seconds: rep.seconds,
      peakRssMB: rep.peakRssBytes / 2 ** 20,
      linearsRemoved: rep.params.linears.removed,
      budget: rep.budget,
      firstLoss: rep.history[0].loss,
      lastLoss: rep.history.at(-1)!.loss,
      recoveries: rep.recoveries,
    }));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function child(job: Job): Promise<Record<string, unknown>> {
  return childJson([fileURLToPath(import.meta.url), "--one", JSON.stringify(job)]);
}

async function main(): Promise<void> {
  const one = process.argv.indexOf("--one");
  if (one >= 0) return await runOne(JSON.parse(process.argv[one + 1]));
  const models = arg("models", "stories").split(",") as Job["model"][];
  const ratios = arg("ratios", "0.2,0.4,0.6").split(",").map(Number);
  const bases = arg("bases", "whitened,svd").split(",") as Job["basis"][];
  const steps = Number(arg("steps", "100")), lr = Number(arg("lr", "0.05"));
  const batch = Number(arg("batch", "4")), kl = Number(arg("kl", "10")), nll = Number(arg("nll", "1"));
  console.log(
    "| model | basis | % removed | ppl | calib NLL | loss first → last | time s (bases / train) | peak RSS MB |",
  );
  console.log("|---|---|---|---|---|---|---|---|");
  for (const model of models) {
    for (const removed of ratios) {
      for (const basis of bases) {
        const r = await child({ model, basis, removed, steps, lr, batch, kl, nll }) as {
          ppl: number;
          calibNll: number;
          seconds: { bases: number; train: number; total: number };
          peakRssMB: number;
          linearsRemoved: number;
          firstLoss: number;
          lastLoss: number;
        };
        console.log(
          `| ${model === "brown" ? "tinylm-brown" : "stories260K"} | ${basis} | ${
            (100 * r.linearsRemoved).toFixed(1)
          } | ${r.ppl.toFixed(2)} | ${r.calibNll.toFixed(3)} | ${r.firstLoss.toFixed(3)} → ${
            r.lastLoss.toFixed(3)
          } | ${r.seconds.total.toFixed(1)} (${r.seconds.bases.toFixed(1)} / ${
            r.seconds.train.toFixed(1)
          }) | ${r.peakRssMB.toFixed(0)} |`,
        );
      }
    }
  }
}

await main();
