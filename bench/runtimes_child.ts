/**
 * One runtime's row of `bench/runtimes.ts`: run under Deno, Bun or Node (bundled), it probes what works (load
 * and eval from a URL, compress from a Blob and from a URL, threads, WebGPU) and times a svdllm compression of
 * the given model into memory, printing one JSON line. Arguments: `<model path> <model URL> <text path>
 * <samples> <seqlen>`.
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { compress, initLinalg, loadModel, memorySink, perplexity } from "../mod.ts";

const [modelPath, modelUrl, textPath, samples, seqlen] = process.argv.slice(2);
const text = await readFile(textPath, "utf8");
const calibration = { text, samples: Number(samples), seqlen: Number(seqlen) };
const works: Record<string, string> = {};

async function probe(name: string, f: () => Promise<string>): Promise<void> {
  try {
    works[name] = await f();
  } catch (e) {
    works[name] = `no: ${(e instanceof Error ? e.message : String(e)).split("\n")[0].slice(0, 80)}`;
  }
}

const vmHwm = async () => {
  const s = await readFile("/proc/self/status", "utf8").catch(() => "");
  const m = /^VmHWM:\s+(\d+) kB/m.exec(s);
  return m ? Number(m[1]) * 1024 : 0;
};

// The timed run first, so the peak is that of one compression in a fresh process.
await initLinalg({ threads: 1 });
const t0 = performance.now(), c0 = process.cpuUsage();
const sink = memorySink();
await compress(modelPath, sink, { method: "svdllm", ratio: { removed: 0.2 }, calibration });
const seconds = (performance.now() - t0) / 1000;
const c1 = process.cpuUsage(c0);
const cpuSeconds = (c1.user + c1.system) / 1e6; // the machine is shared: CPU time is the steadier figure
const peak = await vmHwm();
let outBytes = 0;
for (const parts of (await sink.files).values()) for (const p of parts) outBytes += p.length;

await probe("load+eval (URL)", async () => {
  const m = await loadModel(modelUrl);
  try {
    const r = await perplexity(m, m.tokenizer.encode(text, { bos: true }).slice(0, 257), { window: 256 });
    return `yes (ppl ${r.ppl.toFixed(3)})`;
  } finally {
    await m.close();
  }
});
await probe("compress Blob", async () => {
  if (!/\.gguf$/.test(modelPath)) return "n/a (Blob input is GGUF only)";
  const blob = new Blob([await readFile(modelPath)]);
  await compress(blob, memorySink(), { method: "svd", ratio: { removed: 0.2 } });
  return "yes";
});
await probe("compress URL", async () => {
  await compress(modelUrl, memorySink(), { method: "svd", ratio: { removed: 0.2 } });
  return "yes";
});
await probe("threads", async () => {
  const info = await initLinalg({ threads: 2 });
  const r = info.threads > 1 ? `yes (${info.threads})` : `no: ${info.threadsNote}`;
  await initLinalg({ threads: 1 });
  return r;
});
await probe("WebGPU", async () => {
  const info = await initLinalg({ gpu: true });
  const r = info.gpu
    ? `yes (${info.gpu.adapter}${info.gpu.fallback ? ", software" : ""})`
    : `no: ${info.gpuNote}`;
  await initLinalg({});
  return r;
});
console.log(JSON.stringify({ seconds, cpuSeconds, peakRssBytes: peak, outBytes, works }));
process.exit(0); // a GPU or thread worker must not keep the process alive
