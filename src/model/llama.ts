/**
 * The LLaMA forward pass, float32, one block at a time (llama2.c in spirit: every field carries its shape).
 *
 * One code path serves evaluation, calibration and generation: {@link embed} turns token windows into the
 * residual stream x ((batch·seq)×hidden), {@link forwardBlock} runs one decoder block over it (causal attention
 * inside each window, GQA, RoPE, SwiGLU) and can show each linear's exact input to an observer, and
 * {@link tokenNll} / {@link finalLogits} apply the final norm and lm_head chunk by chunk so that a long window
 * over a large vocabulary never holds all its logits. {@link forwardBlockCached} is the same block with a
 * key/value cache, for incremental decoding.
 *
 * The block is written once, as data: `BLOCK_PROGRAM` in `block_def.ts` lists its operations over named
 * values, and `runBlockProgram` in `block_eval.ts` interprets the list. Each use here is that interpreter
 * with a different op list and set of values to keep — the whole program (forwardBlock and its in-place
 * variant), the ops the linears' inputs need ({@link observeBlock}: no down_proj product, no last add),
 * every intermediate kept ({@link traceBlock}), the ops downstream of one linear ({@link forwardBlockFrom}),
 * and an override that appends keys and values to a cache ({@link forwardBlockCached}) — so they agree bit
 * for bit. The batched passes with a scratch (the pipeline's) run the same list through `runResident`
 * (`block_resident.ts`), which keeps every value in wasm memory instead of copying each kernel's operands in
 * and out. The kernels (attention, SwiGLU, log-sum-exp) and their wasm/thread scheduling live in src/linalg/.
 *
 * y = x·Wᵀ everywhere (weights stored out×in), through `matmul(x, w, { transB: true })`.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { matmul } from "../linalg/gemm.ts";
import { rowsLogSumExp } from "../linalg/logsumexp.ts";
import type { Matrix } from "../linalg/matrix.ts";
import type { TensorReader } from "../io/tensor_reader.ts";
import { BLOCK_PROGRAM, type BlockOp, opsAffectedBy, opsNeededFor, type ValueName } from "./block_def.ts";
import {
  type BlockEnv,
  BlockScratch,
  type BlockValues,
  evalBlockOp,
  type LinearObserver,
  rmsNorm,
  runBlockProgram,
} from "./block_eval.ts";
import { applyLinear, BLOCK_FIELD, type Linear, type LlamaBlock } from "./block_weights.ts";
import { residentPossible, runResident } from "./block_resident.ts";
import {
  EMBED,
  FINAL_NORM,
  inputNormName,
  type LinearName,
  linearPrefix,
  LM_HEAD,
  postNormName,
  SVD_A,
  SVD_B,
} from "./names.ts";
import { linearShape } from "./linear_shape.ts";
import type { LlamaSpec } from "./spec.ts";

export { BlockScratch, type LinearObserver, rmsNorm } from "./block_eval.ts";
export {
  applyLinear,
  BLOCK_FIELD,
  type Linear,
  linearIn,
  linearOut,
  type LlamaBlock,
} from "./block_weights.ts";
export { logSumExp } from "../linalg/logsumexp.ts";
export { silu } from "../linalg/swiglu.ts";

/** The model's boundary, held in memory: embedding, final norm, output projection. */
export interface LlamaHead {
  /** vocab×d. */
  embed: Matrix;
  /** d. */
  norm: Float32Array;
  /** vocab×d (the embedding itself when tied). */
  lmHead: Matrix;
}

/** How the rows of x are grouped: `batch` windows of `seq` consecutive positions (0..seq-1). */
export interface Layout {
  /** Number of windows. */
  batch: number;
  /** Tokens per window. */
  seq: number;
}

async function readShaped(
  reader: TensorReader,
  name: string,
  shape: readonly number[],
): Promise<Float32Array> {
  const info = reader.info(name);
  if (info.shape.length !== shape.length || info.shape.some((n, i) => n !== shape[i])) {
    throw new ShapeError(
      `load ${name} from ${reader.name}: shape [${info.shape.join(", ")}], the model spec expects [${
        shape.join(", ")
      }]`,
    );
  }
  return await reader.read(name);
}

/**
 * Read the linear at `prefix` (out×in): `<prefix>.weight`, or the factor pair `<prefix>.svd_a` (out×rank) and
 * `<prefix>.svd_b` (rank×in); `<prefix>.bias` when present (required when `needBias`). Shapes are checked.
 */
export async function loadLinear(
  reader: TensorReader,
  prefix: string,
  out: number,
  inDim: number,
  needBias = false,
): Promise<Linear> {
  const biasName = `${prefix}.bias`;
  if (needBias && !reader.has(biasName)) {
    throw new ShapeError(
      `load ${prefix} from ${reader.name}: the spec says it has a bias, but ${biasName} is missing`,
    );
  }
  const bias = reader.has(biasName) ? await readShaped(reader, biasName, [out]) : undefined;
  if (reader.has(`${prefix}.weight`)) {
    const w = await readShaped(reader, `${prefix}.weight`, [out, inDim]);
    return { kind: "dense", weight: { rows: out, cols: inDim, data: w }, bias };
  }
  const aName = `${prefix}.${SVD_A}`, bName = `${prefix}.${SVD_B}`;
  if (!reader.has(aName) || !reader.has(bName)) {
    throw new ShapeError(
      `load ${prefix} from ${reader.name}: neither ${prefix}.weight nor ${aName} + ${bName} exist`,
    );
  }
  const rank = reader.info(aName).shape[1];
  const a = await readShaped(reader, aName, [out, rank]);
  const b = await readShaped(reader, bName, [rank, inDim]);
  return {
    kind: "lowrank",
    a: { rows: out, cols: rank, data: a },
    b: { rows: rank, cols: inDim, data: b },
    bias,
  };
}

/** Read block `i` (dense or low-rank linears), checking every shape against the spec. */
export async function loadBlock(reader: TensorReader, spec: LlamaSpec, i: number): Promise<LlamaBlock> {
  const d = spec.hiddenSize;
  const lin = (name: LinearName, bias = false) =>
    loadLinear(reader, linearPrefix(i, name), ...linearShape(spec, name), bias);
  return {
    inputNorm: await readShaped(reader, inputNormName(i), [d]),
    q: await lin("self_attn.q_proj", spec.attentionBias),
    k: await lin("self_attn.k_proj", spec.attentionBias),
    v: await lin("self_attn.v_proj", spec.attentionBias),
    o: await lin("self_attn.o_proj"),
    postNorm: await readShaped(reader, postNormName(i), [d]),
    gate: await lin("mlp.gate_proj"),
    up: await lin("mlp.up_proj"),
    down: await lin("mlp.down_proj"),
  };
}

const headCache = new WeakMap<TensorReader, Promise<LlamaHead>>();

/** Read embedding, final norm and lm_head (the embedding itself when tied); cached per reader. */
export function loadHead(reader: TensorReader, spec: LlamaSpec): Promise<LlamaHead> {
  let p = headCache.get(reader);
  if (!p) {
    p = (async () => {
      const v = spec.vocabSize, d = spec.hiddenSize;
      const embed = { rows: v, cols: d, data: await readShaped(reader, EMBED, [v, d]) };
      const norm = await readShaped(reader, FINAL_NORM, [d]);
      if (!spec.tieWordEmbeddings && !reader.has(LM_HEAD)) {
        throw new ShapeError(
          `load ${LM_HEAD} from ${reader.name}: missing, and the spec says it is not tied`,
        );
      }
      const lmHead = spec.tieWordEmbeddings
        ? embed
        : { rows: v, cols: d, data: await readShaped(reader, LM_HEAD, [v, d]) };
      return { embed, norm, lmHead };
    })();
    p.catch(() => headCache.delete(reader));
    headCache.set(reader, p);
  }
  return p;
}

/** Look up token embeddings: windows (batch of equal-length Int32Arrays) → x: (batch·seq)×hidden. */
export function embed(table: Matrix | LlamaHead, spec: LlamaSpec, windows: readonly Int32Array[]): Matrix {
  const e = "embed" in table ? table.embed : table;
  const d = spec.hiddenSize, seq = windows.length ? windows[0].length : 0;
  const x = new Float32Array(windows.length * seq * d);
  let r = 0;
  for (const w of windows) {
    if (w.length !== seq) throw new ShapeError(`embed: windows of unequal length (${w.length} and ${seq})`);
    for (let t = 0; t < w.length; t++, r++) {
      const id = w[t];
      if (!(id >= 0 && id < e.rows)) {
        throw new ShapeError(`embed: token id ${id} outside the vocabulary (${e.rows})`);
      }
      x.set(e.data.subarray(id * d, (id + 1) * d), r * d);
    }
  }
  return { rows: windows.length * seq, cols: d, data: x };
}

function checkLayout(what: string, spec: LlamaSpec, x: Matrix, { batch, seq }: Layout): void {
  if (x.rows !== batch * seq || x.cols !== spec.hiddenSize) {
    throw new ShapeError(`${what}: x is ${x.rows}×${x.cols}, layout needs ${batch * seq}×${spec.hiddenSize}`);
  }
}

/** The interpreter's environment for a full pass over `layout`'s windows (positions 0..seq-1). */
function fullEnv(spec: LlamaSpec, block: LlamaBlock, layout: Layout): BlockEnv {
  return { spec, block, batch: layout.batch, end: layout.seq };
}

/**
 * One decoder block over x ((batch·seq)×hidden, windows of `seq` consecutive rows at positions 0..seq-1),
 * returning the new residual stream (x is not modified). `observe` sees each linear's exact input.
 */
export function forwardBlock(
  spec: LlamaSpec,
  block: LlamaBlock,
  x: Matrix,
  layout: Layout,
  observe?: LinearObserver,
): Matrix {
  checkLayout("forwardBlock", spec, x, layout);
  return runBlockProgram(fullEnv(spec, block, layout), BLOCK_PROGRAM, { x }, { observe }).out!;
}

/**
 * {@link forwardBlock} over x in place: x becomes the block's output, with the same operations in the same
 * order (bit-for-bit the same values). With `ws`, the temporaries live in its buffers (see
 * {@link BlockScratch}), so a batched pass allocates nothing per batch.
 */
export function forwardBlockInPlace(
  spec: LlamaSpec,
  block: LlamaBlock,
  x: Matrix,
  layout: Layout,
  observe?: LinearObserver,
  ws?: BlockScratch,
): void {
  checkLayout("forwardBlock", spec, x, layout);
  const env = fullEnv(spec, block, layout);
  if (ws && residentPossible(env, x.rows)) {
    runResident(env, BLOCK_PROGRAM, x, { keep: ["out"], observe, ws }); // the same values, fewer copies
    return;
  }
  // x is owned: both residual adds write over it (the stream is dead once added to)
  const { out } = runBlockProgram(fullEnv(spec, block, layout), BLOCK_PROGRAM, { x }, {
    owned: ["x"],
    observe,
    ws,
  });
  if (out!.data !== x.data) x.data.set(out!.data);
}

/** The linears of the block program, in order. */
const LINEAR_OPS = BLOCK_PROGRAM.filter((op): op is BlockOp & { op: "linear" } => op.op === "linear");

/** What a pass that only observes runs: the ops every linear's input depends on. */
const OBSERVE_OPS = opsNeededFor(LINEAR_OPS.map((op) => op.x));

/** Linears whose input an observe-only pass shows without running them (down_proj: nothing reads its output). */
const OBSERVED_NOT_RUN = LINEAR_OPS.filter((op) => !OBSERVE_OPS.includes(op));

/**
 * Show `observe` every linear's input exactly as {@link forwardBlock} would, without computing the block's
 * output: the last product (down_proj) and the residual add are skipped, a quarter of the block's work.
 * With `ws`, temporaries live in its buffers (see {@link BlockScratch}). x is not modified.
 */
export function observeBlock(
  spec: LlamaSpec,
  block: LlamaBlock,
  x: Matrix,
  layout: Layout,
  observe: LinearObserver,
  ws?: BlockScratch,
): void {
  checkLayout("observeBlock", spec, x, layout);
  const keep = OBSERVED_NOT_RUN.map((op) => op.x), env = fullEnv(spec, block, layout);
  const values = ws && residentPossible(env, x.rows)
    ? runResident(env, OBSERVE_OPS, x, { keep, observe, ws })
    : runBlockProgram(env, OBSERVE_OPS, { x }, { keep, observe, ws });
  for (const op of OBSERVED_NOT_RUN) observe(op.lin, values[op.x]!);
}

/**
 * Every intermediate of one dense pass of a block (see {@link traceBlock}), so that a caller replacing one
 * linear can re-run only what follows it ({@link forwardBlockFrom}). All tokens×width.
 */
export interface BlockTrace {
  /** RMSNorm of the input: q/k/v's input. */
  n1: Matrix;
  /** Queries, after RoPE. */
  q: Matrix;
  /** Keys, after RoPE. */
  k: Matrix;
  /** Values. */
  v: Matrix;
  /** Attention output: o's input. */
  att: Matrix;
  /** x + o(att): the residual stream between the halves. */
  mid: Matrix;
  /** RMSNorm of mid: gate/up's input. */
  n2: Matrix;
  /** gate(n2), before SiLU. */
  g: Matrix;
  /** up(n2). */
  u: Matrix;
  /** silu(g) ⊙ u: down's input. */
  act: Matrix;
  /** The block's output. */
  out: Matrix;
}

/** The values a {@link BlockTrace} holds, besides `out`: every op input a pass from any linear on may need. */
const TRACED = [
  "n1",
  "q",
  "k",
  "v",
  "att",
  "mid",
  "n2",
  "g",
  "u",
  "act",
] as const satisfies readonly ValueName[];

/**
 * {@link forwardBlock} keeping every intermediate: the same operations in the same order, so `trace.out`
 * equals forwardBlock's output exactly.
 */
export function traceBlock(spec: LlamaSpec, block: LlamaBlock, x: Matrix, layout: Layout): BlockTrace {
  checkLayout("traceBlock", spec, x, layout);
  const values = runBlockProgram(fullEnv(spec, block, layout), BLOCK_PROGRAM, { x }, {
    keep: [...TRACED, "out"],
  });
  const trace = { out: values.out! } as BlockTrace;
  for (const v of TRACED) trace[v] = values[v]!;
  return trace;
}

/**
 * The output of `block` on x when everything upstream of linear `from` is as in `trace` (a {@link traceBlock}
 * of a block that differs from this one in `from` alone): only `from` and what follows it are computed
 * (`opsAffectedBy(from)`). With the traced block itself, the result equals `trace.out`.
 */
export function forwardBlockFrom(
  spec: LlamaSpec,
  block: LlamaBlock,
  x: Matrix,
  layout: Layout,
  trace: BlockTrace,
  from: LinearName,
): Matrix {
  checkLayout("forwardBlockFrom", spec, x, layout);
  const values: BlockValues = { x };
  for (const v of TRACED) values[v] = trace[v]; // read only: nothing given is owned
  return runBlockProgram(fullEnv(spec, block, layout), opsAffectedBy(from), values).out!;
}

/**
 * One block's key/value cache for incremental decoding of a single sequence.
 *
 * "full" caches the rotated keys and the values (kvHeads·headDim each per token). "latent" is ASVD's KV-cache
 * mode: for a low-rank k or v projection (A·B) it caches only the rank-r latent B·x of each token, and rebuilds
 * K = latent·Aᵀ (+ bias) when attending, applying RoPE to the rebuilt keys (rotation does not commute with
 * A, so rotating the latent would be wrong); a dense projection's latent is its output, un-rotated.
 */
export interface LayerCache {
  /** What is cached (see above). */
  readonly mode: "full" | "latent";
  /** capacity×kWidth: rotated keys ("full") or key latents ("latent"). */
  readonly k: Float32Array;
  /** capacity×vWidth: values or value latents. */
  readonly v: Float32Array;
  /** Floats cached per token for keys: kvHeads·headDim, or the k projection's rank. */
  readonly kWidth: number;
  /** Floats cached per token for values. */
  readonly vWidth: number;
  /** Positions filled so far. */
  length: number;
  /** Positions the buffers hold. */
  readonly capacity: number;
}

/**
 * An empty cache for `capacity` positions. "latent" needs the block, whose low-rank k/v set the widths.
 */
export function newLayerCache(
  spec: LlamaSpec,
  capacity: number,
  mode: "full" | "latent" = "full",
  block?: LlamaBlock,
): LayerCache {
  const kv = spec.numKvHeads * spec.headDim;
  if (mode === "latent" && !block) {
    throw new ShapeError("newLayerCache: a latent cache needs the block's k/v");
  }
  if (!Number.isSafeInteger(capacity) || capacity < 0) {
    throw new ShapeError(`newLayerCache: capacity ${capacity} is not a non-negative integer`);
  }
  const width = (lin: Linear | undefined) => (mode === "latent" && lin?.kind === "lowrank" ? lin.b.rows : kv);
  const kWidth = width(block?.k), vWidth = width(block?.v);
  return {
    mode,
    k: new Float32Array(capacity * kWidth),
    v: new Float32Array(capacity * vWidth),
    kWidth,
    vWidth,
    length: 0,
    capacity,
  };
}

/** The attention op: its k and v inputs are what a cache holds. */
const ATTENTION = BLOCK_PROGRAM.find((op): op is BlockOp & { op: "attention" } => op.op === "attention")!;

/** The op computing value `v`. */
const producer = (v: ValueName): BlockOp => BLOCK_PROGRAM.find((op) => op.out === v)!;

/** The linear a cached value comes from (through RoPE for keys): what a latent cache factors. */
function sourceLinear(v: ValueName): BlockOp & { op: "linear" } {
  const op = producer(v);
  return op.op === "linear" ? op : sourceLinear((op as BlockOp & { op: "rope" }).x);
}

/** The per-token latent a latent cache keeps for `lin`: B·x for a low-rank linear, W·x + b for a dense one. */
function latentOf(lin: Linear, x: Matrix): Matrix {
  return lin.kind === "lowrank" ? matmul(x, lin.b, { transB: true }) : applyLinear(lin, x);
}

/** Rebuild the projection's outputs (rows×out) from cached latents (rows×width). */
function fromLatent(lin: Linear, latent: Matrix): Matrix {
  return lin.kind === "lowrank"
    ? applyLinear({ kind: "dense", weight: lin.a, bias: lin.bias }, latent)
    : latent;
}

/**
 * The same block as {@link forwardBlock} for one sequence, continuing from the cached positions: x holds the
 * next n tokens (n×hidden, positions cache.length..cache.length+n-1); their keys/values (or latents) are
 * appended to the cache.
 *
 * The block program runs with an override: a "full" cache stores the new rows of attention's k and v and
 * hands attention the whole cache; a "latent" cache replaces the linears behind k and v by their latents,
 * stores those, and rebuilds k (then rotated for positions 0..n−1 by the program's own RoPE op) and v for
 * every cached position.
 */
export function forwardBlockCached(spec: LlamaSpec, block: LlamaBlock, x: Matrix, cache: LayerCache): Matrix {
  const nq = x.rows, past = cache.length, nk = past + nq;
  if (x.cols !== spec.hiddenSize) {
    throw new ShapeError(
      `forwardBlockCached: x is ${x.rows}×${x.cols}, the model's width is ${spec.hiddenSize}`,
    );
  }
  if (nk > cache.capacity) {
    throw new ShapeError(`forwardBlockCached: cache holds ${cache.capacity} positions`);
  }
  const env: BlockEnv = { spec, block, batch: 1, end: nk };
  const store = { [ATTENTION.k]: [cache.k, cache.kWidth], [ATTENTION.v]: [cache.v, cache.vWidth] } as Partial<
    Record<ValueName, [Float32Array, number]>
  >;
  const latentOps = new Map([ATTENTION.k, ATTENTION.v].map((v) => [sourceLinear(v), store[v]!]));
  const append = (buf: Float32Array, w: number, rows: Matrix): Matrix => {
    buf.set(rows.data, past * w);
    return { rows: nk, cols: w, data: buf.subarray(0, nk * w) };
  };
  const override = (op: BlockOp, values: BlockValues) => {
    if (cache.mode === "full") {
      const slot = store[op.out];
      return slot && { value: append(...slot, evalBlockOp(env, op, values)), owned: false };
    }
    const slot = op.op === "linear" ? latentOps.get(op) : undefined;
    if (!slot || op.op !== "linear") return undefined;
    const lin = block[BLOCK_FIELD[op.lin]];
    const value = fromLatent(lin, append(...slot, latentOf(lin, values[op.x]!)));
    return { value, owned: value.data.buffer !== slot[0].buffer }; // a view of the cache is rotated as a copy
  };
  const { out } = runBlockProgram(env, BLOCK_PROGRAM, { x }, { override });
  cache.length = nk;
  return out!;
}

/** Logits (rows×vocab) of a few rows of the final residual stream h (rows×hidden): lm_head(RMSNorm(h)). */
export function finalLogits(spec: LlamaSpec, head: LlamaHead, h: Matrix): Matrix {
  return matmul(rmsNorm(h, head.norm, spec.rmsNormEps), head.lmHead, { transB: true });
}

/** Rows of logits computed at once by {@link tokenNll}: about 4M floats (16 MB) whatever the vocabulary. */
function chunkRows(vocab: number): number {
  return Math.max(1, Math.floor((1 << 22) / vocab));
}

/**
 * Negative log-likelihood (natural log) of `targets[t]` under the logits of row t of the final residual stream
 * h (tokens×hidden), computed chunk by chunk. A target < 0 means "no prediction" and gives NaN. A row whose
 * logits are not finite gives a non-finite NLL (reported, not hidden).
 */
export function tokenNll(spec: LlamaSpec, head: LlamaHead, h: Matrix, targets: Int32Array): Float64Array {
  if (targets.length !== h.rows) {
    throw new ShapeError(`tokenNll: ${targets.length} targets for ${h.rows} rows`);
  }
  const out = new Float64Array(h.rows), V = spec.vocabSize, step = chunkRows(V), d = h.cols;
  for (let r0 = 0; r0 < h.rows; r0 += step) {
    const n = Math.min(step, h.rows - r0);
    const logits = finalLogits(spec, head, { rows: n, cols: d, data: h.data.subarray(r0 * d, (r0 + n) * d) });
    const lse = rowsLogSumExp(logits.data, n, V);
    for (let i = 0; i < n; i++) {
      const tgt = targets[r0 + i];
      out[r0 + i] = tgt < 0 ? NaN : lse[i] - logits.data[i * V + tgt];
    }
  }
  return out;
}

/** Progress of a long model computation. */
export interface ProgressEvent {
  /** What is being done ("blocks", "windows", …). */
  stage: string;
  /** Units done. */
  done: number;
  /** Units in all. */
  total: number;
}

/** Anything with a spec and a reader of canonical tensor names: a loaded model or a compressed one. */
export interface ModelWeights {
  /** Architecture. */
  readonly spec: LlamaSpec;
  /** Tensors under Hugging Face names. */
  readonly reader: TensorReader;
}

/**
 * Run windows (equal lengths) through every block, streaming: embed, then for each layer load the block,
 * forward, drop it. Returns the final residual stream (batch·seq)×hidden, before the final norm.
 *
 * The stream is updated in place. Unobserved blocks share one {@link BlockScratch} (no zero-filled
 * temporaries and no garbage per block: 5–8 % less CPU for 8 windows of tinylm-brown, measured); a block with
 * an observer gets fresh temporaries, so the matrices an observer is shown stay valid after its call.
 */
export async function forwardHidden(
  model: ModelWeights,
  windows: readonly Int32Array[],
  opts: { onBlock?: (layer: number) => void; observe?: (layer: number) => LinearObserver | undefined } = {},
): Promise<Matrix> {
  const { spec, reader } = model;
  const head = await loadHead(reader, spec);
  const layout = { batch: windows.length, seq: windows.length ? windows[0].length : 0 };
  const x = embed(head, spec, windows), ws = new BlockScratch();
  for (let i = 0; i < spec.numLayers; i++) {
    const block = await loadBlock(reader, spec, i), observe = opts.observe?.(i);
    forwardBlockInPlace(spec, block, x, layout, observe, observe ? undefined : ws);
    opts.onBlock?.(i);
  }
  return x;
}
