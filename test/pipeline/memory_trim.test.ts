// findMemoryTrimmer (pipeline/memory.ts): besides malloc_trim, the pages of the wasm allocator's free ranges
// are handed back to the system (wasm memory itself never shrinks), and memory reused afterwards works.
// Only where the trimmer exists (Deno on Linux with FFI permission, as `deno test -A` grants); skipped
// elsewhere.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { findMemoryTrimmer } from "../../src/pipeline/memory.ts";
import { wasmRuntime } from "../../src/linalg/wasm/runtime.ts";

function rss(): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync("/proc/self/status", "utf8"));
  return Number(m![1]) * 1024;
}

const trim = findMemoryTrimmer();
const rt = wasmRuntime();

test(
  "findMemoryTrimmer: freed wasm memory stops being resident, and is reusable (zero pages) afterwards",
  { skip: !trim ? "no trimmer here (needs Deno on Linux with FFI permission)" : !rt ? "no wasm" : false },
  () => {
    const bytes = 64 << 20, n = bytes / 8;
    const p = rt!.alloc(bytes);
    rt!.f64(p, n).fill(1);
    const touched = rss();
    rt!.free(p);
    trim!();
    const trimmed = rss();
    assert.ok(
      touched - trimmed > 0.75 * bytes,
      `RSS ${(touched / 2 ** 20).toFixed(0)} → ${
        (trimmed / 2 ** 20).toFixed(0)
      } MiB after freeing 64 MiB of wasm memory`,
    );
    // The allocator hands the same range out again; its pages come back on use.
    const q = rt!.alloc(bytes);
    const v = rt!.f64(q, n);
    v.fill(2);
    let sum = 0;
    for (let i = 0; i < n; i += 4096) sum += v[i];
    assert.equal(sum, 2 * Math.ceil(n / 4096));
    rt!.free(q);
    trim!();
  },
);
