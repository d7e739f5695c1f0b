/**
 * SVD-LLM compression speed on tinylm-brown at 20 % (64 × 256 calibration tokens from brown-calib.txt), one
 * and two threads: our CLI in both calibration modes, a plain-numpy run of the same steps as our
 * original-activation mode (`tools/svdllm_numpy.py`, Debian's /usr/bin/python3 + numpy with
 * OPENBLAS_NUM_THREADS = threads), and the official reference's figures from methods.md "Peers" (5.84 s on one
 * torch thread, 3.91 s on two; it whitens from the original model's activations in one dense pass).
 *
 * Every time is the wall clock of a whole process (start-up, reading the model and writing the output
 * included), best of `--runs` (default 1); below each row, where each side's time went (our CLI's phases,
 * numpy's in-process phases). numpy gets the very calibration windows our CLI cuts (written to a
 * file here), so its time leaves tokenising out (about 0.2 s of ours). The numpy part is skipped with a
 * message when /usr/bin/python3 or numpy is missing. Prints `uptime`'s load before and after: the machine is
 * shared, so compare the ratios of one run rather than times of different runs.
 *
 * Usage: deno run -A bench/svdllm_speed.ts [--threads 1,2] [--runs N] [--modes orig,seq]
 * (on a shared machine run one thread count per call, to keep each run short).
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { calibrationWindows } from "../src/calib/windows.ts";
import { loadModel } from "../src/model/load.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const MODEL = join(ROOT, "../shared/models/tinylm-brown");
const CALIB = join(ROOT, "../shared/data/brown-calib.txt");
const SAMPLES = 64, SEQLEN = 256, RATIO = 0.2;
/** methods.md "Peers": the official SVD-LLM on CPU (torch, fp32), whitening only, r = 0.2. */
const PEERS: Record<number, number> = { 1: 5.84, 2: 3.91 };

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

const threadsList = arg("--threads", "1,2").split(",").map(Number);
const runs = Number(arg("--runs", "1"));
const modes = arg("--modes", "orig,seq").split(",");

function load(): string {
  try {
    return execFileSync("uptime", { encoding: "utf8" }).trim().replace(/^.*load/, "load");
  } catch {
    return "load unknown";
  }
}

const TIME = existsSync("/usr/bin/time") ? "/usr/bin/time" : null;

/**
 * Best wall time in seconds of `runs` runs of a command, its CPU time (user + system, through /usr/bin/time
 * when present: less sensitive to other processes on a shared machine than the wall clock), and the last
 * run's standard output.
 */
function timed(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): { s: number; cpu?: number; out: string } {
  let best = Infinity, cpu: number | undefined, out = "";
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    const res = spawnSync(TIME ?? cmd, TIME ? ["-f", "CPU %U %S", cmd, ...args] : args, {
      encoding: "utf8",
      env: { ...process.env, NO_COLOR: "1", ...env },
      maxBuffer: 1 << 24,
    });
    const s = (performance.now() - t0) / 1000;
    if (res.status !== 0) throw new Error(`svdllm_speed: ${cmd} ${args.join(" ")} failed: ${res.stderr}`);
    out = res.stdout;
    const m = /CPU ([\d.]+) ([\d.]+)\s*$/.exec(res.stderr);
    if (s < best) {
      best = s;
      cpu = m ? Number(m[1]) + Number(m[2]) : undefined;
    }
  }
  return { s: best, cpu, out };
}

function numpyAvailable(): string | null {
  if (!existsSync("/usr/bin/python3")) return "no /usr/bin/python3";
  try {
    execFileSync("/usr/bin/python3", ["-c", "import numpy"], { stdio: "ignore" });
    return null;
  } catch {
    return "numpy is not installed for /usr/bin/python3 (Debian: apt-get install python3-numpy)";
  }
}

if (!existsSync(join(MODEL, "model.safetensors")) || !existsSync(CALIB)) {
  console.log(`svdllm_speed: skipped, ${MODEL} or ${CALIB} is missing`);
  process.exit(0);
}

const dir = await mkdtemp(join(tmpdir(), "svdllm-speed-"));
try {
  // The calibration windows exactly as `compress` cuts them (tokenizer, one BOS, random starts, seed 0).
  const model = await loadModel(MODEL);
  const ids = model.tokenizer!.encode(readFileSync(CALIB, "utf8"), { bos: true });
  await model.close();
  const windows = calibrationWindows(ids, { samples: SAMPLES, seqlen: SEQLEN, seed: 0 });
  const flat = new Int32Array(SAMPLES * SEQLEN);
  windows.forEach((w, i) => flat.set(w, i * SEQLEN));
  const winFile = join(dir, "windows.i32");
  await writeFile(winFile, new Uint8Array(flat.buffer));
  const noNumpy = numpyAvailable();
  if (noNumpy) console.log(`numpy yardstick skipped: ${noNumpy}`);

  console.log(`SVD-LLM, tinylm-brown, ${RATIO * 100} % removed, ${SAMPLES} × ${SEQLEN} calibration tokens`);
  console.log(`before: ${load()}`);
  console.log(
    "threads | ours orig-act s | ours sequential s | numpy s | peers s | orig-act/numpy | orig-act/peers",
  );
  for (const threads of threadsList) {
    const cli = (extra: string[]) =>
      timed(Deno.execPath(), [
        "run",
        "-A",
        join(ROOT, "cli.ts"),
        "compress",
        MODEL,
        join(dir, "ours"),
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
        ...extra,
      ]);
    const orig = cli(["--original-activations"]);
    const seq = modes.includes("seq") ? cli([]) : undefined;
    let np: { s: number; cpu?: number } | undefined, phases = "";
    if (!noNumpy) {
      const r = timed("/usr/bin/python3", [
        join(ROOT, "tools/svdllm_numpy.py"),
        MODEL,
        winFile,
        String(SAMPLES),
        String(SEQLEN),
        String(RATIO),
        join(dir, "numpy"),
      ], { OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) });
      np = r;
      const p = JSON.parse(r.out.trim().split("\n").pop()!);
      phases = Object.entries(p).map(([k, v]) => `${k} ${(v as number).toFixed(2)}`).join(", ");
    }
    const peer = PEERS[threads];
    const f = (x: { s: number; cpu?: number } | undefined) =>
      x === undefined ? "—" : `${x.s.toFixed(2)}${x.cpu === undefined ? "" : ` (cpu ${x.cpu.toFixed(2)})`}`;
    const ratio = (a: number | undefined, b: number | undefined) => (a && b ? (a / b).toFixed(2) : "—");
    console.log(
      `${threads} | ${f(orig)} | ${f(seq)} | ${f(np)} | ${peer === undefined ? "—" : peer.toFixed(2)} | ${
        ratio(orig.s, np?.s)
      } (cpu ${ratio(orig.cpu, np?.cpu)}) | ${ratio(orig.s, peer)}`,
    );
    // Ours, from the summary line the CLI prints: "time 15.06 s (embed 0.13 s, …, write 0.06 s), …".
    const ours = (x: { out: string } | undefined) => /^time [\d.]+ s \(([^)]*)\)/m.exec(x?.out ?? "")?.[1];
    if (ours(orig)) console.log(`  ours orig-act phases: ${ours(orig)}`);
    if (ours(seq)) console.log(`  ours sequential phases: ${ours(seq)}`);
    if (phases) console.log(`  numpy phases (s, in-process): ${phases}`);
  }
  console.log(`after: ${load()}`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
