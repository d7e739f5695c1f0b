import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import type { ReadMemoryReport } from "../../bench/io_memory.ts";

// The measurement runs in a child process of the same runtime: test runners share one process between test
// files (and run them in parallel), which would pollute an RSS reading.
const script = fileURLToPath(new URL("../../bench/io_memory.ts", import.meta.url));
const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";

function measure(gb: number, tensors: number): Promise<ReadMemoryReport> {
  const args = isDeno ? ["run", "-A", "--v8-flags=--expose-gc", script] : [script];
  args.push("--gb", String(gb), "--tensors", String(tensors), "--json");
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { env: { ...process.env, NO_COLOR: "1" } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`io_memory failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split("\n").pop()!));
    });
  });
}

test("memory: reading a 384 MB safetensors tensor by tensor grows RSS by < 40 % of the file (< 10 % kept)", {
  timeout: 600_000,
}, async () => {
  const r = await measure(0.375, 48); // 48 tensors of 8 MB
  assert.ok(r.fileBytes > 0.99 * 0.375 * 2 ** 30, `file is ${r.fileBytes} bytes`);
  // What is really kept, with garbage collected before each sample: about one tensor (2 %)
  assert.ok(r.retainedRatio !== undefined, "gc() exposed in the child");
  assert.ok(r.retainedRatio < 0.1, `RSS kept after GC: ${(r.retainedRatio * 100).toFixed(1)} % of the file`);
  const growth = r.peakRss - r.baselineRss;
  // Peak without forced GC: includes garbage the engine has not collected yet (bounded, not proportional to file)
  assert.ok(
    r.growthRatio < 0.4,
    `peak RSS grew ${(growth / 2 ** 20).toFixed(1)} MB reading a ${
      (r.fileBytes / 2 ** 20).toFixed(0)
    } MB file ` +
      `(${(r.growthRatio * 100).toFixed(1)} %)`,
  );
});
