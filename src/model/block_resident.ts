/**
 * The block program run with every value in wasm memory: the input is copied in once and the output out
 * once, and the kernels (products, attention, SwiGLU) work on offsets, where {@link runBlockProgram} copies
 * each product's and kernel's operands in and their results out (about 3 GB for 64 windows of 256 tokens
 * through tinylm-brown). The same kernels with the same splits over the threads and the same TypeScript for
 * RMSNorm, RoPE and the adds: the results are bit for bit those of `runBlockProgram`.
 *
 * Usable when the wasm model kernels are active, the head width is a multiple of 4 (the fused attention's
 * condition) and every product is large enough for the wasm GEMM ({@link residentPossible}); otherwise the
 * caller runs `runBlockProgram`.
 *
 * @example
 * ```ts ignore
 * if (residentPossible(env, x.rows)) runResident(env, BLOCK_PROGRAM, x, { keep: ["out"], ws });
 * ```
 *
 * @module
 */
import { causalAttentionAt } from "../linalg/attention.ts";
import { SMALL_WORK } from "../linalg/gemm.ts";
import type { Matrix } from "../linalg/matrix.ts";
import { modelKernels } from "../linalg/model_kernels.ts";
import { activePool } from "../linalg/backend.ts";
import { gemmWasmAt } from "../linalg/wasm/gemm_wasm.ts";
import type { WasmRuntime, WasmScope } from "../linalg/wasm/runtime.ts";
import { type BlockOp, opInputs, type ValueName, valueWidth } from "./block_def.ts";
import {
  attentionShape,
  type BlockEnv,
  type BlockScratch,
  inPlaceCandidates,
  lastReads,
  type LinearObserver,
  rmsNorm,
  ropeHeads,
  rowPosition,
} from "./block_eval.ts";
import { addBias, BLOCK_FIELD, type Linear } from "./block_weights.ts";
import { applyRope, cachedRopeTables } from "./rope.ts";

/** Whether {@link runResident} can run this block over `rows` rows (else use runBlockProgram). */
export function residentPossible(env: BlockEnv, rows: number): boolean {
  if (!modelKernels() || env.spec.headDim % 4 !== 0) return false;
  // gemmInto takes its TypeScript path below SMALL_WORK multiply-adds: the resident run must not differ
  const big = (m: number, n: number, k: number) => m * n * k >= SMALL_WORK;
  return Object.values(BLOCK_FIELD).every((f) => {
    const l = env.block[f];
    return l.kind === "dense"
      ? big(rows, l.weight.rows, l.weight.cols)
      : big(rows, l.b.rows, l.b.cols) && big(rows, l.a.rows, l.a.cols);
  });
}

/** How {@link runResident} runs. */
export interface ResidentOptions {
  /** Values copied out at the end (into `ws` buffers named `resident.<value>`, or new arrays); `out` goes into x. */
  readonly keep: readonly ValueName[];
  /** Called with each linear's input (a copy in the JavaScript heap, valid during the call) before it runs. */
  readonly observe?: LinearObserver;
  /** Holds the observers' copies and the kept values between batches. */
  readonly ws?: BlockScratch;
}

/**
 * Run `ops` (a subsequence of the block program reading only `x` from outside) with all values in wasm
 * memory. x is the input; when `out` is kept, x receives it. Returns the kept values other than `out`.
 */
export function runResident(
  env: BlockEnv,
  ops: readonly BlockOp[],
  x: Matrix,
  opts: ResidentOptions,
): Partial<Record<ValueName, Matrix>> {
  const rt = modelKernels()!, keep = new Set(opts.keep), rows = x.rows;
  const lastRead = lastReads(ops);
  const taken = new Set<number>(),
    alloc = (floats: number) => {
      const p = rt.alloc(floats * 4);
      taken.add(p);
      return p;
    };
  const release = (p: number) => (taken.delete(p), rt.free(p));
  try {
    const at = new Map<ValueName, number>([["x", alloc(x.data.length)]]); // x's copy here is ours to overwrite
    const view = (v: ValueName) => rt.f32(at.get(v)!, rows * valueWidth(env.spec, v)); // fresh: memory may grow
    const mat = (v: ValueName): Matrix => ({ rows, cols: valueWidth(env.spec, v), data: view(v) });
    view("x").set(x.data);
    const shown = new Set<ValueName>();
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i];
      if (op.op === "linear" && opts.observe) opts.observe(op.lin, observed(opts.ws, mat(op.x), op.x, shown));
      // results over an input nothing reads later, as runBlockProgram places them (x is owned here)
      const dead = (v: ValueName) => !keep.has(v) && lastRead.get(v) === i;
      // (ssilu_mul writes into its gate operand: SwiGLU goes over the gate or nowhere)
      const over = inPlaceCandidates(op).filter((v) => !(op.op === "swiglu" && v === op.up));
      const reuse = over.find(dead);
      const po = reuse !== undefined ? at.get(reuse)! : alloc(rows * valueWidth(env.spec, op.out));
      if (reuse !== undefined) at.delete(reuse);
      at.set(op.out, po);
      rt.scoped((s) => execOp(rt, s, env, op, at, rows, mat)); // weights and kernel scratch: this op only
      for (const v of opInputs(op)) { // inputs nothing reads any more: freed now, so the peak is the live set
        if (v !== reuse && dead(v) && at.has(v)) release(at.get(v)!), at.delete(v);
      }
    }
    const kept: Partial<Record<ValueName, Matrix>> = {};
    for (const v of keep) {
      if (!at.has(v)) continue;
      if (v === "out") x.data.set(view(v));
      else {
        const m = mat(v), into = opts.ws?.matrix(`resident.${v}`, m.rows, m.cols);
        kept[v] = into ? (into.data.set(m.data), into) : { ...m, data: m.data.slice() };
      }
    }
    return kept;
  } finally {
    for (const p of taken) rt.free(p);
  }
}

/** A JavaScript-heap copy of a linear's input for the observer (one per value and run). */
function observed(ws: BlockScratch | undefined, m: Matrix, v: ValueName, shown: Set<ValueName>): Matrix {
  const into = ws
    ? ws.matrix(`observed.${v}`, m.rows, m.cols)
    : { ...m, data: new Float32Array(m.data.length) };
  if (!shown.has(v) || !ws) into.data.set(m.data);
  shown.add(v);
  return into;
}

/** y = x·Wᵀ (+ b) on offsets: the product gemmInto runs, without its copies. */
function linearAt(
  rt: WasmRuntime,
  s: WasmScope,
  lin: Linear,
  px: number,
  py: number,
  rows: number,
  k: number,
): void {
  const gemm = (a: number, b: number, c: number, n: number, kk: number) =>
    gemmWasmAt(
      rt,
      s,
      false,
      { transA: false, transB: true, m: rows, n, k: kk, alpha: 1, beta: 0, a, b, c },
      activePool(),
    );
  if (lin.kind === "dense") gemm(px, s.putF32(lin.weight.data), py, lin.weight.rows, k);
  else {
    const mid = s.allocF32(rows * lin.b.rows);
    gemm(px, s.putF32(lin.b.data), mid, lin.b.rows, k);
    gemm(mid, s.putF32(lin.a.data), py, lin.a.rows, lin.b.rows);
  }
}

function execOp(
  rt: WasmRuntime,
  s: WasmScope,
  env: BlockEnv,
  op: BlockOp,
  at: Map<ValueName, number>,
  rows: number,
  mat: (v: ValueName) => Matrix,
): void {
  const { spec, block } = env;
  switch (op.op) {
    case "rmsnorm":
      rmsNorm(mat(op.x), block[op.weight], spec.rmsNormEps, mat(op.out).data);
      return;
    case "linear": {
      const lin = block[BLOCK_FIELD[op.lin]];
      linearAt(rt, s, lin, at.get(op.x)!, at.get(op.out)!, rows, valueWidth(spec, op.x));
      if (lin.bias) addBias(mat(op.out), lin.bias);
      return;
    }
    case "rope": {
      const out = mat(op.out);
      if (at.has(op.x)) out.data.set(mat(op.x).data);
      const tables = cachedRopeTables(env.end, spec.headDim, spec.ropeTheta, spec.ropeScaling);
      applyRope(out, ropeHeads(spec, op), spec.headDim, tables, spec.ropeStyle, rowPosition(env, rows));
      return;
    }
    case "attention": {
      const b = env.batch, nq = rows / b, nk = rows / b;
      const [pq, pk, pv, po] = [op.q, op.k, op.v, op.out].map((v) => at.get(v)!);
      causalAttentionAt(rt, s, attentionShape(spec), pq, pk, pv, po, b, nq, nk);
      return;
    }
    case "swiglu": {
      const po = at.get(op.out)!, n = rows * valueWidth(spec, op.out);
      if (at.has(op.gate)) mat(op.out).data.set(mat(op.gate).data); // not in place: start from a copy of g
      rt.fn("ssilu_mul")(po, at.get(op.up)!, n);
      return;
    }
    case "add": {
      const o = mat(op.out).data;
      const a = at.has(op.a) ? mat(op.a).data : o, b = at.has(op.b) ? mat(op.b).data : o;
      for (let i = 0; i < o.length; i++) o[i] = a[i] + b[i];
      return;
    }
  }
}
