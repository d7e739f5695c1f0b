/**
 * Benchmark of the factorisations (`src/linalg/`): thin SVD, rank-k randomized SVD and Cholesky, beside
 * numpy/OpenBLAS on one thread, or on as many as ours with `--threads N` (Debian's python3-numpy through
 * `/usr/bin/python3`, else `python3`: whichever imports numpy; the run says when none does) and ml-matrix
 * (the SVD at 768² only). Prints seconds and ratios: one run
 * per large case, the best of `reps` for the small SVDs of one linear layer (the shapes SVD-LLM and ASVD
 * factor per layer), for both sides.
 * numpy runs right before each case; the CPU-time ratio is printed beside the wall-clock one because the
 * machine is shared (our CPU time counts all of Deno's threads, so it errs against us).
 *
 * The rank-k rows run the same algorithm on both sides (oversample {@link OVERSAMPLE}, {@link POWER} power
 * iterations, a re-orthonormalisation after every product), ours once per product precision.
 *
 * Usage: `node_modules/.bin/deno run -A bench/linalg.ts [--quick] [--only <text>] [--threads N]` (`--quick`:
 * small sizes, a smoke run; `--only`: the cases whose label contains the text, e.g. `--only cholesky`;
 * `--threads`: N worker threads for ours, N OpenBLAS threads for numpy).
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { cpus, loadavg } from "node:os";
import process from "node:process";
import { cholesky } from "../src/linalg/cholesky.ts";
import { matrix64 } from "../src/linalg/matrix.ts";
import { orthonormalityError } from "../src/linalg/qr.ts";
import { createRng, randomNormal } from "../src/linalg/random.ts";
import { svd } from "../src/linalg/svd.ts";
import { svdTruncated } from "../src/linalg/svd_truncated.ts";
import { closeLinalg, initLinalg, linalgInfo } from "../src/linalg/backend.ts";

const argv = typeof process !== "undefined" ? process.argv : [];
const quick = argv.includes("--quick");
/** `--only <text>`: run just the cases whose label contains the text. */
const only = argv.includes("--only") ? argv[argv.indexOf("--only") + 1] : undefined;
/** `--threads N`: our worker threads and numpy's OpenBLAS threads alike (default 1). */
const threads = argv.includes("--threads") ? Number(argv[argv.indexOf("--threads") + 1]) : 1;
if (!(Number.isInteger(threads) && threads >= 1)) {
  throw new Error("bench/linalg: --threads needs a count ≥ 1");
}
if (threads > 1) await initLinalg({ threads });

interface Case {
  kind: "svd" | "rsvd" | "chol";
  m: number;
  n: number;
  k?: number;
  mlMatrix?: boolean;
  /** Runs per case (the best is reported), for ours and numpy alike. */
  reps?: number;
  /** rsvd: element type of our products with A (numpy's are always float64). */
  precision?: "f32" | "f64";
}

const OVERSAMPLE = 10, POWER = 4;
const allCases: Case[] = quick
  ? [
    { kind: "svd", m: 256, n: 256, mlMatrix: true },
    { kind: "svd", m: 128, n: 512 },
    { kind: "rsvd", m: 1024, n: 1024, k: 32 },
    { kind: "rsvd", m: 1024, n: 1024, k: 32, precision: "f64" },
    { kind: "chol", m: 512, n: 512 },
  ]
  : [
    // Per-layer shapes of tinylm-brown / a 1B model (q/o, MLP up/down, whitened SVD-LLM factors).
    { kind: "svd", m: 256, n: 256, reps: 5 },
    { kind: "svd", m: 688, n: 256, reps: 5 },
    { kind: "svd", m: 256, n: 688, reps: 5 },
    { kind: "svd", m: 1024, n: 2816, reps: 2 },
    { kind: "svd", m: 768, n: 768, mlMatrix: true },
    { kind: "svd", m: 768, n: 3072 },
    { kind: "svd", m: 2048, n: 2048 },
    // Best of 2 on both sides: the first call of a process also pays the first touch of the wasm memory that
    // holds A (~0.2 s for 64 MB on this VM), which later calls reuse.
    { kind: "rsvd", m: 4096, n: 4096, k: 256, reps: 2 },
    { kind: "rsvd", m: 4096, n: 4096, k: 256, precision: "f64", reps: 2 },
    { kind: "chol", m: 2048, n: 2048 },
    { kind: "chol", m: 4096, n: 4096 },
  ];

const cases = allCases.filter((c) => only === undefined || label(c).includes(only));

function label(c: Case): string {
  return c.kind === "svd"
    ? `svd ${c.m}×${c.n}`
    : c.kind === "rsvd"
    ? `rank-${c.k} svd ${c.m}×${c.n} ${c.precision ?? "f32"}`
    : `cholesky ${c.n}`;
}

/** A timing: wall-clock and CPU seconds (the CPU ratio is the steadier one on a loaded, shared machine). */
interface Time {
  wall: number;
  cpu: number;
}

/** Pythons tried for numpy, in order: Debian's (python3-numpy), then whatever `python3` is on the PATH. */
const PYTHONS = ["/usr/bin/python3", "python3"];

/**
 * The first Python that can import numpy, found by trying (once); null, with the reason printed, when none
 * can: the numpy column is then left out, and the run says so rather than dropping it silently.
 */
const numpyPython: string | null = (() => {
  const why: string[] = [];
  for (const py of PYTHONS) {
    try {
      const v = execFileSync(py, ["-c", "import numpy; print(numpy.__version__)"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      }).trim();
      console.log(`numpy ${v} (${py})`);
      return py;
    } catch (e) {
      const err = e as { code?: string; stderr?: string };
      why.push(
        `${py}: ${err.code === "ENOENT" ? "not found" : (err.stderr ?? String(e)).trim().split("\n").pop()}`,
      );
    }
  }
  console.log(`numpy: not available, its column is left out (${why.join("; ")})`);
  return null;
})();

/** numpy timings of the given cases, or null when numpy is not installed. */
function numpyTimes(cases: Case[]): Time[] | null {
  if (!numpyPython) return null;
  const script = `
import json, sys, time
import numpy as np
cases = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
def rsvd(a, k, p, q):
    o = rng.standard_normal((a.shape[1], k + p))
    Q, _ = np.linalg.qr(a @ o)
    for _ in range(q):
        Z, _ = np.linalg.qr(a.T @ Q)
        Q, _ = np.linalg.qr(a @ Z)
    u, s, vt = np.linalg.svd(Q.T @ a, full_matrices=False)
    return (Q @ u)[:, :k], s[:k], vt[:k]
out = []
for c in cases:
    a = rng.standard_normal((c["m"], c["n"]))
    if c["kind"] == "chol":
        a = a + a.T + c["n"] * np.eye(c["n"])
    best, cpu = 1e30, 1e30
    for _ in range(c.get("reps", 1)):
        t, p = time.perf_counter(), time.process_time()
        if c["kind"] == "svd": np.linalg.svd(a, full_matrices=False)
        elif c["kind"] == "rsvd": rsvd(a, c["k"], ${OVERSAMPLE}, ${POWER})
        else: np.linalg.cholesky(a)
        best = min(best, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - p)
    out.append({"wall": best, "cpu": cpu})
print(json.dumps(out))
`;
  try {
    const t = String(threads);
    const env = { ...process.env, OPENBLAS_NUM_THREADS: t, OMP_NUM_THREADS: t, MKL_NUM_THREADS: t };
    const text = execFileSync(numpyPython, ["-c", script, JSON.stringify(cases)], {
      env,
      encoding: "utf8",
    });
    return JSON.parse(text.trim().split("\n").pop()!);
  } catch (e) {
    console.log(`numpy: not available (${e instanceof Error ? e.message.split("\n")[0] : e})`);
    return null;
  }
}

async function mlMatrixSvd(m: number, n: number): Promise<number | null> {
  try {
    const { Matrix, SVD } = await import("ml-matrix");
    const a = randomNormal(m, n, createRng(5));
    const rows: number[][] = [];
    for (let i = 0; i < m; i++) rows.push(Array.from(a.data.subarray(i * n, (i + 1) * n)));
    const mat = new Matrix(rows);
    const t = performance.now();
    new SVD(mat, { autoTranspose: true });
    return (performance.now() - t) / 1000;
  } catch (e) {
    console.log(`ml-matrix: not available (${e instanceof Error ? e.message : e})`);
    return null;
  }
}

/** CPU seconds of this process since `from` (all its threads: conservative for us). */
function cpuSince(from: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(from);
  return (u.user + u.system) / 1e6;
}

function ours(c: Case): Time & { note: string } {
  const rng = createRng(1);
  if (c.kind === "chol") {
    // Symmetric with a dominant diagonal: positive definite, built in O(n²).
    const n = c.n, rnd = randomNormal(n, n, rng), g = matrix64(n, n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) g.data[i * n + j] = rnd.data[i * n + j] + rnd.data[j * n + i];
    }
    for (let i = 0; i < n; i++) g.data[i * n + i] += n;
    const t = performance.now(), c0 = process.cpuUsage();
    const r = cholesky(g);
    return { wall: (performance.now() - t) / 1000, cpu: cpuSince(c0), note: `shift ${r.shift}` };
  }
  const a = randomNormal(c.m, c.n, rng);
  let wall = Infinity, cpu = Infinity, r = null as unknown as ReturnType<typeof svd>;
  for (let rep = 0; rep < (c.reps ?? 1); rep++) {
    const t = performance.now(), c0 = process.cpuUsage();
    r = c.kind === "svd" ? svd(a) : svdTruncated(a, c.k!, {
      oversample: OVERSAMPLE,
      powerIterations: POWER,
      precision: c.precision ?? "f32",
    });
    wall = Math.min(wall, (performance.now() - t) / 1000);
    cpu = Math.min(cpu, cpuSince(c0));
  }
  const orth = c.m * c.n <= 1024 * 1024 ? ` ‖UᵀU−I‖max ${orthonormalityError(r.u).toExponential(1)}` : "";
  return { wall, cpu, note: `σ1 ${r.s[0].toFixed(3)}${orth}` };
}

const info = linalgInfo();
console.log(
  `backend ${info.backend}, threads ${info.threads}, simd ${info.simd}${
    quick ? " (quick)" : ""
  }; load average ${loadavg().map((v) => v.toFixed(1)).join(" ")} on ${cpus().length} cores`,
);
if (cases.some((c) => c.kind === "rsvd")) {
  console.log(
    `rank-k rows: ours and numpy alike use a Gaussian sketch, oversample ${OVERSAMPLE} and ${POWER} power ` +
      "iterations (each Aᵀ then A), then the SVD of QᵀA, on a Gaussian float64 A; numpy in float64, " +
      "Householder QR after every product; ours with float32 (f32) or float64 (f64) products and CholeskyQR " +
      "(f32: the pass between Aᵀ and A skipped while one product spreads κ by ≤ 10)",
  );
}
// Warm up the JIT on small inputs so the first timed case measures steady-state code, as numpy's is.
svd(randomNormal(96, 64, createRng(0)));
svd(randomNormal(160, 130, createRng(0))); // divide and conquer, blocked bidiagonalisation
svdTruncated(randomNormal(300, 300, createRng(0)), 8);
ours({ kind: "chol", m: 200, n: 200 });
const fmt = (v: number | null) => v === null ? "—" : v.toFixed(3);
const ratio = (a: number, b: number | undefined) => (b ? (a / b).toFixed(2) + "×" : "—").padStart(8);
console.log(
  "case                      | ours s   | numpy s  | ours/np  | cpu o/np | ml-matrix s | ml/ours | note",
);
for (const c of cases) {
  // numpy right before ours, so both see the same load.
  const npT = numpyTimes([c])?.[0];
  const r = ours(c);
  const ml = c.mlMatrix ? await mlMatrixSvd(c.m, c.n) : null;
  console.log(
    `${label(c).padEnd(25)} | ${fmt(r.wall).padStart(8)} | ${fmt(npT?.wall ?? null).padStart(8)} | ${
      ratio(r.wall, npT?.wall)
    } | ${ratio(r.cpu, npT?.cpu)} | ${fmt(ml).padStart(11)} | ${
      (ml ? (ml / r.wall).toFixed(1) + "×" : "—").padStart(7)
    } | ${r.note}`,
  );
}
if (threads > 1) await closeLinalg();
