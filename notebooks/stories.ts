/**
 * The bundled test bed of the notebooks: karpathy's stories260K (5 blocks, hidden 64, MLP 172) and the
 * bundled TinyStories text, split as in `bench/methods.ts`: calibration windows from the first half of the
 * tokens, perplexity on the second half in windows of 512. Also: the exact inputs one linear layer sees, and
 * "compress the whole model, reload it, measure perplexity" in one call.
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import {
  AbsMeanObserver,
  compareMethods,
  type CompressOptions,
  type CompressReport,
  GramObserver,
  LINEAR_NAMES,
  type LinearName,
  type LoadedModel,
  loadModel,
  type Matrix,
  type Matrix64,
  perplexity,
  type SensitivityResult,
  sensitivitySweep,
} from "@svd/llm";
import { calibrationWindows } from "@svd/llm/calib";
import { BLOCK_FIELD, forwardHidden, loadBlock } from "@svd/llm/model";

/** The bundled model file. */
export const MODEL_PATH = fileURLToPath(new URL("../models/stories260K/stories260K.gguf", import.meta.url));
/** The bundled text. */
export const TEXT_PATH = fileURLToPath(new URL("../data/tinystories-valid.part1.txt", import.meta.url));
/** Perplexity window (tokens). */
export const WINDOW = 512;

/** The opened model and its token streams. */
export interface Stories {
  /** The dense model. */
  model: LoadedModel;
  /** First half of the text's tokens: calibration. */
  calib: Int32Array;
  /** Second half: evaluation. */
  evalIds: Int32Array;
  /** `samples` random windows of `seqlen` calibration tokens (seed 0 unless given). */
  windows(samples: number, seqlen: number, seed?: number): Int32Array[];
}

/** Open stories260K and tokenize the bundled text once (one BOS), split in halves. */
export async function openStories(): Promise<Stories> {
  const model = await loadModel(MODEL_PATH);
  const ids = Int32Array.from(model.tokenizer.encode(await readFile(TEXT_PATH, "utf8"), { bos: true }));
  const half = Math.floor(ids.length / 2);
  const calib = ids.slice(0, half), evalIds = ids.slice(half);
  return {
    model,
    calib,
    evalIds,
    windows: (samples, seqlen, seed = 0) => calibrationWindows(calib, { samples, seqlen, seed }),
  };
}

/** The weight of one linear of the dense model, `out×in`. */
export async function layerWeight(s: Stories, block: number, linear: LinearName): Promise<Matrix> {
  const lin = (await loadBlock(s.model.reader, s.model.spec, block))[BLOCK_FIELD[linear]];
  if (lin.kind !== "dense") throw new Error(`layerWeight: block ${block} ${linear} is not dense`);
  return lin.weight;
}

/** One linear of the dense model and the exact inputs it sees on `windows`: `w: out×in`, `x: tokens×in`. */
export async function layerInputs(
  s: Stories,
  windows: Int32Array[],
  block: number,
  linear: LinearName,
): Promise<{ w: Matrix; x: Matrix }> {
  const w = await layerWeight(s, block, linear);
  let x: Matrix | undefined;
  await forwardHidden(s.model, windows, {
    observe: (i) =>
      i === block
        ? (name, input) => {
          if (name === linear) x = { rows: input.rows, cols: input.cols, data: input.data.slice() };
        }
        : undefined,
  });
  return { w, x: x! };
}

/** One linear of the dense model with the statistics of its inputs on some windows. */
export interface LinearStats {
  /** Block index. */
  block: number;
  /** Which linear. */
  name: LinearName;
  /** Weight, out×in. */
  w: Matrix;
  /** Mean |x_j| per input channel (ASVD). */
  absMean: Float64Array;
  /** Mean Gram matrix (1/T)·XᵀX of the inputs (SVD-LLM), in×in. */
  gram: Matrix64;
}

/** Every linear of the dense model with its input statistics on `windows` (one forward pass). */
export async function linearStats(s: Stories, windows: Int32Array[]): Promise<LinearStats[]> {
  const observers = new Map<string, { abs: AbsMeanObserver; gram: GramObserver }>();
  await forwardHidden(s.model, windows, {
    observe: (block) => (name, x) => {
      const key = `${block}.${name}`;
      let o = observers.get(key);
      if (!o) {
        o = { abs: new AbsMeanObserver(key, x.cols), gram: new GramObserver(key, x.cols) };
        observers.set(key, o);
      }
      o.abs.addBatch(x);
      o.gram.addBatch(x);
    },
  });
  const out: LinearStats[] = [];
  for (let block = 0; block < s.model.spec.numLayers; block++) {
    for (const name of LINEAR_NAMES) {
      const o = observers.get(`${block}.${name}`)!;
      out.push({
        block,
        name,
        w: await layerWeight(s, block, name),
        absMean: o.abs.mean(),
        gram: o.gram.gram(),
      });
    }
  }
  return out;
}

/** Perplexity of the dense model on the evaluation half. */
export async function densePpl(s: Stories): Promise<number> {
  return (await perplexity(s.model, s.evalIds, { window: WINDOW })).ppl;
}

/** What {@link compressedPpl} and {@link sensitivity} send to their worker. */
export type WorkerJob =
  | {
    kind: "compress";
    /** Compression options (calibration is added from `calib`). */
    opts: Omit<CompressOptions, "calibration">;
    /** Calibration windows: `samples` × `seqlen` tokens. */
    samples: number;
    /** Tokens per calibration window (256 unless given). */
    seqlen?: number;
    /** Calibration tokens. */
    calib: Int32Array;
    /** Evaluation tokens. */
    evalIds: Int32Array;
  }
  | {
    kind: "sensitivity";
    /** The sweep runs on the first `samples` of the 16 × 256 calibration windows `compressedPpl` uses. */
    samples: number;
    /** Calibration tokens. */
    calib: Int32Array;
    /** The sweep's cache file, which `compress` then reads instead of sweeping again. */
    cacheFile: string;
  };

/**
 * Compress the whole model with `opts` (calibration: `samples` × `seqlen` tokens of the first half, seed 0), reload
 * the result, measure its perplexity on the second half, and delete it.
 *
 * Runs in a worker (compress_worker.ts), which skips the pipeline's forced garbage collections: they cost
 * more in the kernel, whose own JavaScript heap is about 80 MB. Since the pipeline paces them
 * (`COLLECT_BYTES` in src/pipeline/memory_policy.ts) the gain is small: the worker took about 0.7× the
 * kernel's CPU time for svdllm at 20 % (3 runs each, at load 20). The quickstart notebook calls `compress`
 * and `compareMethods` in the kernel, as a user would.
 */
export function compressedPpl(
  s: Stories,
  opts: Omit<CompressOptions, "calibration">,
  samples = 16,
  seqlen = 256,
): Promise<{ ppl: number; report: CompressReport }> {
  return inWorker({ kind: "compress", opts, samples, seqlen, calib: s.calib, evalIds: s.evalIds });
}

/**
 * ASVD's sensitivity sweep (`sensitivitySweep`) on the first `samples` calibration windows of
 * {@link compressedPpl}, cached in `cacheFile`, so that `compressedPpl(s, { method: "asvd", allocation:
 * "sensitivity", sensitivity: { samples, cacheFile } })` reuses it. Runs in the worker too (the sweep
 * allocates a lot, and the kernel's collections are slow).
 */
export function sensitivity(s: Stories, samples: number, cacheFile: string): Promise<SensitivityResult> {
  return inWorker({ kind: "sensitivity", samples, calib: s.calib, cacheFile });
}

let worker: Worker | undefined;
let queue: Promise<unknown> = Promise.resolve();

/** Run a job in the worker: one worker, reused (starting one costs about a second), one job at a time. */
function inWorker<T>(msg: WorkerJob): Promise<T> {
  if (!worker) {
    const w = new Worker(new URL("./compress_worker.ts", import.meta.url), { type: "module" });
    worker = w;
    queue = new Promise<void>((resolve, reject) => {
      w.onmessage = () => resolve(); // { ready: true }
      w.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`compress worker: ${e.message}`));
      };
    });
  }
  const w = worker;
  const job = queue.then(() =>
    new Promise<T>((resolve, reject) => {
      w.onmessage = (e) => e.data.error ? reject(new Error(e.data.error)) : resolve(e.data);
      w.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`compress worker: ${e.message}`));
      };
      w.postMessage(msg);
    })
  );
  queue = job.catch(() => {});
  return job;
}

/** Calibration windows of {@link compressedPpl}: `samples` × 256 tokens, seed 0. */
function calibWindows(calib: Int32Array, samples: number): Int32Array[] {
  return calibrationWindows(calib, { samples, seqlen: 256, seed: 0 });
}

/** The worker's side of {@link WorkerJob}: run it in the calling isolate. */
export async function runJob(job: WorkerJob): Promise<unknown> {
  if (job.kind === "sensitivity") {
    const model = await loadModel(MODEL_PATH);
    try {
      return await sensitivitySweep(model, calibWindows(job.calib, 16).slice(0, job.samples), {
        cacheFile: job.cacheFile,
      });
    } finally {
      await model.close();
    }
  }
  const [row] = await compareMethods(MODEL_PATH, {
    ...job.opts,
    methods: [job.opts],
    calibration: { ids: job.calib, samples: job.samples, seqlen: job.seqlen ?? 256, seed: 0 },
    evalIds: job.evalIds,
    window: WINDOW,
  });
  return { ppl: row.ppl, report: row.report };
}

/** SoCo's short schedule in the notebooks: 60 steps on 8 × 128 calibration tokens (bench/soco.ts: 100 on 32 × 256). */
export const SOCO_SHORT = { steps: 60, batch: 4 } as const;

/** Ratios (fraction of the block linears' parameters removed) of the notebooks' common chart. */
export const CURVE_RATIOS = [0.2, 0.4, 0.6] as const;

/** The methods of the common chart: label → compression options and calibration (`samples` × `seqlen`). */
export const CURVE_METHODS: Readonly<
  Record<string, { opts: Omit<CompressOptions, "calibration" | "ratio">; samples: number; seqlen: number }>
> = {
  svd: { opts: { method: "svd" }, samples: 16, seqlen: 256 },
  asvd: { opts: { method: "asvd" }, samples: 16, seqlen: 256 },
  fwsvd: { opts: { method: "fwsvd" }, samples: 16, seqlen: 256 },
  svdllm: { opts: { method: "svdllm" }, samples: 16, seqlen: 256 },
  "svdllm (global)": { opts: { method: "svdllm", allocation: "global" }, samples: 16, seqlen: 256 },
  soco: { opts: { method: "soco", soco: SOCO_SHORT }, samples: 8, seqlen: 128 },
};

/** One point of the common chart: a method at a ratio, its held-out perplexity and (when run here) its report. */
export interface CurvePoint {
  /** A key of {@link CURVE_METHODS}. */
  method: string;
  /** Fraction removed. */
  removed: number;
  /** Perplexity on the evaluation half, windows of {@link WINDOW}. */
  ppl: number;
  /** The compression's report (absent for points the notebook computed itself). */
  report?: CompressReport;
}

/**
 * Every method of {@link CURVE_METHODS} at every ratio of {@link CURVE_RATIOS}, compressed in the worker
 * (calibrated on the first half, evaluated on the second); `known` points (same method and ratio, computed
 * by the notebook with the same settings) are reused instead of compressed again.
 */
export async function methodCurves(s: Stories, known: readonly CurvePoint[] = []): Promise<CurvePoint[]> {
  const points: CurvePoint[] = [];
  for (const [method, { opts, samples, seqlen }] of Object.entries(CURVE_METHODS)) {
    for (const removed of CURVE_RATIOS) {
      const have = known.find((p) => p.method === method && p.removed === removed);
      if (have) {
        points.push(have);
        continue;
      }
      const { ppl, report } = await compressedPpl(s, { ...opts, ratio: { removed } }, samples, seqlen);
      points.push({ method, removed, ppl, report });
    }
  }
  return points;
}

/** A claim about the common chart, with the figures it rests on. */
export interface CurveClaim {
  /** What is claimed. */
  claim: string;
  /** Whether the measured perplexities bear it out. */
  holds: boolean;
  /** The perplexities compared. */
  figures: string;
}

/**
 * The orderings the common chart shows that are robust on this model (margins of 1.3× or more in the runs
 * so far, or, for the closer ones, held across calibration settings): every method's perplexity grows with
 * the ratio; FWSVD and ASVD beat SVD; SVD-LLM beats SVD and ASVD; FWSVD (its K-FAC default lies close to SVD-LLM, so neither is claimed
 * better than the other) beats ASVD; per-matrix ranks beat SVD-LLM's
 * uniform ones at 20 %; SoCo beats uniform SVD-LLM at 40 % and 60 %. Not claimed: SoCo against per-matrix
 * SVD-LLM (the notebooks' short schedule ties it at 40 %) or at 20 % (where the short schedule loses).
 */
export function curveClaims(points: readonly CurvePoint[]): CurveClaim[] {
  const at = (method: string, removed: number) => {
    const p = points.find((q) => q.method === method && q.removed === removed);
    if (!p) throw new Error(`curveClaims: no point for ${method} at ${removed}`);
    return p.ppl;
  };
  const fmt = (v: number) => v.toFixed(v < 1000 ? 2 : 0);
  const less = (a: string, b: string, ratios: readonly number[]): CurveClaim => ({
    claim: `${a} < ${b} at ${ratios.map((r) => `${r * 100} %`).join(", ")}`,
    holds: ratios.every((r) => at(a, r) < at(b, r)),
    figures: ratios.map((r) => `${fmt(at(a, r))} < ${fmt(at(b, r))}`).join("; "),
  });
  const all = CURVE_RATIOS;
  return [
    ...Object.keys(CURVE_METHODS).map((m) => ({
      claim: `${m}: perplexity grows with the ratio`,
      holds: all.every((r, i) => i === 0 || at(m, all[i - 1]) < at(m, r)),
      figures: all.map((r) => fmt(at(m, r))).join(" < "),
    })),
    less("fwsvd", "svd", all),
    less("asvd", "svd", [0.2, 0.4]),
    less("svdllm", "asvd", all),
    less("fwsvd", "asvd", all),
    less("svdllm (global)", "svdllm", [0.2]),
    less("soco", "svdllm", [0.4, 0.6]),
  ];
}
