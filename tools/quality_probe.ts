/**
 * Quality probe: compress one model with one set of options and print its perplexity in the protocol of
 * bench/methods.ts, or evaluate a folder made elsewhere (e.g. by tools/svdllm_reference_check.py), or
 * export the calibration and evaluation windows for that script. Used to check our methods against the
 * official SVD-LLM and ASVD code (see tools/svdllm_reference_check.py and README "Results").
 *
 * Usage: deno run -A tools/quality_probe.ts JSON, with JSON fields
 * - model: "brown" (../shared tinylm-brown: calibration from brown-calib.txt, evaluation on the first 20,000
 *   tokens of brown-valid.txt in whole windows of 256) or "stories" (bundled stories260K: first half of the
 *   TinyStories text for calibration, second half evaluated in windows of 512);
 * - method, removed | kept, samples (default 32), seqlen (256), seed (0), sequential, update, alpha: as
 *   `compress()`; save: keep the output folder there;
 * - evalOnly: evaluate this folder instead of compressing;
 * - evalCalib: a windows file: evaluate on its calibration windows (in-sample perplexity) instead;
 * - calibValidTail: calibrate tinylm-brown on brown-valid after its first 20,000 tokens (held-out text
 *   disjoint from the evaluated tokens) instead of brown-calib;
 * - dumpWindows: write {calib, eval, window} as JSON to this path and stop.
 *
 * Prints one JSON line: the input fields plus ppl.
 *
 * @module
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { compress } from "../src/pipeline/compress.ts";
import { perplexity } from "../src/eval/perplexity.ts";
import { openModelWeights } from "../src/io/sharded.ts";
import { specFromHfConfig } from "../src/model/spec.ts";
import { loadModel } from "../src/model/load.ts";
import { calibrationWindows } from "../src/calib/windows.ts";

interface Probe {
  model: "brown" | "stories";
  method?: "svd" | "asvd" | "svdllm";
  removed?: number;
  kept?: number;
  samples?: number;
  seqlen?: number;
  seed?: number;
  sequential?: boolean;
  update?: boolean;
  alpha?: number;
  save?: string;
  evalOnly?: string;
  evalCalib?: string;
  calibValidTail?: boolean;
  dumpWindows?: string;
}

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const SHARED = join(ROOT, "../shared");

async function data(j: Probe) {
  if (j.model === "stories") {
    const path = join(ROOT, "models/stories260K/stories260K.gguf");
    const m = await loadModel(path);
    const text = await readFile(join(ROOT, "data/tinystories-valid.part1.txt"), "utf8");
    const ids = m.tokenizer.encode(text, { bos: true });
    await m.close();
    const half = Math.floor(ids.length / 2);
    return { path, calib: ids.slice(0, half), evalIds: ids.slice(half), window: 512 };
  }
  const path = join(SHARED, "models/tinylm-brown");
  const m = await loadModel(path);
  const enc = async (f: string) =>
    m.tokenizer.encode(await readFile(join(SHARED, "data", f), "utf8"), { bos: true });
  const calib = await enc("brown-calib.txt");
  const valid = await enc("brown-valid.txt");
  await m.close();
  const evalIds = valid.slice(0, Math.floor(20000 / 256) * 256);
  return { path, calib: j.calibValidTail ? valid.slice(20000) : calib, evalIds, window: 256 };
}

async function main(j: Probe): Promise<void> {
  const d = await data(j);
  const samples = j.samples ?? 32, seqlen = j.seqlen ?? 256, seed = j.seed ?? 0;
  if (j.dumpWindows) {
    const ws = calibrationWindows(d.calib, { samples, seqlen, seed, layout: "random" });
    const json = { calib: ws.map((w) => Array.from(w)), eval: Array.from(d.evalIds), window: d.window };
    await writeFile(j.dumpWindows, JSON.stringify(json));
    console.log(`wrote ${ws.length} windows to ${j.dumpWindows}`);
    return;
  }
  let evalIds = d.evalIds, window = d.window;
  if (j.evalCalib) {
    const ws = JSON.parse(await readFile(j.evalCalib, "utf8")).calib as number[][];
    evalIds = Int32Array.from(ws.flat());
    window = ws[0].length;
  }
  let out = j.evalOnly ?? j.save;
  const temp = out ? undefined : await mkdtemp(join(tmpdir(), "quality-probe-"));
  out ??= join(temp!, "out");
  try {
    if (!j.evalOnly) {
      const rep = await compress(d.path, out, {
        method: j.method ?? "svdllm",
        ratio: j.kept !== undefined ? { kept: j.kept } : { removed: j.removed ?? 0.2 },
        update: j.update,
        sequential: j.sequential,
        alpha: j.alpha,
        overwrite: true,
        calibration: { ids: d.calib, samples, seqlen, seed },
      });
      console.error(
        `compressed in ${rep.seconds.toFixed(1)} s, linears removed ${rep.params.linears.removed}`,
      );
    }
    const config = JSON.parse(await readFile(join(out, "config.json"), "utf8"));
    const reader = await openModelWeights(out);
    const r = await perplexity({ spec: specFromHfConfig(config), reader }, evalIds, { window });
    await reader.close();
    console.log(JSON.stringify({ ...j, ppl: r.ppl }));
  } finally {
    if (temp) await rm(temp, { recursive: true, force: true });
  }
}

await main(JSON.parse(Deno.args[0]) as Probe);
