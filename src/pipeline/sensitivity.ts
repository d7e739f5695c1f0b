/**
 * ASVD's sensitivity sweep: for every linear and each parameter ratio p of a grid, replace that one layer by
 * its ASVD factors and measure the calibration perplexity. The expensive step of ASVD, so it is cut short
 * where it can be: the blocks before the replaced layer do not change, so their output on the calibration
 * windows is computed once per block and reused; the SVD of W·S is computed once per layer and truncated
 * to every p. Results go to a JSON cache keyed by a hash of the weights, the windows and the settings, written
 * after every layer, so an interrupted sweep resumes where it stopped. The sweep holds the model's blocks in
 * memory.
 *
 * @module
 */
import { AbsMeanObserver } from "../calib/abs_mean.ts";
import { OptionError } from "../errors.ts";
import { writeFileAtomic } from "../io/atomic_write.ts";
import type { TensorReader } from "../io/tensor_reader.ts";
import type { Matrix } from "../linalg/matrix.ts";
import { asvdFactors, asvdSpectrum } from "../methods/asvd.ts";
import { SENSITIVITY_RATIOS, type SensitivityTable } from "../methods/asvd_sensitivity.ts";
import {
  BLOCK_FIELD,
  type Linear,
  type LlamaBlock,
  type LlamaHead,
  loadBlock,
  loadHead,
  tokenNll,
} from "../model/llama.ts";
import { LINEAR_NAMES, type LinearName, linearPrefix } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import { embedWindows, type HiddenStates, runBlock } from "./hidden.ts";

/** Options of {@link sensitivitySweep}. */
export interface SensitivityOptions {
  /** Parameter ratios to try (default 0.4…0.9). */
  ratios?: readonly number[];
  /** ASVD α (default 0.5). */
  alpha?: number;
  /** Linears to sweep (default all seven). */
  linears?: readonly LinearName[];
  /** Windows per forward batch (default 8). */
  batchSize?: number;
  /** JSON cache file: read if its key matches, rewritten after every layer. */
  cacheFile?: string;
  /** Progress: layers swept out of all. */
  onProgress?: (e: { layer?: string; done: number; total: number; etaSeconds?: number }) => void;
}

/** Result of {@link sensitivitySweep}. */
export interface SensitivityResult {
  /** table[layer][String(p)] = calibration perplexity with only that layer compressed at p. */
  table: SensitivityTable;
  /** Calibration perplexity of the dense model. */
  densePpl: number;
  /** Everything came from the cache. */
  fromCache: boolean;
  /** Wall time, seconds. */
  seconds: number;
  /** The cache key (hex). */
  key: string;
}

interface CacheFile {
  version: 1;
  key: string;
  settings: Record<string, unknown>;
  densePpl: number;
  table: SensitivityTable;
}

/** Mean NLL → perplexity over the windows: position t predicts token t+1 of its window. */
function perplexityOf(
  spec: LlamaSpec,
  head: LlamaHead,
  h: HiddenStates,
  windows: readonly Int32Array[],
): number {
  const seq = h.seq;
  const targets = new Int32Array(h.x.rows);
  for (let s = 0; s < windows.length; s++) {
    for (let t = 0; t < seq; t++) targets[s * seq + t] = t + 1 < seq ? windows[s][t + 1] : -1;
  }
  const nll = tokenNll(spec, head, h.x, targets);
  let sum = 0, n = 0;
  for (let i = 0; i < nll.length; i++) {
    if (targets[i] < 0) continue;
    if (!Number.isFinite(nll[i])) return Infinity; // a broken model: most sensitive, never hidden
    sum += nll[i];
    n++;
  }
  return Math.exp(sum / n);
}

async function sha256Hex(parts: (Uint8Array | string)[]): Promise<string> {
  const { createHash } = await import("node:crypto");
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

function bytesOf(a: Float32Array | Int32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * Run (or resume, or read from cache) the sweep on `windows` (≥ 1 window of ≥ 2 tokens, equal lengths).
 * Throws OptionError on bad ratios or windows.
 */
export async function sensitivitySweep(
  model: { spec: LlamaSpec; reader: TensorReader },
  windows: readonly Int32Array[],
  opts: SensitivityOptions = {},
): Promise<SensitivityResult> {
  const t0 = performance.now();
  const { spec, reader } = model;
  const ratios = [...(opts.ratios ?? SENSITIVITY_RATIOS)];
  for (const p of ratios) {
    if (!(p > 0 && p < 1)) throw new OptionError(`sensitivity sweep: ratios must be in (0, 1), got ${p}`);
  }
  if (windows.length < 1 || windows[0].length < 2) {
    throw new OptionError(`sensitivity sweep: needs at least one calibration window of 2 tokens or more`);
  }
  const linears = opts.linears ?? LINEAR_NAMES;
  const batch = opts.batchSize ?? 8;
  const alpha = opts.alpha ?? 0.5;

  // The whole model in memory for the sweep; its hash keys the cache.
  const head = await loadHead(reader, spec);
  const blocks: LlamaBlock[] = [];
  for (let i = 0; i < spec.numLayers; i++) blocks.push(await loadBlock(reader, spec, i));
  const settings = {
    alpha,
    ratios,
    linears,
    samples: windows.length,
    seqlen: windows[0].length,
    scaling: "abs_mean",
  };
  const parts: (Uint8Array | string)[] = [JSON.stringify(settings)];
  for (const w of windows) parts.push(bytesOf(w));
  parts.push(bytesOf(head.embed.data), bytesOf(head.norm), bytesOf(head.lmHead.data));
  for (const b of blocks) {
    parts.push(bytesOf(b.inputNorm), bytesOf(b.postNorm));
    for (const l of LINEAR_NAMES) {
      const lin = b[BLOCK_FIELD[l]] as Linear;
      if (lin.kind === "dense") parts.push(bytesOf(lin.weight.data));
      else parts.push(bytesOf(lin.a.data), bytesOf(lin.b.data));
    }
  }
  const key = await sha256Hex(parts);

  let cache: CacheFile = { version: 1, key, settings, densePpl: NaN, table: {} };
  if (opts.cacheFile) {
    const { readFile } = await import("node:fs/promises");
    try {
      const c = JSON.parse(await readFile(opts.cacheFile, "utf8")) as CacheFile;
      if (c.version === 1 && c.key === key) cache = c;
    } catch {
      // no cache yet, or unreadable: start afresh
    }
  }
  const save = async () => {
    if (opts.cacheFile) {
      await writeFileAtomic(opts.cacheFile, JSON.stringify(cache, null, 1) + "\n", { overwrite: true });
    }
  };

  const total = spec.numLayers * linears.length;
  const done = () =>
    Object.keys(cache.table).filter((k) => Object.keys(cache.table[k]).length === ratios.length).length;
  const startDone = done();
  const fromCache = startDone === total && Number.isFinite(cache.densePpl);
  if (fromCache) {
    return {
      table: cache.table,
      densePpl: cache.densePpl,
      fromCache,
      seconds: (performance.now() - t0) / 1000,
      key,
    };
  }

  let h = embedWindows(spec, head, windows);
  // Dense perplexity (also checks the forward is finite before hours of work).
  if (!Number.isFinite(cache.densePpl)) {
    let x = h;
    for (const b of blocks) x = runBlock(spec, b, x, batch, undefined, x === h ? "new" : "inplace");
    cache.densePpl = perplexityOf(spec, head, x, windows);
    await save();
  }
  const tSweep = performance.now();
  let swept = 0;
  for (let i = 0; i < spec.numLayers; i++) {
    const todo = linears.filter((l) =>
      Object.keys(cache.table[linearPrefix(i, l)] ?? {}).length !== ratios.length
    );
    let next: HiddenStates;
    if (todo.length === 0) {
      next = runBlock(spec, blocks[i], h, batch);
    } else {
      // ASVD statistics of this block's inputs (original activations), and its dense output.
      const obs = new Map<LinearName, AbsMeanObserver>();
      next = runBlock(spec, blocks[i], h, batch, (linear: LinearName, x: Matrix) => {
        if (!todo.includes(linear)) return;
        let o = obs.get(linear);
        if (!o) obs.set(linear, o = new AbsMeanObserver(linearPrefix(i, linear), x.cols));
        o.addBatch(x);
      });
      for (const l of todo) {
        const name = linearPrefix(i, l);
        const lin = blocks[i][BLOCK_FIELD[l]] as Linear;
        if (lin.kind !== "dense") throw new OptionError(`sensitivity sweep: ${name} is already low-rank`);
        const o = obs.get(l)!;
        const sp = asvdSpectrum(lin.weight, { absMean: o.mean() }, { alpha });
        const row: Record<string, number> = {};
        for (const p of ratios) {
          const m = lin.weight.rows, n = lin.weight.cols;
          const rank = Math.max(1, Math.min(Math.floor((m * n * p) / (m + n)), m, n));
          const { a, b } = asvdFactors(sp, rank);
          const modified: LlamaBlock = {
            ...blocks[i],
            [BLOCK_FIELD[l]]: { kind: "lowrank", a, b, bias: lin.bias },
          };
          const x = runBlock(spec, modified, h, batch);
          for (let j = i + 1; j < spec.numLayers; j++) {
            runBlock(spec, blocks[j], x, batch, undefined, "inplace");
          }
          row[String(p)] = perplexityOf(spec, head, x, windows);
        }
        cache.table[name] = row;
        await save();
        swept++;
        const el = (performance.now() - tSweep) / 1000;
        const left = total - startDone - swept;
        opts.onProgress?.({ layer: name, done: startDone + swept, total, etaSeconds: (el / swept) * left });
      }
    }
    h = next;
  }
  return {
    table: cache.table,
    densePpl: cache.densePpl,
    fromCache: false,
    seconds: (performance.now() - t0) / 1000,
    key,
  };
}
