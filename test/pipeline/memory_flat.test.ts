// Streaming property of compress(): the peak resident memory of a compression does not grow with the number
// of blocks. Two random LLaMA checkpoints that differ only in depth (2 and 10 blocks of ~12 MB each) are
// compressed in child processes (the benchmark's runner, bench/compress_memory.ts); the kernel's peak RSS
// (VmHWM) of the deeper one may exceed the shallower one's by at most a quarter of the file-size difference.
// A pipeline that kept every block (or the whole file) would grow by at least the difference (~94 MB).
// Only k_proj is factored (plain SVD, 256×512) so that the run stays short; every other tensor is still read
// and streamed through the writer. Linux only (reads /proc); skipped elsewhere.
// The child collects garbage at each progress event, so the peak measures what the pipeline keeps, not the
// collector's pacing: without, Bun lets dropped tensors pile up (measured 120 → 185 MiB for 2 → 10 blocks;
// 85 → 92 MiB with), and under Deno on a loaded machine the growth spread over 15–25 MiB, around this test's
// 22.5 MiB limit, on main as on this branch (2026-12-06: six runs each); with it, 0–3 MiB.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateCheckpoint, type ModelShape, runChild } from "../../bench/compress_memory.ts";

const HAS_PROC = existsSync("/proc/self/status");
const IS_BUN = "Bun" in globalThis;

test(
  "compress: peak RSS stays flat when the layer count grows 5× (streaming, child processes)",
  { timeout: 60_000, skip: HAS_PROC ? false : "needs /proc (Linux) to read a child's peak RSS" },
  async () => {
    const root = await mkdtemp(join(tmpdir(), "svdllm-memflat-"));
    try {
      const shape = (layers: number): ModelShape => ({
        layers,
        hidden: 512,
        intermediate: 1408,
        heads: 8,
        kvHeads: 4,
        vocab: 2000,
      });
      const measured: { file: number; hwm: number }[] = [];
      for (const layers of [2, 10]) {
        const dir = join(root, `m${layers}`);
        await mkdir(dir);
        const file = await generateCheckpoint(dir, shape(layers), layers);
        const r = await runChild(
          {
            input: dir,
            output: join(root, `o${layers}`),
            method: "svd",
            samples: 1,
            seqlen: 16,
            linears: ["self_attn.k_proj"],
            gc: true,
          },
          { quiet: true },
        );
        assert.ok(r.peakHwm > 0, "the child's VmHWM was read");
        assert.ok(existsSync(join(root, `o${layers}`, "model.safetensors")), "the output was written");
        measured.push({ file, hwm: r.peakHwm });
        await rm(dir, { recursive: true, force: true });
      }
      const fileGrowth = measured[1].file - measured[0].file;
      const rssGrowth = measured[1].hwm - measured[0].hwm;
      assert.ok(fileGrowth > 80e6, `the deeper file is ${fileGrowth} bytes larger`);
      assert.ok(
        rssGrowth < 0.25 * fileGrowth,
        `peak RSS grew by ${(rssGrowth / 2 ** 20).toFixed(1)} MiB (${
          (measured[0].hwm / 2 ** 20).toFixed(0)
        } → ${(measured[1].hwm / 2 ** 20).toFixed(0)} MiB) for ${
          (fileGrowth / 2 ** 20).toFixed(1)
        } MiB more weights: the pipeline holds per-block data`,
      );
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  },
);

// Nothing of a block outlives its "write" event: the child collects garbage before each progress sample, so
// the array buffers alive at a block's "write" are what the pipeline retains between blocks (the calibration
// stream and small bookkeeping). Before each block ran in a function of its own, the previous block's factors
// stayed reachable from the locals of the long-running async loop through the next block's calibration pass.
// Deno only: Bun's memoryUsage() counts wasm memory and other external memory among the array buffers (32 MiB
// at start-up), and its collector scans the stack conservatively, so it measures no retention.
test(
  "compress: at each block's write event none of the block's weights or factors is still reachable",
  {
    timeout: 60_000,
    skip: !HAS_PROC
      ? "needs /proc (Linux) to run the benchmark's child"
      : IS_BUN
      ? "Bun's memoryUsage().arrayBuffers includes wasm memory: no measure of retained buffers"
      : false,
  },
  async () => {
    const root = await mkdtemp(join(tmpdir(), "svdllm-blockfree-"));
    try {
      const shape: ModelShape = {
        layers: 3,
        hidden: 512,
        intermediate: 1408,
        heads: 8,
        kvHeads: 4,
        vocab: 2000,
      };
      const dir = join(root, "m");
      await mkdir(dir);
      await generateCheckpoint(dir, shape, 3);
      const r = await runChild(
        { input: dir, output: join(root, "o"), method: "svdllm", samples: 2, seqlen: 32, gc: true },
        { quiet: true },
      );
      const d = shape.hidden, f = shape.intermediate, kv = (shape.kvHeads * d) / shape.heads;
      const blockBytes = 4 * (2 * d * d + 2 * kv * d + 3 * d * f); // 11.8 MB of float32 weights
      const writes = r.stages.filter((s) => s.stage === "write");
      assert.equal(writes.length, shape.layers, "one write event per block");
      if (writes.every((s) => s.arrayBuffers === 0)) return; // the runtime does not report array buffers
      for (const s of writes) {
        assert.ok(
          s.arrayBuffers < 0.25 * blockBytes,
          `after block ${s.block} was written, ${
            (s.arrayBuffers / 2 ** 20).toFixed(1)
          } MiB of array buffers ` +
            `are still reachable (one block's weights: ${(blockBytes / 2 ** 20).toFixed(1)} MiB)`,
        );
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  },
);
