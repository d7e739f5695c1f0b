/**
 * The interpreter of {@link BLOCK_PROGRAM}: {@link evalBlockOp} gives each op its meaning (one op, given the
 * values it reads), and {@link runBlockProgram} runs a list of ops over a value map, choosing where each
 * result goes — over an input that nothing reads afterwards (RoPE, SwiGLU and the residual adds work in
 * place), into a reusable {@link BlockScratch} buffer, or into a new array. Every forward use of the block
 * (full pass, observed pass, traced pass, pass from a linear on, cached decoding) is one call of
 * `runBlockProgram` with a different op list, set of values to keep, and (for caches) an op override; the
 * placement never changes a value, so all of them agree bit for bit.
 *
 * For other interpreters (the backward pass, an ONNX graph): `evalBlockOp(env, op, values)` with no
 * destination is the reference semantics of an op, returning a new matrix and leaving its inputs alone, so
 *
 * ```ts ignore
 * const values: BlockValues = { x };
 * for (const op of BLOCK_PROGRAM) values[op.out] = evalBlockOp(env, op, values);
 * // values.out equals forwardBlock(spec, block, x, layout) bit for bit, and every intermediate is kept
 * ```
 *
 * and {@link rowPosition}, {@link ropeHeads} and {@link attentionShape} give them the positions, head counts
 * and attention layout the forward ops use.
 *
 * @example
 * ```ts
 * import { BLOCK_PROGRAM } from "./block_def.ts";
 * import { runBlockProgram } from "./block_eval.ts";
 * import type { Linear } from "./block_weights.ts";
 * import { specFromHfConfig } from "./spec.ts";
 * const spec = specFromHfConfig({
 *   model_type: "llama", hidden_size: 4, intermediate_size: 3, num_hidden_layers: 1,
 *   num_attention_heads: 1, vocab_size: 8,
 * });
 * const lin = (rows: number, cols: number): Linear =>
 *   ({ kind: "dense", weight: { rows, cols, data: new Float32Array(rows * cols).fill(0.1) } });
 * const ones = new Float32Array(4).fill(1);
 * const block = {
 *   inputNorm: ones, postNorm: ones, q: lin(4, 4), k: lin(4, 4), v: lin(4, 4), o: lin(4, 4),
 *   gate: lin(3, 4), up: lin(3, 4), down: lin(4, 3),
 * };
 * const x = { rows: 2, cols: 4, data: new Float32Array([1, 2, 3, 4, 4, 3, 2, 1]) }; // 1 window of 2 tokens
 * const env = { spec, block, batch: 1, end: 2 };
 * const { out, att } = runBlockProgram(env, BLOCK_PROGRAM, { x }, { keep: ["out", "att"] });
 * // out: the block's output (2×4); att: the attention output kept beside it
 * ```
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { type AttentionShape, causalAttention } from "../linalg/attention.ts";
import { gemmInto } from "../linalg/gemm.ts";
import type { Matrix } from "../linalg/matrix.ts";
import { siluMulInto } from "../linalg/swiglu.ts";
import { type BlockOp, opInputs, type ValueName, valueWidth } from "./block_def.ts";
import { addBias, BLOCK_FIELD, type Linear, linearOut, type LlamaBlock } from "./block_weights.ts";
import type { LinearName } from "./names.ts";
import { applyRope, cachedRopeTables } from "./rope.ts";
import type { LlamaSpec } from "./spec.ts";

/** What the ops need besides their input values: weights, and where each row sits. */
export interface BlockEnv {
  /** Architecture (widths, heads, RMSNorm ε, RoPE, sliding window). */
  readonly spec: LlamaSpec;
  /** The block's weights. */
  readonly block: LlamaBlock;
  /** Windows stacked in the rows of every value, each window's rows consecutive. */
  readonly batch: number;
  /**
   * One past the last position of each window: a value with n rows per window holds positions end−n … end−1
   * (a full pass: end = seq; cached decoding of n new tokens after `past`: end = past + n, and keys rebuilt
   * for the whole cache have end rows).
   */
  readonly end: number;
}

/** Values of a block program run, by name; each tokens×{@link valueWidth} (row-major). */
export type BlockValues = Partial<Record<ValueName, Matrix>>;

/** Sees the exact input of each linear (tokens×in); q/k/v share one input and are reported once each. */
export type LinearObserver = (linear: LinearName, input: Matrix) => void;

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

/** x·Wᵀ (+ b) into `into` (a low-rank linear's rank-wide middle product in `mid`): the products of applyLinear. */
function linearInto(lin: Linear, x: Matrix, into: Float32Array, mid?: Float32Array): Matrix {
  const y: Matrix = { rows: x.rows, cols: linearOut(lin), data: into };
  if (lin.kind === "dense") gemmInto(x, lin.weight, y, { transB: true });
  else {
    const m: Matrix = { rows: x.rows, cols: lin.b.rows, data: mid ?? new Float32Array(x.rows * lin.b.rows) };
    gemmInto(gemmInto(x, lin.b, m, { transB: true }), lin.a, y, { transB: true });
  }
  if (lin.bias) addBias(y, lin.bias);
  return y;
}

function read(values: BlockValues, name: ValueName, op: BlockOp): Matrix {
  const m = values[name];
  if (!m) throw new ShapeError(`block program: ${op.op} → ${op.out} reads ${name}, which has no value`);
  return m;
}

/** The rows of an op's result: those of its (first) input. */
function resultRows(op: BlockOp, values: BlockValues): number {
  return read(values, op.op === "attention" ? op.q : opInputs(op)[0], op).rows;
}

/**
 * Evaluate one op of the block program on `values` (which must hold its inputs) and return its result,
 * tokens×{@link valueWidth}(op.out).
 *
 * Without `into`, the result is a new matrix and no input is modified: the reference meaning of the op, for
 * any interpreter. With `into` (of the result's length), the result is written there; for `rope`, `swiglu`
 * and `add` it may be one of the op's own input buffers (the op then works in place), for the other ops it
 * must not overlap an input. `mid` holds a low-rank linear's rank-wide middle product (else it is allocated).
 */
export function evalBlockOp(
  env: BlockEnv,
  op: BlockOp,
  values: BlockValues,
  into?: Float32Array,
  mid?: Float32Array,
): Matrix {
  const { spec, block } = env;
  const rows = resultRows(op, values), cols = valueWidth(spec, op.out);
  const out = into ?? new Float32Array(rows * cols);
  if (out.length !== rows * cols) {
    throw new ShapeError(
      `block program: ${op.op} → ${op.out} is ${rows}×${cols}, given ${out.length} floats`,
    );
  }
  switch (op.op) {
    case "rmsnorm":
      return rmsNorm(read(values, op.x, op), block[op.weight], spec.rmsNormEps, out);
    case "linear":
      return linearInto(block[BLOCK_FIELD[op.lin]], read(values, op.x, op), out, mid);
    case "rope": {
      const x = read(values, op.x, op), r: Matrix = { rows, cols, data: out };
      if (out !== x.data) out.set(x.data);
      const tables = cachedRopeTables(env.end, spec.headDim, spec.ropeTheta, spec.ropeScaling);
      applyRope(r, ropeHeads(spec, op), spec.headDim, tables, spec.ropeStyle, rowPosition(env, rows));
      return r;
    }
    case "attention": {
      const q = read(values, op.q, op), k = read(values, op.k, op), b = env.batch;
      return causalAttention(
        attentionShape(spec),
        q,
        k,
        read(values, op.v, op),
        b,
        q.rows / b,
        k.rows / b,
        out,
      );
    }
    case "swiglu":
      siluMulInto(read(values, op.gate, op).data, read(values, op.up, op).data, out);
      return { rows, cols, data: out };
    case "add": {
      const a = read(values, op.a, op).data, b = read(values, op.b, op).data;
      for (let i = 0; i < out.length; i++) out[i] = a[i] + b[i];
      return { rows, cols, data: out };
    }
  }
}

/**
 * The position of each row of a value with `rows` rows in `env`: the rows of a window sit at positions
 * end−n … end−1 (n = rows / batch). What the `rope` op rotates by (and what its backward must rotate back by).
 */
export function rowPosition(env: BlockEnv, rows: number): (row: number) => number {
  const n = rows / env.batch, first = env.end - n;
  return (t) => first + (t % n);
}

/** The heads a `rope` op rotates: the query heads, or the key/value heads. */
export function ropeHeads(spec: LlamaSpec, op: BlockOp & { op: "rope" }): number {
  return op.heads === "q" ? spec.numHeads : spec.numKvHeads;
}

/** The `attention` op's head layout for a spec. */
export function attentionShape(spec: LlamaSpec): AttentionShape {
  return {
    heads: spec.numHeads,
    kvHeads: spec.numKvHeads,
    headDim: spec.headDim,
    slidingWindow: spec.slidingWindow,
  };
}

/** The inputs an op may overwrite with its result (elementwise ops only), in order of preference. */
export function inPlaceCandidates(op: BlockOp): ValueName[] {
  switch (op.op) {
    case "rope":
      return [op.x];
    case "swiglu":
      return [op.gate, op.up];
    case "add":
      return [op.a, op.b];
    default:
      return [];
  }
}

/** For each value an op list reads, the index of the last op reading it: after that op, the value is dead. */
export function lastReads(ops: readonly BlockOp[]): Map<ValueName, number> {
  const last = new Map<ValueName, number>();
  ops.forEach((op, i) => opInputs(op).forEach((v) => last.set(v, i)));
  return last;
}

/** A result supplied by {@link RunOptions.override}: the value, and whether the run may overwrite it. */
export interface OverriddenValue {
  /** The op's result. */
  value: Matrix;
  /** True when the buffer belongs to this run (false for a view of a cache, say). */
  owned: boolean;
}

/** How {@link runBlockProgram} runs. */
export interface RunOptions {
  /** Given values the run may overwrite once nothing reads them (the residual stream of an in-place pass). */
  readonly owned?: Iterable<ValueName>;
  /** Values that must keep their result until the end (default: only `out`). */
  readonly keep?: Iterable<ValueName>;
  /** Called with each linear's input just before the linear runs. */
  readonly observe?: LinearObserver;
  /**
   * Where results go: buffers of this scratch named after the value. Given values must not be buffers of
   * the same scratch (the next batch overwrites them).
   */
  readonly ws?: BlockScratch;
  /** Computes an op differently (cached decoding): a result, or undefined for {@link evalBlockOp}'s. */
  readonly override?: (op: BlockOp, values: BlockValues) => OverriddenValue | undefined;
}

/**
 * Run `ops` (in order; a subsequence of the block program) over `values`, which holds every value they read
 * that no op of the list computes. Each result is written over an input that is owned by the run and read
 * by no later op (nor kept) when the op allows it, else into `ws`, else into a new array. Returns `values`
 * with every result added; a value overwritten in place is removed from it.
 */
export function runBlockProgram(
  env: BlockEnv,
  ops: readonly BlockOp[],
  values: BlockValues,
  opts: RunOptions = {},
): BlockValues {
  const keep = new Set<ValueName>(opts.keep ?? ["out"]), owned = new Set<ValueName>(opts.owned ?? []);
  const lastRead = lastReads(ops), ws = opts.ws;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    if (op.op === "linear") opts.observe?.(op.lin, read(values, op.x, op));
    const given = opts.override?.(op, values);
    if (given) {
      values[op.out] = given.value;
      if (given.owned) owned.add(op.out);
      else owned.delete(op.out);
      continue;
    }
    const over = inPlaceCandidates(op).find((v) => owned.has(v) && !keep.has(v) && lastRead.get(v) === i);
    let into: Float32Array | undefined, mid: Float32Array | undefined;
    if (over) into = values[over]!.data;
    else if (ws) {
      into = ws.matrix(op.out, resultRows(op, values), valueWidth(env.spec, op.out)).data;
      if (op.op === "linear") {
        const lin = env.block[BLOCK_FIELD[op.lin]];
        if (lin.kind === "lowrank") mid = ws.matrix(`${op.out}.mid`, resultRows(op, values), lin.b.rows).data;
      }
    }
    values[op.out] = evalBlockOp(env, op, values, into, mid);
    owned.add(op.out);
    if (over) {
      delete values[over];
      owned.delete(over);
    }
  }
  return values;
}
