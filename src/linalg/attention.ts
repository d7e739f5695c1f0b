/**
 * Fused causal multi-head attention with grouped key/value heads (GQA) and an optional sliding window, over
 * windows stacked in the rows: the wasm `sattend` kernel (scores and softmax stay in its scratch), split over
 * the worker threads by window when the work is large, or a TypeScript path (per query block: scores by GEMM,
 * softmax, values by GEMM).
 *
 * Query i of a window sits at position `past + i` (past = nk − nq) and sees keys 0..past+i of its own window,
 * or only the last `slidingWindow` of them.
 *
 * @example
 * ```ts
 * import { causalAttention } from "./attention.ts";
 * const one = { rows: 1, cols: 2, data: new Float32Array([1, 2]) };
 * // one head of width 2, one window of one token: the output is v itself
 * causalAttention({ heads: 1, kvHeads: 1, headDim: 2 }, one, one, one, 1, 1, 1).data; // [1, 2]
 * ```
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { activePool } from "./backend.ts";
import { matmul } from "./gemm.ts";
import type { Matrix } from "./matrix.ts";
import { modelKernels } from "./model_kernels.ts";
import type { Job } from "./threads/pool.ts";
import type { WasmRuntime, WasmScope } from "./wasm/runtime.ts";

/** The head layout of an attention: q has heads·headDim columns, k and v kvHeads·headDim. */
export interface AttentionShape {
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads (divides heads: each serves heads/kvHeads query heads). */
  readonly kvHeads: number;
  /** Width of one head. */
  readonly headDim: number;
  /** Keys visible to a query: only the last `slidingWindow` positions up to its own (default: all). */
  readonly slidingWindow?: number;
}

/** Query rows handled at once by the TypeScript path: a causal block only multiplies against the keys it sees. */
const QUERY_BLOCK = 64;

/** Attention work (query·key·width products) above which worker threads share the windows. */
const ATTEND_THREAD_WORK = 1 << 22;

/**
 * One attention's operands: `batch` windows stacked in the rows, q (batch·nq)×(heads·headDim), k and v
 * (batch·nk)×(kvHeads·headDim).
 */
interface Operands {
  readonly shape: AttentionShape;
  readonly q: Matrix;
  readonly k: Matrix;
  readonly v: Matrix;
  /** Windows. */
  readonly batch: number;
  /** Queries per window (its last nq positions). */
  readonly nq: number;
  /** Keys per window. */
  readonly nk: number;
}

/**
 * Causal attention softmax(q·kᵀ/√headDim)·v per head, windows independent. q: (batch·nq)×(heads·headDim);
 * k, v: (batch·nk)×(kvHeads·headDim), nk ≥ nq. Returns (batch·nq)×(heads·headDim), into `out` when given
 * (that length; it must not alias q, k or v).
 */
export function causalAttention(
  shape: AttentionShape,
  q: Matrix,
  k: Matrix,
  v: Matrix,
  batch: number,
  nq: number,
  nk: number,
  out?: Float32Array,
): Matrix {
  const { heads: H, kvHeads: KV, headDim: hd } = shape;
  if (
    H % KV !== 0 || nk < nq || q.rows !== batch * nq || q.cols !== H * hd || k.rows !== batch * nk ||
    k.cols !== KV * hd || v.rows !== k.rows || v.cols !== k.cols || (out && out.length !== q.rows * q.cols)
  ) {
    throw new ShapeError(
      `attention: q ${q.rows}×${q.cols}, k ${k.rows}×${k.cols}, v ${v.rows}×${v.cols}${
        out ? `, out ${out.length}` : ""
      } do not fit ${batch} window(s) of ${nq} queries over ${nk} keys, ${H} heads (${KV} key/value) of ${hd}`,
    );
  }
  const data = out ?? new Float32Array(q.rows * q.cols);
  const rt = modelKernels(), ops: Operands = { shape, q, k, v, batch, nq, nk };
  if (rt && hd % 4 === 0) attendWasm(rt, ops, data);
  else attendTs(ops, data);
  return { rows: q.rows, cols: q.cols, data };
}

/** {@link causalAttention} into `out` in one fused wasm call per share of the windows (`sattend`). */
function attendWasm(rt: WasmRuntime, { shape, q, k, v, batch, nq, nk }: Operands, out: Float32Array): void {
  rt.scoped((s) => {
    const pq = s.putF32(q.data), pk = s.putF32(k.data), pv = s.putF32(v.data), po = s.allocF32(out.length);
    causalAttentionAt(rt, s, shape, pq, pk, pv, po, batch, nq, nk);
    out.set(rt.f32(po, out.length));
  });
}

/**
 * {@link causalAttention} on operands already in wasm memory (byte offsets of q, k, v and the output, laid
 * out as there), with the kernel's scratch from `scope`: the wasm kernel split over the worker threads by
 * window when the work is large. Needs a runtime with the model kernels and headDim divisible by 4; shapes
 * are the caller's to check.
 */
export function causalAttentionAt(
  rt: WasmRuntime,
  scope: WasmScope,
  shape: AttentionShape,
  pq: number,
  pk: number,
  pv: number,
  po: number,
  batch: number,
  nq: number,
  nk: number,
): void {
  const { heads: H, kvHeads: KV, headDim: hd } = shape;
  const slide = Math.min(shape.slidingWindow ?? nk, nk); // nk: every key of the window is visible
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
        scope.allocF32(workLen),
      ],
    });
  }
  if (jobs.length === 1 || !pool) { for (const j of jobs) rt.fn(j.fn)(...j.args); }
  else pool.run(jobs);
}

/** Copy head `h` of rows [r0, r0+n) of m (rows×(heads·hd)) into a contiguous n×hd matrix. */
function gatherHead(m: Matrix, r0: number, n: number, h: number, hd: number): Matrix {
  const out = new Float32Array(n * hd);
  for (let t = 0; t < n; t++) {
    out.set(m.data.subarray((r0 + t) * m.cols + h * hd, (r0 + t) * m.cols + (h + 1) * hd), t * hd);
  }
  return { rows: n, cols: hd, data: out };
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

/** {@link causalAttention} into `out` in TypeScript: per query block, scores by GEMM, softmax, values by GEMM. */
function attendTs({ shape, q, k, v, batch, nq, nk }: Operands, out: Float32Array): void {
  const { heads: H, kvHeads: KV, headDim: hd } = shape, group = H / KV, past = nk - nq;
  const scale = 1 / Math.sqrt(hd), slide = shape.slidingWindow ?? Infinity;
  for (let b = 0; b < batch; b++) {
    for (let kh = 0; kh < KV; kh++) {
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
}
