// findMemoryTrimmer (pipeline/memory.ts): besides malloc_trim, the pages of the wasm allocator's free ranges
// are handed back to the system (wasm memory itself never shrinks), and memory reused afterwards works.
// Only where the trimmer exists (Deno on Linux with FFI permission, as `deno test -A` grants); skipped
// elsewhere.
// The measurement runs in a child process of its own: `deno test --parallel` runs other test modules in
// threads of the same process, and their allocations between the two VmRSS reads made the process-wide figure
// (and this test) depend on what ran beside it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { findMemoryTrimmer } from "../../src/pipeline/memory.ts";
import { wasmRuntime } from "../../src/linalg/wasm/runtime.ts";

const trim = findMemoryTrimmer();
const rt = wasmRuntime();
const CHILD = "SVD_LLM_MEMORY_TRIM_CHILD";

function rss(): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync("/proc/self/status", "utf8"));
  return Number(m![1]) * 1024;
}

/** The child's part: touch, free and trim 64 MiB of wasm memory, then reuse it; prints the figures as JSON. */
function measure(): { bytes: number; touched: number; trimmed: number; sum: number; expected: number } {
  const bytes = 64 << 20, n = bytes / 8;
  const p = rt!.alloc(bytes);
  rt!.f64(p, n).fill(1);
  const touched = rss();
  rt!.free(p);
  trim!();
  const trimmed = rss();
  // The allocator hands the same range out again; its pages come back on use.
  const q = rt!.alloc(bytes);
  const v = rt!.f64(q, n);
  v.fill(2);
  let sum = 0;
  for (let i = 0; i < n; i += 4096) sum += v[i];
  rt!.free(q);
  trim!();
  return { bytes, touched, trimmed, sum, expected: 2 * Math.ceil(n / 4096) };
}

if (process.env[CHILD] === "1") {
  console.log(JSON.stringify(measure()));
} else {
  test(
    "findMemoryTrimmer: freed wasm memory stops being resident, and is reusable (zero pages) afterwards",
    { skip: !trim ? "no trimmer here (needs Deno on Linux with FFI permission)" : !rt ? "no wasm" : false },
    () => {
      const r = spawnSync(process.execPath, ["run", "-A", fileURLToPath(import.meta.url)], {
        encoding: "utf8",
        env: { ...process.env, [CHILD]: "1", NO_COLOR: "1" },
        timeout: 600_000,
      });
      assert.equal(r.status, 0, `the measuring child failed: ${r.error ?? ""}${r.stderr}`);
      const m = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
      assert.ok(
        m.touched - m.trimmed > 0.75 * m.bytes,
        `RSS ${(m.touched / 2 ** 20).toFixed(0)} → ${
          (m.trimmed / 2 ** 20).toFixed(0)
        } MiB after freeing 64 MiB of wasm memory`,
      );
      assert.equal(m.sum, m.expected);
    },
  );
}
