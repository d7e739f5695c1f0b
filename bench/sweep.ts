/**
 * ASVD sensitivity-sweep benchmark on ../shared's tinylm-brown, at the peers' setting: the first N of the 32
 * random calibration windows of 256 tokens (seed 0, as `compress` draws them), ratios 0.4…0.9, all seven
 * linears of every block, no cache file. Prints wall and CPU seconds (user + system, all threads: on a
 * shared machine CPU time moves less than wall time) and the dense calibration perplexity.
 *
 * Usage: deno run -A bench/sweep.ts [--samples 32] [--threads N]
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { calibrationWindows } from "../src/calib/windows.ts";
import { initLinalg } from "../src/linalg/backend.ts";
import { loadModel } from "../src/model/load.ts";
import { sensitivitySweep } from "../src/pipeline/sensitivity.ts";

const SHARED = join(fileURLToPath(new URL("../", import.meta.url)), "../shared");

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const samples = Number(arg("samples", "32")), threads = Number(arg("threads", "1"));
if (threads > 1) await initLinalg({ threads });
const m = await loadModel(join(SHARED, "models/tinylm-brown"));
const ids = m.tokenizer.encode(await readFile(join(SHARED, "data/brown-calib.txt"), "utf8"), { bos: true });
const windows = calibrationWindows(ids, { samples: 32, seqlen: 256, seed: 0 }).slice(0, samples);
const c0 = process.cpuUsage();
const r = await sensitivitySweep(m, windows, {
  onProgress: (e) => console.error(`${e.layer} ${e.done}/${e.total} eta ${e.etaSeconds?.toFixed(0)} s`),
});
const c = process.cpuUsage(c0);
console.log(
  `ASVD sweep tinylm-brown ${samples}×256, 6 ratios × 42 linears, ${threads} thread(s): ` +
    `${r.seconds.toFixed(1)} s wall, ${((c.user + c.system) / 1e6).toFixed(1)} s CPU; dense ppl ${
      r.densePpl.toFixed(4)
    }`,
);
await m.close();
