/**
 * Forward-pass benchmark on ../shared's tinylm-brown: one dense pass of 64 calibration windows × 256 tokens
 * through every block (windows of 8 per batch, as compress runs them), best of `--repeat` (default 3).
 * CPU seconds (user + system, all threads) are printed too: on a shared machine they move less than wall time.
 *
 * The reference measured in the same run is the pass's floor: the seven linears' products alone (the same
 * GEMMs, same shapes, into reused buffers). The ratio forward ÷ floor is what attention, norms, RoPE, SwiGLU,
 * the adds and the interpreter cost on top of the products. `--profile` adds the CPU time of each op of the
 * block program (measured between op boundaries through runBlockProgram's override hook).
 *
 * Usage: deno run -A bench/forward.ts [--samples 64] [--repeat 3] [--threads N] [--shared DIR] [--profile]
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { calibrationWindows } from "../src/calib/windows.ts";
import { initLinalg } from "../src/linalg/backend.ts";
import { gemmInto } from "../src/linalg/gemm.ts";
import type { Matrix } from "../src/linalg/matrix.ts";
import { BLOCK_PROGRAM, type BlockOp } from "../src/model/block_def.ts";
import { BlockScratch, runBlockProgram } from "../src/model/block_eval.ts";
import { BLOCK_FIELD, embed, type LlamaBlock, loadBlock, loadHead } from "../src/model/llama.ts";
import { loadModel } from "../src/model/load.ts";
import { embedWindows, runBlock } from "../src/pipeline/hidden.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const SHARED = arg("shared", join(ROOT, "../shared"));
const threads = Number(arg("threads", "1"));
if (threads > 1) await initLinalg({ threads });
const samples = Number(arg("samples", "64")), repeat = Number(arg("repeat", "3")), BATCH = 8;
const m = await loadModel(join(SHARED, "models/tinylm-brown"));
const ids = m.tokenizer.encode(await readFile(join(SHARED, "data/brown-calib.txt"), "utf8"), { bos: true });
const windows = calibrationWindows(ids, { samples, seqlen: 256, seed: 0, layout: "random" });
const head = await loadHead(m.reader, m.spec);
const blocks: LlamaBlock[] = [];
for (let i = 0; i < m.spec.numLayers; i++) blocks.push(await loadBlock(m.reader, m.spec, i));

const cpuMs = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};

/** The linears' products alone, batch by batch as the pass runs them: the floor of the forward pass. */
function gemmFloor(): void {
  const rows = BATCH * 256, bufs = new Map<string, Matrix>();
  const buf = (name: string, cols: number): Matrix => {
    let b = bufs.get(name);
    if (!b) bufs.set(name, b = { rows, cols, data: new Float32Array(rows * cols) });
    return b;
  };
  for (let s0 = 0; s0 < samples; s0 += BATCH) {
    for (const block of blocks) {
      for (const op of BLOCK_PROGRAM) {
        if (op.op !== "linear") continue;
        const lin = block[BLOCK_FIELD[op.lin]];
        if (lin.kind !== "dense") throw new Error("bench/forward: tinylm-brown should be dense");
        gemmInto(buf(`in${lin.weight.cols}`, lin.weight.cols), lin.weight, buf(op.out, lin.weight.rows), {
          transB: true,
        });
      }
    }
  }
}

const times: number[] = [], cpu: number[] = [], floor: number[] = [];
let check = 0;
for (let r = 0; r < repeat; r++) {
  const h = embedWindows(m.spec, head, windows);
  const t0 = performance.now(), c0 = cpuMs();
  for (const b of blocks) runBlock(m.spec, b, h, BATCH, undefined, "inplace");
  times.push((performance.now() - t0) / 1000);
  cpu.push((cpuMs() - c0) / 1000);
  check = h.x.data.reduce((s, v) => s + Math.abs(v), 0) / h.x.data.length;
  const f0 = cpuMs();
  gemmFloor();
  floor.push((cpuMs() - f0) / 1000);
}
const best = (a: number[]) => Math.min(...a), all = (a: number[]) => a.map((t) => t.toFixed(3)).join(", ");
console.log(
  `dense forward tinylm-brown ${samples}×256, ${threads} thread(s): best ${best(times).toFixed(3)} s ` +
    `(all ${all(times)}); CPU best ${best(cpu).toFixed(3)} s (all ${all(cpu)}); mean |h| ${check.toFixed(6)}`,
);
console.log(
  `GEMM floor (the 7 linears' products alone): CPU best ${best(floor).toFixed(3)} s (all ${all(floor)}); ` +
    `forward ÷ floor ${(best(cpu) / best(floor)).toFixed(3)}`,
);

if (process.argv.includes("--profile")) {
  // CPU time of each op: the time between the override calls that open consecutive ops.
  const spent = new Map<string, number>(), ws = new BlockScratch();
  let total = 0;
  for (let s0 = 0; s0 < samples; s0 += BATCH) {
    const x = embed(head, m.spec, windows.slice(s0, s0 + BATCH));
    for (const block of blocks) {
      let open = "", since = 0;
      const mark = (name: string) => {
        const now = cpuMs();
        if (open) spent.set(open, (spent.get(open) ?? 0) + now - since);
        open = name, since = now;
      };
      const t0 = cpuMs();
      const override = (op: BlockOp) => void mark(`${op.op} → ${op.out}`);
      runBlockProgram({ spec: m.spec, block, batch: x.rows / 256, end: 256 }, BLOCK_PROGRAM, { x }, {
        owned: ["x"],
        ws,
        override,
      });
      mark("");
      total += cpuMs() - t0;
    }
  }
  console.log(`profile (CPU, one pass, ${(total / 1000).toFixed(3)} s):`);
  for (const [op, ms] of [...spent].sort((a, b) => b[1] - a[1])) {
    console.log(`  ${op.padEnd(18)} ${(ms / 1000).toFixed(3)} s  ${(100 * ms / total).toFixed(1)} %`);
  }
}
await m.close();
