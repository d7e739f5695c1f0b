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
 * y = x·Wᵀ everywhere (weights stored out×in), through `matmul(x, w, { transB: true })`.
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { activeBackend, activePool } from "../linalg/backend.ts";
import { gemmInto, matmul } from "../linalg/gemm.ts";
import { type WasmRuntime, wasmRuntime } from "../linalg/wasm/runtime.ts";
import type { Matrix } from "../linalg/matrix.ts";
import type { Job } from "../linalg/threads/pool.ts";
import type { TensorReader } from "../io/tensor_reader.ts";
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
import { applyRope, type RopeTables, ropeTables } from "./rope.ts";
import type { LlamaSpec } from "./spec.ts";

/** A linear layer y = W·x (+ bias), dense or factored as W ≈ A·B. */
export type Linear =
  | { kind: "dense"; weight: Matrix /* out×in */; bias?: Float32Array /* out */ }
  | { kind: "lowrank"; a: Matrix /* out×rank */; b: Matrix /* rank×in */; bias?: Float32Array /* out */ };

/** The weights of one decoder block (d = hidden, f = intermediate, q = heads·headDim, kv = kvHeads·headDim). */
export interface LlamaBlock {
  /** RMSNorm before attention: d. */
  inputNorm: Float32Array;
  /** q×d. */
  q: Linear;
  /** kv×d. */
  k: Linear;
  /** kv×d. */
  v: Linear;
  /** d×q. */
  o: Linear;
  /** RMSNorm before the MLP: d. */
  postNorm: Float32Array;
  /** f×d. */
  gate: Linear;
  /** f×d. */
  up: Linear;
  /** d×f. */
  down: Linear;
}

/** The {@link LlamaBlock} field holding each linear layer. */
export const BLOCK_FIELD: Readonly<Record<LinearName, "q" | "k" | "v" | "o" | "gate" | "up" | "down">> =
  Object
    .freeze({
      "self_attn.q_proj": "q",
      "self_attn.k_proj": "k",
      "self_attn.v_proj": "v",
      "self_attn.o_proj": "o",
      "mlp.gate_proj": "gate",
      "mlp.up_proj": "up",
      "mlp.down_proj": "down",
    });

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

/** Sees the exact input of each linear (tokens×in); q/k/v share one input and are reported once each. */
export type LinearObserver = (linear: LinearName, input: Matrix) => void;

/** y = x·Wᵀ (+ b) for x: tokens×in → tokens×out; a low-rank linear computes (x·Bᵀ)·Aᵀ. */
export function applyLinear(lin: Linear, x: Matrix): Matrix {
  const y = lin.kind === "dense"
    ? matmul(x, lin.weight, { transB: true })
    : matmul(matmul(x, lin.b, { transB: true }), lin.a, { transB: true });
  if (lin.bias) {
    const b = lin.bias, n = y.cols, d = y.data;
    for (let t = 0; t < y.rows; t++) for (let j = 0; j < n; j++) d[t * n + j] += b[j];
  }
  return y;
}

/** Output width of a linear. */
export function linearOut(lin: Linear): number {
  return lin.kind === "dense" ? lin.weight.rows : lin.a.rows;
}

/** Input width of a linear. */
export function linearIn(lin: Linear): number {
  return lin.kind === "dense" ? lin.weight.cols : lin.b.cols;
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
  const d = spec.hiddenSize, f = spec.intermediateSize;
  const q = spec.numHeads * spec.headDim, kv = spec.numKvHeads * spec.headDim;
  const lin = (name: LinearName, out: number, inDim: number, bias = false) =>
    loadLinear(reader, linearPrefix(i, name), out, inDim, bias);
  return {
    inputNorm: await readShaped(reader, inputNormName(i), [d]),
    q: await lin("self_attn.q_proj", q, d, spec.attentionBias),
    k: await lin("self_attn.k_proj", kv, d, spec.attentionBias),
    v: await lin("self_attn.v_proj", kv, d, spec.attentionBias),
    o: await lin("self_attn.o_proj", d, q),
    postNorm: await readShaped(reader, postNormName(i), [d]),
    gate: await lin("mlp.gate_proj", f, d),
    up: await lin("mlp.up_proj", f, d),
    down: await lin("mlp.down_proj", d, f),
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

/** RMSNorm of each row of x (tokens×d) times the weight w (d), into a new matrix (or into `into`, x's size). */
export function rmsNorm(x: Matrix, w: Float32Array, eps: number, into?: Float32Array): Matrix {
  const n = x.cols, out = into ?? new Float32Array(x.data.length), d = x.data;
  for (let t = 0, o = 0; t < x.rows; t++, o += n) {
    let ss = 0;
    for (let j = 0; j < n; j++) {
      const v = d[o + j];
      ss += v * v;
    }
    const s = 1 / Math.sqrt(ss / n + eps);
    for (let j = 0; j < n; j++) out[o + j] = d[o + j] * s * w[j];
  }
  return { rows: x.rows, cols: n, data: out };
}

const ropeCache = new Map<string, RopeTables>();

function ropeFor(spec: LlamaSpec, positions: number): RopeTables {
  const key = `${spec.headDim}/${spec.ropeTheta}/${JSON.stringify(spec.ropeScaling ?? null)}`;
  let t = ropeCache.get(key);
  if (!t || t.positions < positions) {
    t = ropeTables(
      Math.max(positions, spec.maxPositions, 64),
      spec.headDim,
      spec.ropeTheta,
      spec.ropeScaling,
    );
    ropeCache.set(key, t);
  }
  return t;
}

/** Copy head `h` of rows [r0, r0+n) of m (rows×(heads·hd)) into a contiguous n×hd matrix. */
function gatherHead(m: Matrix, r0: number, n: number, h: number, hd: number): Matrix {
  const out = new Float32Array(n * hd);
  for (let t = 0; t < n; t++) {
    out.set(m.data.subarray((r0 + t) * m.cols + h * hd, (r0 + t) * m.cols + (h + 1) * hd), t * hd);
  }
  return { rows: n, cols: hd, data: out };
}

/** SiLU x·σ(x). */
export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** In place: row[off..off+n) ← softmax(scale · row[off..off+n)). Kept small so it optimises. */
function softmaxRow(d: Float32Array, off: number, n: number, scale: number): void {
  let max = -Infinity;
  for (let j = off; j < off + n; j++) if (d[j] > max) max = d[j];
  if (!Number.isFinite(max)) {
    d.fill(NaN, off, off + n); // NaN/Inf scores: let them show in the loss rather than hide
    return;
  }
  let sum = 0;
  for (let j = off; j < off + n; j++) {
    const e = Math.exp((d[j] - max) * scale);
    d[j] = e;
    sum += e;
  }
  const inv = 1 / sum;
  for (let j = off; j < off + n; j++) d[j] *= inv;
}

/** The wasm kernels of `wasm/model.c`, when the wasm backend is active and this build has them. */
function modelKernels(): WasmRuntime | null {
  if (activeBackend() !== "wasm") return null;
  const rt = wasmRuntime();
  return rt && rt.has("sattend") ? rt : null;
}

/** Query rows handled at once: a causal block only multiplies against the keys it can see. */
const QUERY_BLOCK = 64;

/**
 * Causal multi-head attention with GQA. q: (batch·nq)×(H·hd); k, v: (batch·nk)×(KV·hd), where query i of a
 * window sits at position `past + i` and sees keys 0..past+i of its own window (nk = past + nq), or only the
 * last `slidingWindow` of them.
 * Returns (batch·nq)×(H·hd).
 */
function attend(
  spec: LlamaSpec,
  q: Matrix,
  k: Matrix,
  v: Matrix,
  batch: number,
  nq: number,
  nk: number,
  out?: Float32Array,
): Matrix {
  const rt = modelKernels();
  if (rt && spec.headDim % 4 === 0) return attendWasm(rt, spec, q, k, v, batch, nq, nk, out);
  const r = attendTs(spec, q, k, v, batch, nq, nk);
  if (!out) return r;
  out.set(r.data);
  return { rows: r.rows, cols: r.cols, data: out };
}

/** {@link attend} in one fused wasm call (`sattend`): scores and softmax stay in the kernel's scratch. */
function attendWasm(
  rt: WasmRuntime,
  spec: LlamaSpec,
  q: Matrix,
  k: Matrix,
  v: Matrix,
  batch: number,
  nq: number,
  nk: number,
  out?: Float32Array,
): Matrix {
  const H = spec.numHeads, KV = spec.numKvHeads, hd = spec.headDim, len = batch * nq * H * hd;
  const slide = Math.min(spec.slidingWindow ?? nk, nk); // nk: every key of the window is visible
  const data = rt.scoped((s) => {
    const pq = s.putF32(q.data), pk = s.putF32(k.data), pv = s.putF32(v.data), po = s.allocF32(len);
    const workLen: number = rt.fn("sattend_work_size")(nk, hd), scale = 1 / Math.sqrt(hd);
    // Windows are independent: with worker threads, each takes a share of them.
    const pool = activePool(),
      parts = pool && batch * nq * nk * H * hd >= ATTEND_THREAD_WORK ? Math.min(pool.size, batch) : 1;
    const jobs: Job[] = [], step = Math.ceil(batch / parts);
    for (let b0 = 0; b0 < batch; b0 += step) {
      const nb = Math.min(step, batch - b0), qOff = b0 * nq * H * hd * 4, kOff = b0 * nk * KV * hd * 4;
      jobs.push({
        fn: "sattend",
        args: [
          pq + qOff,
          pk + kOff,
          pv + kOff,
          po + qOff,
          nb,
          nq,
          nk,
          H,
          KV,
          hd,
          scale,
          slide,
          s.allocF32(workLen),
        ],
      });
    }
    if (jobs.length === 1 || !pool) { for (const j of jobs) rt.fn(j.fn)(...j.args); }
    else pool.run(jobs);
    if (!out) return rt.getF32(po, len);
    out.set(rt.f32(po, len));
    return out;
  });
  return { rows: batch * nq, cols: H * hd, data };
}

/** Attention work (query·key·width products) above which worker threads share the windows. */
const ATTEND_THREAD_WORK = 1 << 22;

/** {@link attend} in TypeScript: per query block, scores by GEMM, softmax, values by GEMM. */
function attendTs(
  spec: LlamaSpec,
  q: Matrix,
  k: Matrix,
  v: Matrix,
  batch: number,
  nq: number,
  nk: number,
): Matrix {
  const H = spec.numHeads, hd = spec.headDim, group = H / spec.numKvHeads, past = nk - nq;
  const scale = 1 / Math.sqrt(hd), slide = spec.slidingWindow ?? Infinity;
  const out = new Float32Array(batch * nq * H * hd);
  for (let b = 0; b < batch; b++) {
    for (let kh = 0; kh < spec.numKvHeads; kh++) {
      const kb = gatherHead(k, b * nk, nk, kh, hd); // nk×hd
      const vb = gatherHead(v, b * nk, nk, kh, hd); // nk×hd
      for (let h = kh * group; h < (kh + 1) * group; h++) {
        const qb = gatherHead(q, b * nq, nq, h, hd); // nq×hd
        for (let i0 = 0; i0 < nq; i0 += QUERY_BLOCK) {
          const rows = Math.min(QUERY_BLOCK, nq - i0), keys = past + i0 + rows; // keys 0..keys-1 visible
          const qs = { rows, cols: hd, data: qb.data.subarray(i0 * hd, (i0 + rows) * hd) };
          const ks = { rows: keys, cols: hd, data: kb.data.subarray(0, keys * hd) };
          const s = matmul(qs, ks, { transB: true }); // rows×keys scores
          const sd = s.data;
          for (let i = 0; i < rows; i++) {
            const pos = past + i0 + i, first = Math.max(0, pos - slide + 1); // keys first..pos are visible
            sd.fill(0, i * keys, i * keys + first); // outside a sliding window
            softmaxRow(sd, i * keys + first, pos - first + 1, scale);
            sd.fill(0, i * keys + pos + 1, (i + 1) * keys); // causal mask
          }
          const o = matmul(s, { rows: keys, cols: hd, data: vb.data.subarray(0, keys * hd) }); // rows×hd
          for (let i = 0; i < rows; i++) {
            out.set(o.data.subarray(i * hd, (i + 1) * hd), (b * nq + i0 + i) * H * hd + h * hd);
          }
        }
      }
    }
  }
  return { rows: batch * nq, cols: H * hd, data: out };
}

/** x += y, in place (both tokens×d). */
function addInto(x: Matrix, y: Matrix): void {
  const a = x.data, b = y.data;
  for (let i = 0; i < a.length; i++) a[i] += b[i];
}

/** g ← silu(g) ⊙ u in place: the wasm kernel (vectorised exp) when present, else Math.exp. */
function siluMulInto(g: Float32Array, u: Float32Array): void {
  const rt = modelKernels();
  if (!rt) {
    for (let i = 0; i < g.length; i++) g[i] = silu(g[i]) * u[i];
    return;
  }
  rt.scoped((s) => {
    const pg = s.putF32(g), pu = s.putF32(u);
    rt.fn("ssilu_mul")(pg, pu, g.length);
    g.set(rt.f32(pg, g.length));
  });
}

/**
 * The MLP half of a block: x += down(silu(gate(n)) ⊙ up(n)), n = RMSNorm(x). With `observeOnly`, stop once
 * down's input has been observed (x is then left as it was). With `ws`, temporaries live in its buffers.
 */
function mlp(
  spec: LlamaSpec,
  block: LlamaBlock,
  x: Matrix,
  observe?: LinearObserver,
  observeOnly = false,
  ws?: BlockScratch,
): void {
  const n = rmsNorm(x, block.postNorm, spec.rmsNormEps, ws?.matrix("n2", x.rows, x.cols).data); // tokens×d
  observe?.("mlp.gate_proj", n);
  observe?.("mlp.up_proj", n);
  const g = linearInto(block.gate, n, ws, "gate"), u = linearInto(block.up, n, ws, "up"); // tokens×f
  siluMulInto(g.data, u.data);
  observe?.("mlp.down_proj", g);
  if (!observeOnly) addInto(x, linearInto(block.down, g, ws, "down"));
}

/**
 * Reusable buffers for the temporaries of a block pass (norms, projections, attention output, MLP
 * activations). A pipeline running a block batch after batch passes one scratch to every batch, so that
 * the passes allocate nothing per batch: otherwise each batch leaves tens of MB of dead typed arrays that
 * only a (costly) collection returns. A matrix handed to an observer through a scratch is valid during the
 * observer call only: the next batch overwrites it.
 */
export class BlockScratch {
  #bufs = new Map<string, Float32Array>();

  /** Bytes held by the buffers. */
  get bytes(): number {
    let n = 0;
    for (const b of this.#bufs.values()) n += b.byteLength;
    return n;
  }

  /** A rows×cols matrix over buffer `name`, grown when too small; its prior values are unspecified. */
  matrix(name: string, rows: number, cols: number): Matrix {
    const len = rows * cols;
    let b = this.#bufs.get(name);
    if (!b || b.length < len) this.#bufs.set(name, b = new Float32Array(len));
    return { rows, cols, data: b.length === len ? b : b.subarray(0, len) };
  }
}

/** {@link applyLinear} into the scratch buffer `name` (a new matrix without a scratch): the same products. */
function linearInto(lin: Linear, x: Matrix, ws: BlockScratch | undefined, name: string): Matrix {
  if (!ws) return applyLinear(lin, x);
  const y = ws.matrix(name, x.rows, linearOut(lin));
  if (lin.kind === "dense") gemmInto(x, lin.weight, y, { transB: true });
  else {
    const mid = gemmInto(x, lin.b, ws.matrix(`${name}.mid`, x.rows, lin.b.rows), { transB: true });
    gemmInto(mid, lin.a, y, { transB: true });
  }
  if (lin.bias) {
    const b = lin.bias, n = y.cols, d = y.data;
    for (let t = 0; t < y.rows; t++) for (let j = 0; j < n; j++) d[t * n + j] += b[j];
  }
  return y;
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
  const h: Matrix = { rows: x.rows, cols: x.cols, data: x.data.slice() }; // residual stream copy
  blockPass(spec, block, h, layout, observe, false);
  return h;
}

/**
 * Show `observe` every linear's input exactly as {@link forwardBlock} would, without computing the block's
 * output: the last product (down_proj) and the residual add are skipped, a quarter of the block's work.
 * With `ws`, temporaries live in its buffers (see {@link BlockScratch}).
 */
export function observeBlock(
  spec: LlamaSpec,
  block: LlamaBlock,
  x: Matrix,
  layout: Layout,
  observe: LinearObserver,
  ws?: BlockScratch,
): void {
  const h: Matrix = ws
    ? ws.matrix("h", x.rows, x.cols)
    : { rows: x.rows, cols: x.cols, data: x.data.slice() };
  if (ws) h.data.set(x.data); // the attention half's residual add must not touch x
  blockPass(spec, block, h, layout, observe, true, ws);
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
  blockPass(spec, block, x, layout, observe, false, ws);
}

/** One block over the residual stream h, in place (h is the block's input and becomes its output). */
function blockPass(
  spec: LlamaSpec,
  block: LlamaBlock,
  h: Matrix,
  layout: Layout,
  observe: LinearObserver | undefined,
  observeOnly: boolean,
  ws?: BlockScratch,
): void {
  const { batch, seq } = layout;
  if (h.rows !== batch * seq || h.cols !== spec.hiddenSize) {
    throw new ShapeError(
      `forwardBlock: x is ${h.rows}×${h.cols}, layout needs ${batch * seq}×${spec.hiddenSize}`,
    );
  }
  const n = rmsNorm(h, block.inputNorm, spec.rmsNormEps, ws?.matrix("n1", h.rows, h.cols).data); // tokens×d
  observe?.("self_attn.q_proj", n);
  observe?.("self_attn.k_proj", n);
  observe?.("self_attn.v_proj", n);
  const q = linearInto(block.q, n, ws, "q"); // tokens×(H·hd)
  const k = linearInto(block.k, n, ws, "k"); // tokens×(KV·hd)
  const v = linearInto(block.v, n, ws, "v"); // tokens×(KV·hd)
  const tables = ropeFor(spec, seq);
  applyRope(q, spec.numHeads, spec.headDim, tables, spec.ropeStyle, (t) => t % seq);
  applyRope(k, spec.numKvHeads, spec.headDim, tables, spec.ropeStyle, (t) => t % seq);
  const attOut = ws?.matrix("att", h.rows, spec.numHeads * spec.headDim).data;
  const att = attend(spec, q, k, v, batch, seq, seq, attOut); // tokens×(H·hd)
  observe?.("self_attn.o_proj", att);
  addInto(h, linearInto(block.o, att, ws, "o"));
  mlp(spec, block, h, observe, observeOnly, ws);
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

function checkLayout(what: string, spec: LlamaSpec, x: Matrix, { batch, seq }: Layout): void {
  if (x.rows !== batch * seq || x.cols !== spec.hiddenSize) {
    throw new ShapeError(`${what}: x is ${x.rows}×${x.cols}, layout needs ${batch * seq}×${spec.hiddenSize}`);
  }
}

/** q or k of n1, rotated for positions (row mod seq). */
function rotated(spec: LlamaSpec, lin: Linear, n1: Matrix, heads: number, seq: number): Matrix {
  const m = applyLinear(lin, n1);
  applyRope(m, heads, spec.headDim, ropeFor(spec, seq), spec.ropeStyle, (t) => t % seq);
  return m;
}

/** x + down(silu(g) ⊙ u) for mid = x; returns [act, out]. `g` is consumed (overwritten). */
function mlpTail(block: LlamaBlock, mid: Matrix, g: Matrix, u: Matrix): [Matrix, Matrix] {
  siluMulInto(g.data, u.data);
  const out: Matrix = { rows: mid.rows, cols: mid.cols, data: mid.data.slice() };
  addInto(out, applyLinear(block.down, g));
  return [g, out];
}

/**
 * {@link forwardBlock} keeping every intermediate: the same operations in the same order, so `trace.out`
 * equals forwardBlock's output exactly.
 */
export function traceBlock(spec: LlamaSpec, block: LlamaBlock, x: Matrix, layout: Layout): BlockTrace {
  checkLayout("traceBlock", spec, x, layout);
  const seq = layout.seq;
  const n1 = rmsNorm(x, block.inputNorm, spec.rmsNormEps);
  const q = rotated(spec, block.q, n1, spec.numHeads, seq);
  const k = rotated(spec, block.k, n1, spec.numKvHeads, seq);
  const v = applyLinear(block.v, n1);
  const att = attend(spec, q, k, v, layout.batch, seq, seq);
  const mid: Matrix = { rows: x.rows, cols: x.cols, data: x.data.slice() };
  addInto(mid, applyLinear(block.o, att));
  const n2 = rmsNorm(mid, block.postNorm, spec.rmsNormEps);
  const g = applyLinear(block.gate, n2), u = applyLinear(block.up, n2);
  const [act, out] = mlpTail(block, mid, { rows: g.rows, cols: g.cols, data: g.data.slice() }, u);
  return { n1, q, k, v, att, mid, n2, g, u, act, out };
}

/**
 * The output of `block` on x when everything upstream of linear `from` is as in `trace` (a {@link traceBlock}
 * of a block that differs from this one in `from` alone): only `from` and what follows it are computed.
 * With the traced block itself, the result equals `trace.out`.
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
  const seq = layout.seq,
    copy = (m: Matrix): Matrix => ({ rows: m.rows, cols: m.cols, data: m.data.slice() });
  if (from === "mlp.down_proj") {
    const out = copy(trace.mid);
    addInto(out, applyLinear(block.down, trace.act));
    return out;
  }
  if (from === "mlp.gate_proj" || from === "mlp.up_proj") {
    const g = from === "mlp.gate_proj" ? applyLinear(block.gate, trace.n2) : copy(trace.g);
    const u = from === "mlp.up_proj" ? applyLinear(block.up, trace.n2) : trace.u;
    return mlpTail(block, trace.mid, g, u)[1];
  }
  let att = trace.att;
  if (from !== "self_attn.o_proj") {
    const q = from === "self_attn.q_proj" ? rotated(spec, block.q, trace.n1, spec.numHeads, seq) : trace.q;
    const k = from === "self_attn.k_proj" ? rotated(spec, block.k, trace.n1, spec.numKvHeads, seq) : trace.k;
    const v = from === "self_attn.v_proj" ? applyLinear(block.v, trace.n1) : trace.v;
    att = attend(spec, q, k, v, layout.batch, seq, seq);
  }
  const mid = copy(x);
  addInto(mid, applyLinear(block.o, att));
  mlp(spec, block, mid);
  return mid;
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
 */
export function forwardBlockCached(spec: LlamaSpec, block: LlamaBlock, x: Matrix, cache: LayerCache): Matrix {
  const nq = x.rows, past = cache.length, kv = spec.numKvHeads * spec.headDim;
  if (past + nq > cache.capacity) {
    throw new ShapeError(`forwardBlockCached: cache holds ${cache.capacity} positions`);
  }
  const h: Matrix = { rows: x.rows, cols: x.cols, data: x.data.slice() };
  const n = rmsNorm(h, block.inputNorm, spec.rmsNormEps);
  const q = applyLinear(block.q, n); // nq×(H·hd)
  const tables = ropeFor(spec, past + nq);
  applyRope(q, spec.numHeads, spec.headDim, tables, spec.ropeStyle, (t) => past + t);
  const nk = past + nq;
  let kAll: Matrix, vAll: Matrix; // nk×kv each
  if (cache.mode === "full") {
    const k = applyLinear(block.k, n), v = applyLinear(block.v, n);
    applyRope(k, spec.numKvHeads, spec.headDim, tables, spec.ropeStyle, (t) => past + t);
    cache.k.set(k.data, past * kv);
    cache.v.set(v.data, past * kv);
    kAll = { rows: nk, cols: kv, data: cache.k.subarray(0, nk * kv) };
    vAll = { rows: nk, cols: kv, data: cache.v.subarray(0, nk * kv) };
  } else {
    const kw = cache.kWidth, vw = cache.vWidth;
    cache.k.set(latentOf(block.k, n).data, past * kw);
    cache.v.set(latentOf(block.v, n).data, past * vw);
    kAll = fromLatent(block.k, { rows: nk, cols: kw, data: cache.k.subarray(0, nk * kw) });
    if (kAll.data.buffer === cache.k.buffer) kAll = { rows: nk, cols: kv, data: kAll.data.slice() }; // rotate a copy
    applyRope(kAll, spec.numKvHeads, spec.headDim, tables, spec.ropeStyle, (t) => t); // after the rebuild
    vAll = fromLatent(block.v, { rows: nk, cols: vw, data: cache.v.subarray(0, nk * vw) });
  }
  cache.length = nk;
  const att = attend(spec, q, kAll, vAll, 1, nq, nk);
  addInto(h, applyLinear(block.o, att));
  mlp(spec, block, h);
  return h;
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

/** log Σ exp of each row of a (rows×n): the wasm kernel (vectorised exp, float64 sums) or {@link logSumExp}. */
function rowsLogSumExp(a: Float32Array, rows: number, n: number): Float64Array {
  const out = new Float64Array(rows), rt = modelKernels();
  if (!rt) {
    for (let i = 0; i < rows; i++) out[i] = logSumExp(a, i * n, n);
    return out;
  }
  const stats = rt.scoped((s) => {
    const pa = s.putF32(a.subarray(0, rows * n)), ps = s.allocF64(2 * rows);
    rt.fn("slogsumexp_rows")(pa, rows, n, ps);
    return rt.getF64(ps, 2 * rows);
  });
  for (let i = 0; i < rows; i++) {
    const max = stats[2 * i];
    out[i] = Number.isFinite(max) ? max + Math.log(stats[2 * i + 1]) : max === -Infinity ? -Infinity : NaN;
  }
  return out;
}

/** log Σ exp(a[off..off+n)) in float64, stable. */
export function logSumExp(a: Float32Array, off: number, n: number): number {
  let max = -Infinity;
  for (let j = 0; j < n; j++) if (a[off + j] > max) max = a[off + j];
  if (!Number.isFinite(max)) return max === -Infinity ? -Infinity : NaN;
  let s = 0;
  for (let j = 0; j < n; j++) s += Math.exp(a[off + j] - max);
  return max + Math.log(s);
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
 */
export async function forwardHidden(
  model: ModelWeights,
  windows: readonly Int32Array[],
  opts: { onBlock?: (layer: number) => void; observe?: (layer: number) => LinearObserver | undefined } = {},
): Promise<Matrix> {
  const { spec, reader } = model;
  const head = await loadHead(reader, spec);
  const layout = { batch: windows.length, seq: windows.length ? windows[0].length : 0 };
  let x = embed(head, spec, windows);
  for (let i = 0; i < spec.numLayers; i++) {
    const block = await loadBlock(reader, spec, i);
    x = forwardBlock(spec, block, x, layout, opts.observe?.(i));
    opts.onBlock?.(i);
  }
  return x;
}
