/**
 * Forward-pass benchmark on ../shared's tinylm-brown: one dense pass of 64 calibration windows × 256 tokens
 * through every block (windows of 8 per batch, as compress runs them), best of `--repeat` (default 3).
 * CPU seconds (user + system, all threads) are printed too: on a shared machine they move less than wall time.
 *
 * Usage: deno run -A bench/forward.ts [--samples 64] [--repeat 3] [--threads N]
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { calibrationWindows } from "../src/calib/windows.ts";
import { initLinalg } from "../src/linalg/backend.ts";
import { loadBlock, loadHead } from "../src/model/llama.ts";
import { loadModel } from "../src/model/load.ts";
import { embedWindows, runBlock } from "../src/pipeline/hidden.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const SHARED = join(ROOT, "../shared");

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const threads = Number(arg("threads", "1"));
if (threads > 1) await initLinalg({ threads });
const samples = Number(arg("samples", "64")), repeat = Number(arg("repeat", "3"));
const m = await loadModel(join(SHARED, "models/tinylm-brown"));
const ids = m.tokenizer.encode(await readFile(join(SHARED, "data/brown-calib.txt"), "utf8"), { bos: true });
const windows = calibrationWindows(ids, { samples, seqlen: 256, seed: 0, layout: "random" });
const head = await loadHead(m.reader, m.spec);
const blocks = [];
for (let i = 0; i < m.spec.numLayers; i++) blocks.push(await loadBlock(m.reader, m.spec, i));
const times: number[] = [], cpu: number[] = [];
let check = 0;
for (let r = 0; r < repeat; r++) {
  const h = embedWindows(m.spec, head, windows);
  const t0 = performance.now(), c0 = process.cpuUsage();
  for (const b of blocks) runBlock(m.spec, b, h, 8, undefined, "inplace");
  times.push((performance.now() - t0) / 1000);
  const c = process.cpuUsage(c0);
  cpu.push((c.user + c.system) / 1e6);
  check = h.x.data.reduce((s, v) => s + Math.abs(v), 0) / h.x.data.length;
}
console.log(
  `dense forward tinylm-brown ${samples}×256, ${threads} thread(s): best ${
    Math.min(...times).toFixed(3)
  } s ` +
    `(all ${times.map((t) => t.toFixed(3)).join(", ")}); CPU best ${Math.min(...cpu).toFixed(3)} s ` +
    `(all ${cpu.map((t) => t.toFixed(3)).join(", ")}); mean |h| ${check.toFixed(6)}`,
);
await m.close();
