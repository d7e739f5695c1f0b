/**
 * Memory benchmark of the safetensors reader: streams a random float32 safetensors file of about `--gb`
 * gigabytes (default 1) into a temporary folder with the streaming writer, reads every tensor back one at a
 * time (discarding each), samples the process RSS after each tensor and reports peak RSS growth against the
 * file size. The file is deleted at the end.
 *
 * Run: `node_modules/.bin/deno run -A bench/io_memory.ts [--gb 1] [--tensors 64] [--json]`
 * (add `--v8-flags=--expose-gc` to also measure the memory kept after forced collections)
 *
 * @module
 */
import { fillUniform } from "../src/linalg/random.ts";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { createSafetensorsWriter } from "../src/io/safetensors_writer.ts";
import { openSafetensors } from "../src/io/safetensors_reader.ts";

/** What {@link measureReadMemory} found. */
export interface ReadMemoryReport {
  /** File size in bytes. */
  fileBytes: number;
  /** Number of tensors. */
  tensors: number;
  /** RSS just before reading, after the file was written. */
  baselineRss: number;
  /** Highest RSS sampled while reading (after each tensor). */
  peakRss: number;
  /** (peak − baseline) / file size. */
  growthRatio: number;
  /**
   * Same, with a forced garbage collection before each sample: memory the reader really keeps (≈ one tensor).
   * Only when a `gc()` is exposed (Bun; Deno with `--v8-flags=--expose-gc`), else undefined.
   */
  retainedRatio?: number;
  /** Seconds spent writing and reading. */
  writeSeconds: number;
  /** Seconds spent reading. */
  readSeconds: number;
}

/** A synchronous full garbage collection, if the runtime exposes one. */
function findGc(): (() => void) | undefined {
  const g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  if (typeof g.gc === "function") return () => g.gc!();
  if (g.Bun && typeof g.Bun.gc === "function") return () => g.Bun!.gc(true);
  return undefined;
}

/**
 * Write a random F32 safetensors file of `tensors` equal tensors totalling about `fileBytes`, then read each
 * tensor and discard it, sampling RSS. The file lives in a fresh temporary folder, removed at the end.
 */
export async function measureReadMemory(fileBytes: number, tensors: number): Promise<ReadMemoryReport> {
  const dir = await mkdtemp(join(tmpdir(), "svdllm-iomem-"));
  try {
    const cols = 1024;
    const rows = Math.max(1, Math.round(fileBytes / 4 / tensors / cols));
    const plan = Array.from({ length: tensors }, (_, i) => ({
      name: `layer.${i}.weight`,
      dtype: "F32" as const,
      shape: [rows, cols],
    }));
    const path = join(dir, "big.safetensors");
    const t0 = performance.now();
    const w = await createSafetensorsWriter(path, plan);
    try {
      const buf = new Float32Array(rows * cols); // one tensor's buffer, reused: the file is never in memory
      for (const [i, t] of plan.entries()) {
        fillUniform(buf, i + 1);
        await w.write(t.name, buf);
      }
      await w.close();
    } finally {
      await w.abort();
    }
    const t1 = performance.now();
    const size = (await stat(path)).size;
    const r = await openSafetensors(path);
    const baselineRss = process.memoryUsage().rss;
    let peakRss = baselineRss;
    let checksum = 0;
    for (const t of r.tensors()) {
      const v = await r.read(t.name);
      checksum += v[v.length - 1]; // touch the data so the read is not optimised away
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
    }
    const t2 = performance.now();
    const gc = findGc();
    let retainedRatio: number | undefined;
    if (gc) {
      gc();
      const base = process.memoryUsage().rss;
      let peak = base;
      for (const t of r.tensors()) {
        checksum += (await r.read(t.name))[0];
        gc();
        peak = Math.max(peak, process.memoryUsage().rss);
      }
      retainedRatio = (peak - base) / size;
    }
    await r.close();
    if (!Number.isFinite(checksum)) throw new Error("io_memory: non-finite data read back");
    return {
      fileBytes: size,
      tensors,
      baselineRss,
      peakRss,
      growthRatio: (peakRss - baselineRss) / size,
      retainedRatio,
      writeSeconds: (t1 - t0) / 1000,
      readSeconds: (t2 - t1) / 1000,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const arg = (name: string, dflt: number) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? Number(args[i + 1]) : dflt;
  };
  const gb = arg("gb", 1);
  const tensors = arg("tensors", 64);
  const mb = (x: number) => (x / 2 ** 20).toFixed(1) + " MB";
  const r = await measureReadMemory(gb * 2 ** 30, tensors);
  if (args.includes("--json")) {
    console.log(JSON.stringify(r));
    process.exit(0);
  }
  console.log(`file: ${mb(r.fileBytes)} in ${r.tensors} tensors of ${mb(r.fileBytes / r.tensors)}`);
  console.log(
    `write: ${r.writeSeconds.toFixed(1)} s (${(r.fileBytes / 2 ** 20 / r.writeSeconds).toFixed(0)} MB/s)`,
  );
  console.log(
    `read:  ${r.readSeconds.toFixed(1)} s (${(r.fileBytes / 2 ** 20 / r.readSeconds).toFixed(0)} MB/s)`,
  );
  console.log(`RSS before reading ${mb(r.baselineRss)}, peak while reading ${mb(r.peakRss)}`);
  console.log(`peak RSS growth / file size = ${(r.growthRatio * 100).toFixed(1)} %`);
  if (r.retainedRatio !== undefined) {
    console.log(
      `with a forced GC before each sample: ${(r.retainedRatio * 100).toFixed(1)} % (memory actually kept)`,
    );
  }
}
