/**
 * SVD-LLM compression speed against the official code: tinylm-brown, 20 % removed, 64 × 256 calibration
 * tokens from brown-calib.txt, on 1 and 2 threads, for both calibration modes (original activations and
 * sequential). Our side is the whole CLI process (`cli.ts compress --method svdllm`: Deno start, module load,
 * model open, tokenising, calibration, factorisations, writing); the official side is its recorded figures
 * (torch 2.13 CPU, December 2026, issue #13: compute alone 5.83 s on 1 thread and 3.93 s on 2; the whole
 * process 10.2 s / 8.4 s; peak 502 / 504 MB).
 *
 * Printed, per thread count and mode (best of `--runs`, default 3; the machine is shared, so both the best
 * wall time and the best CPU time — user + system, all threads, through /usr/bin/time — are kept):
 * - the whole process against the official compute alone and the official whole process, as ratios;
 * - where our time went: the CLI's phases in wall and CPU seconds, and "start-up and rest" (the process's CPU
 *   outside the compression run: Deno's start, modules, wasm, opening the model, tokenising the file);
 * - the kernel floor: one block's calibration products (the 7 linears' SGEMMs and the 4 Gram SYRKs over 16
 *   batches of 1024 tokens) timed alone in a child process, times 6 blocks — what the calibration costs with
 *   our kernels before attention, norms, factorisations or start-up;
 * - with `--profile`: a V8 sampling profile of one original-activation run per thread count (`--v8-flags=
 *   --prof`, read with `node --prof-process` when node is installed), its ticks grouped by kernel.
 * - with `--numpy`: `tools/svdllm_numpy.py` (the same steps in plain numpy/OpenBLAS, same windows) as a
 *   yardstick measured in the same run.
 *
 * Usage: deno run -A bench/svdllm_speed.ts [--threads 1,2] [--modes orig,seq] [--runs N] [--profile] [--numpy]
 *        deno run -A bench/svdllm_speed.ts --profile-text PROF.txt (group a saved `node --prof-process` output)
 *
 * The profile samples every thread's wall clock (`--no-logfile-per-isolate`: the workers' isolates too), so
 * with threads a share is of thread time, idle waiting included and shown as such.
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
/** The shared folder beside the repository (a clone) or two levels up (a worktree under /work/wt). */
const SHARED = [join(ROOT, "../shared"), join(ROOT, "../../shared")].find((p) => existsSync(p)) ??
  join(ROOT, "../shared");
const MODEL = join(SHARED, "models/tinylm-brown");
const CALIB = join(SHARED, "data/brown-calib.txt");
const SAMPLES = 64, SEQLEN = 256, RATIO = 0.2, BLOCKS = 6, BATCH_TOKENS = 1024;
/** The official SVD-LLM (whitening, r = 0.2) on this protocol, torch 2.13 CPU (issue #13, December 2026). */
const OFFICIAL: Record<number, { compute: number; whole: number; mb: number }> = {
  1: { compute: 5.83, whole: 10.2, mb: 502 },
  2: { compute: 3.93, whole: 8.4, mb: 504 },
};
/** tinylm-brown's linears, [out, in], and the inputs whose Gram matrices SVD-LLM accumulates (widths). */
const LINEARS: [number, number][] = [[256, 256], [128, 256], [128, 256], [256, 256], [688, 256], [688, 256], [
  256,
  688,
]];
const GRAMS = [256, 256, 256, 688];

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

// ---------------------------------------------------------------- child: the kernel floor of one block

if (process.argv.includes("--floor-child")) {
  const threads = Number(arg("--floor-child", "1"));
  const { initLinalg, closeLinalg } = await import("../src/linalg/backend.ts");
  const { matmul } = await import("../src/linalg/gemm.ts");
  const { GramObserver } = await import("../src/calib/gram.ts");
  const { cpuSeconds } = await import("../src/pipeline/phases.ts");
  await initLinalg({ threads });
  const rand = (n: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = Math.sin(i * 12.9898) * 0.5;
    return a;
  };
  const xs = new Map(
    [256, 688].map((n) => [n, { rows: BATCH_TOKENS, cols: n, data: rand(BATCH_TOKENS * n) }]),
  );
  const ws = LINEARS.map(([o, i]) => ({ rows: o, cols: i, data: rand(o * i) }));
  const batches = (SAMPLES * SEQLEN) / BATCH_TOKENS;
  const block = () => {
    const t0 = performance.now(), c0 = cpuSeconds()!;
    let gemm = 0, gram = 0;
    const obs = GRAMS.map((n) => new GramObserver("floor", n));
    for (let b = 0; b < batches; b++) {
      const t1 = performance.now();
      for (const w of ws) matmul(xs.get(w.cols)!, w, { transB: true });
      const t2 = performance.now();
      GRAMS.forEach((n, j) => obs[j].addBatch(xs.get(n)!));
      gemm += t2 - t1;
      gram += performance.now() - t2;
    }
    for (const o of obs) o.gram(); // read out (and free) the resident sums
    return {
      wall: (performance.now() - t0) / 1000,
      cpu: cpuSeconds()! - c0,
      gemm: gemm / 1000,
      gram: gram / 1000,
    };
  };
  block(); // warm: JIT and wasm tier-up, as a run's later blocks are
  let best = block();
  for (let r = 0; r < 2; r++) {
    const t = block();
    if (t.wall < best.wall) best = t;
  }
  await closeLinalg();
  console.log(JSON.stringify(best));
  process.exit(0);
}

// ---------------------------------------------------------------- parent

const threadsList = arg("--threads", "1,2").split(",").map(Number);
const runs = Number(arg("--runs", "3"));
const modes = arg("--modes", "orig,seq").split(",") as ("orig" | "seq")[];
const wantProfile = process.argv.includes("--profile");
const wantNumpy = process.argv.includes("--numpy");

function load(): string {
  try {
    return execFileSync("uptime", { encoding: "utf8" }).trim().replace(/^.*load/, "load");
  } catch {
    return "load unknown";
  }
}

const TIME = existsSync("/usr/bin/time") ? "/usr/bin/time" : null;

/** One run of a command: wall seconds, CPU seconds (user + system, all threads), peak RSS MB, stdout. */
interface Run {
  wall: number;
  cpu?: number;
  mb?: number;
  out: string;
}

function runOnce(cmd: string, args: string[], env: Record<string, string> = {}): Run {
  const t0 = performance.now();
  const res = spawnSync(TIME ?? cmd, TIME ? ["-f", "RUSAGE %U %S %M", cmd, ...args] : args, {
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1", ...env },
    cwd: ROOT, // deno.json's import map for `deno eval`
    maxBuffer: 1 << 26,
  });
  const wall = (performance.now() - t0) / 1000;
  if (res.status !== 0) throw new Error(`svdllm_speed: ${cmd} ${args.join(" ")} failed: ${res.stderr}`);
  const m = /RUSAGE ([\d.]+) ([\d.]+) (\d+)\s*$/.exec(res.stderr);
  return {
    wall,
    cpu: m ? Number(m[1]) + Number(m[2]) : undefined,
    mb: m ? Number(m[3]) / 1024 : undefined,
    out: res.stdout,
  };
}

/** Phases from the CLI's summary: "time 9.1 s (embed 0.13 s, …)" and "cpu 8.9 s (…), all threads". */
function phasesOf(
  out: string,
  line: "time" | "cpu",
): { total: number; phases: Record<string, number> } | undefined {
  const m = new RegExp(`^${line} ([\\d.]+) s \\(([^)]*)\\)`, "m").exec(out);
  if (!m) return undefined;
  const phases: Record<string, number> = {};
  for (const part of m[2].split(", ")) {
    const p = /^(\w+) ([\d.]+) s$/.exec(part);
    if (p) phases[p[1]] = Number(p[2]);
  }
  return { total: Number(m[1]), phases };
}

function cliArgs(out: string, threads: number, mode: "orig" | "seq", v8: string[] = []): string[] {
  return [
    "run",
    "-A",
    ...v8,
    join(ROOT, "cli.ts"),
    "compress",
    MODEL,
    out,
    "--method",
    "svdllm",
    "--ratio",
    String(RATIO),
    "--calib",
    CALIB,
    "--samples",
    String(SAMPLES),
    "--seqlen",
    String(SEQLEN),
    "--threads",
    String(threads),
    "--overwrite",
    ...(mode === "orig" ? ["--original-activations"] : []),
  ];
}

const f2 = (x: number | undefined) => (x === undefined ? "—" : x.toFixed(2));
const ratio = (a: number | undefined, b: number | undefined) => (a && b ? (a / b).toFixed(2) : "—");

/** Wasm function index → export name (the V8 profile names wasm code by index). */
function wasmNames(bytes: Uint8Array): Map<number, string> {
  const names = new Map<number, string>();
  let p = 8;
  const leb = () => {
    let r = 0, s = 0;
    for (;;) {
      const x = bytes[p++];
      r += (x & 0x7f) * 2 ** s;
      s += 7;
      if (!(x & 0x80)) return r;
    }
  };
  while (p < bytes.length) {
    const id = bytes[p++], len = leb(), end = p + len;
    if (id === 7) {
      const n = leb();
      for (let i = 0; i < n; i++) {
        const l = leb();
        const name = new TextDecoder().decode(bytes.subarray(p, p + l));
        p += l;
        const kind = bytes[p++], idx = leb();
        if (kind === 0) names.set(idx, name);
      }
    }
    p = end;
  }
  return names;
}

/** What a profile entry's time belongs to. */
function groupOf(name: string, wasm: Map<number, string>): string {
  const w = /wasm-function\[(\d+)\]/.exec(name);
  if (w) {
    const fn = wasm.get(Number(w[1])) ?? `wasm #${w[1]}`;
    if (fn === "sgemm") return "SGEMM (linears' forward products)";
    if (fn === "sgram_acc") return "Gram SYRK XᵀX (float32 blocks → float64)";
    if (fn === "sattend") return "attention (fused causal)";
    if (fn === "ssilu_mul") return "SwiGLU";
    if (fn.startsWith("d")) return "factorisation kernels (float64: dgemm, reflectors, rotations)";
    return `other wasm (${fn})`;
  }
  if (/syscall|futex|epoll/.test(name)) {
    return "blocked in a system call (idle threads in Atomics.wait, I/O: wall time, no CPU)";
  }
  if (/js-to-wasm/.test(name)) return "Gram SYRK XᵀX (float32 blocks → float64)"; // the entry stub of sgram_acc's calls
  if (/src\/linalg\/|src\/methods\//.test(name)) return "factorisation code (TypeScript)";
  if (/data:text\/javascript|worker_threads/.test(name)) return "worker threads' job loop (JavaScript)";
  if (/tokenizers/.test(name)) return "tokenising (@huggingface/tokenizers)";
  if (/\/deno$|libc|libm|vdso|Builtin|Stub|Bytecode|Handler/.test(name)) {
    return "runtime: GC, JIT and wasm compilers, builtins";
  }
  return "other JavaScript";
}

/** Ticks per group from `node --prof-process` output (its flat "[Shared libraries]" and "[JavaScript]"). */
function profileTable(text: string, wasm: Map<number, string>): [string, number][] {
  const groups = new Map<string, number>();
  let section = "", total = 0;
  for (const line of text.split("\n")) {
    if (/^ \[(Shared libraries|JavaScript|C\+\+)\]:/.test(line)) section = line.trim();
    else if (/^ \[/.test(line)) section = "";
    const m = /^\s+(\d+)\s+[\d.]+%\s+(?:[\d.]+%\s+)?(.+)$/.exec(line);
    if (!section || !m) continue;
    const g = groupOf(m[2], wasm);
    groups.set(g, (groups.get(g) ?? 0) + Number(m[1]));
    total += Number(m[1]);
  }
  const u = /\((\d+) ticks, (\d+) unaccounted/.exec(text);
  if (u) {
    groups.set("unattributed (profiler)", Number(u[2]));
    total += Number(u[2]);
  }
  return [...groups].sort((a, b) => b[1] - a[1]).map(([g, t]) => [g, t / Math.max(1, total)]);
}

// `--profile-text FILE`: only group a saved `node --prof-process` output (e.g. of a run made by hand).
if (process.argv.includes("--profile-text")) {
  const wasm = wasmNames(new Uint8Array(readFileSync(join(ROOT, "wasm/svd_llm.wasm"))));
  const rows = profileTable(readFileSync(arg("--profile-text", ""), "utf8"), wasm);
  for (const [g, s] of rows) console.log(`  ${(s * 100).toFixed(1).padStart(5)} %  ${g}`);
  process.exit(0);
}

if (!existsSync(join(MODEL, "model.safetensors")) || !existsSync(CALIB)) {
  console.log(`svdllm_speed: skipped, ${MODEL} or ${CALIB} is missing`);
  process.exit(0);
}

const dir = await mkdtemp(join(tmpdir(), "svdllm-speed-"));
try {
  console.log(
    `SVD-LLM, tinylm-brown, ${
      RATIO * 100
    } % removed, ${SAMPLES} × ${SEQLEN} calibration tokens; best of ${runs}`,
  );
  console.log(`before: ${load()}`);
  const rows: string[] = [];
  const details: string[] = [];
  for (const threads of threadsList) {
    const off = OFFICIAL[threads];
    // The kernel floor: one block's products alone, times the blocks (a child process, so its threads and
    // memory are its own).
    const fl = runOnce(Deno.execPath(), [
      "run",
      "-A",
      fileURLToPath(import.meta.url),
      "--floor-child",
      String(threads),
    ]);
    const floor = JSON.parse(fl.out.trim().split("\n").pop()!) as {
      wall: number;
      cpu: number;
      gemm: number;
      gram: number;
    };
    details.push(
      `${threads} thread(s), kernel floor: one block's 7 SGEMMs + 4 Gram SYRKs over ${
        SAMPLES * SEQLEN
      } tokens ` +
        `${f2(floor.wall)} s wall (SGEMM ${f2(floor.gemm)}, SYRK ${f2(floor.gram)}), ${
          f2(floor.cpu)
        } CPU-s; ` +
        `× ${BLOCKS} blocks = ${f2(floor.wall * BLOCKS)} s wall, ${f2(floor.cpu * BLOCKS)} CPU-s ` +
        `(official compute alone: ${off ? off.compute.toFixed(2) : "—"} s)`,
    );
    for (const mode of modes) {
      const all: Run[] = [];
      for (let r = 0; r < runs; r++) {
        all.push(runOnce(Deno.execPath(), cliArgs(join(dir, "ours"), threads, mode)));
      }
      const bestWall = all.reduce((a, b) => (b.wall < a.wall ? b : a));
      const bestCpu = all.reduce((a, b) => ((b.cpu ?? Infinity) < (a.cpu ?? Infinity) ? b : a));
      const peak = Math.max(...all.map((r) => r.mb ?? 0));
      rows.push(
        `${threads} | ${mode === "orig" ? "original activations" : "sequential"} | ${f2(bestWall.wall)} | ${
          f2(bestCpu.cpu)
        } | ${peak ? peak.toFixed(0) : "—"} | ${off ? `${off.compute} / ${off.whole} / ${off.mb}` : "—"} | ${
          ratio(bestWall.wall, off?.compute)
        } | ${threads === 1 ? ratio(bestCpu.cpu, off?.compute) : "—"} | ${ratio(bestWall.wall, off?.whole)}`,
      );
      const wallPh = phasesOf(bestCpu.out, "time"), cpuPh = phasesOf(bestCpu.out, "cpu");
      if (wallPh && cpuPh && bestCpu.cpu !== undefined) {
        const names = Object.keys({ ...wallPh.phases, ...cpuPh.phases });
        const cells = names.map((n) => `${n} ${f2(wallPh.phases[n])} / ${f2(cpuPh.phases[n])}`);
        details.push(
          `${threads} thread(s), ${mode}, the best-CPU run's phases (wall s / CPU s): ${cells.join(", ")}; ` +
            `start-up and rest (process CPU outside the run: Deno, modules, wasm, opening, tokenising) ` +
            `${f2(bestCpu.cpu - cpuPh.total)} CPU-s; runs: ${
              all.map((r) => `${f2(r.wall)} s / ${f2(r.cpu)} CPU-s`).join(", ")
            }`,
        );
      }
    }
    if (wantProfile) {
      const log = join(dir, `v8-${threads}.log`);
      runOnce(
        Deno.execPath(),
        cliArgs(join(dir, "ours"), threads, "orig", [
          `--v8-flags=--prof,--logfile=${log},--no-logfile-per-isolate`,
        ]),
      );
      const node = spawnSync("node", ["--prof-process", log], { encoding: "utf8", maxBuffer: 1 << 28 });
      if (node.status !== 0 || !node.stdout) details.push(`profile skipped: node --prof-process failed`);
      else {
        const wasm = wasmNames(new Uint8Array(readFileSync(join(ROOT, "wasm/svd_llm.wasm"))));
        details.push(
          `${threads} thread(s), original activations, V8 profile (share of every thread's sampled ticks):\n` +
            profileTable(node.stdout, wasm).map(([g, s]) => `  ${(s * 100).toFixed(1).padStart(5)} %  ${g}`)
              .join(
                "\n",
              ),
        );
      }
    }
    if (wantNumpy) {
      const np = numpyYardstick(threads);
      if (typeof np === "string") details.push(`numpy yardstick skipped: ${np}`);
      else {details.push(
          `${threads} thread(s), numpy doing our original-activation steps: ${f2(np.wall)} s, ${
            f2(np.cpu)
          } CPU-s`,
        );}
    }
  }
  console.log(
    "threads | calibration | ours: wall s (best) | CPU s (best) | peak MB | official: compute / whole s / MB | " +
      "ours wall ÷ official compute | ours CPU ÷ official compute | ours wall ÷ official whole",
  );
  for (const r of rows) console.log(r);
  for (const d of details) console.log(d);
  console.log(`after: ${load()}`);
} finally {
  await rm(dir, { recursive: true, force: true });
}

/** tools/svdllm_numpy.py on the windows our CLI cuts, or why it cannot run. */
function numpyYardstick(threads: number): Run | string {
  if (!existsSync("/usr/bin/python3")) return "no /usr/bin/python3";
  try {
    execFileSync("/usr/bin/python3", ["-c", "import numpy"], { stdio: "ignore" });
  } catch {
    return "numpy is not installed for /usr/bin/python3 (Debian: apt-get install python3-numpy)";
  }
  const winFile = join(dir, "windows.i32");
  if (!existsSync(winFile)) {
    const cut = runOnce(Deno.execPath(), [
      "eval",
      `import { loadModel } from "${join(ROOT, "src/model/load.ts")}";
       import { calibrationWindows } from "${join(ROOT, "src/calib/windows.ts")}";
       const m = await loadModel(${JSON.stringify(MODEL)});
       const ids = m.tokenizer.encode(Deno.readTextFileSync(${JSON.stringify(CALIB)}), { bos: true });
       await m.close();
       const w = calibrationWindows(ids, { samples: ${SAMPLES}, seqlen: ${SEQLEN}, seed: 0 });
       const flat = new Int32Array(${SAMPLES * SEQLEN});
       w.forEach((x, i) => flat.set(x, i * ${SEQLEN}));
       Deno.writeFileSync(${JSON.stringify(winFile)}, new Uint8Array(flat.buffer));`,
    ]);
    if (!existsSync(winFile)) return `could not cut the calibration windows: ${cut.out}`;
  }
  return runOnce("/usr/bin/python3", [
    join(ROOT, "tools/svdllm_numpy.py"),
    MODEL,
    winFile,
    String(SAMPLES),
    String(SEQLEN),
    String(RATIO),
    join(dir, "numpy"),
  ], { OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) });
}
