/**
 * The LLaMA decoder block, written once, as data: a straight-line program of a few tensor operations over named
 * values. Every use of the block is an interpreter of this one list — the forward pass (full, traced, from a
 * given linear on, cached decode), the backward pass, and the ONNX graph — so a change to the block is made
 * here and nowhere else.
 *
 * Values are tokens×width matrices named by strings; `x` is the block's input (the residual stream,
 * tokens×d) and `out` its output. Shapes (d = hidden, f = intermediate, q = heads·headDim,
 * kv = kvHeads·headDim):
 *
 * ```
 * n1  = rmsnorm(x, inputNorm)         tokens×d
 * q   = rope(linear_q(n1), heads)     tokens×q      (bias when the spec has attention biases)
 * k   = rope(linear_k(n1), kvHeads)   tokens×kv
 * v   = linear_v(n1)                  tokens×kv
 * att = attention(q, k, v)            tokens×q      (causal, GQA, optional sliding window)
 * mid = x + linear_o(att)             tokens×d
 * n2  = rmsnorm(mid, postNorm)        tokens×d
 * act = silu(linear_gate(n2)) ⊙ linear_up(n2)   tokens×f
 * out = mid + linear_down(act)        tokens×d
 * ```
 *
 * @example
 * ```ts
 * import { BLOCK_PROGRAM, opsAffectedBy, opsNeededFor } from "./block_def.ts";
 * BLOCK_PROGRAM.filter((op) => op.op === "linear").length; // 7
 * opsAffectedBy("mlp.down_proj").map((op) => op.out); // ["dOut", "out"]
 * opsNeededFor(["act"]).length; // 13: everything but down_proj and the last add
 * ```
 *
 * @module
 */
import type { LinearName } from "./names.ts";
import type { LlamaSpec } from "./spec.ts";

/** A value of the block program: the input `x`, the output `out`, or an intermediate. */
export type ValueName =
  | "x"
  | "n1"
  | "qLin"
  | "q"
  | "kLin"
  | "k"
  | "v"
  | "att"
  | "oOut"
  | "mid"
  | "n2"
  | "g"
  | "u"
  | "act"
  | "dOut"
  | "out";

/** One operation of the block program. */
export type BlockOp =
  /** out = RMSNorm(x) ⊙ weight, the weight being the block's `inputNorm` or `postNorm` (d). */
  | { op: "rmsnorm"; x: ValueName; weight: "inputNorm" | "postNorm"; out: ValueName }
  /** out = x·Wᵀ (+ bias), W the block's linear `lin` (dense, or low-rank A·B). */
  | { op: "linear"; lin: LinearName; x: ValueName; out: ValueName }
  /** out = x rotated by RoPE at each row's position, over `heads` heads of headDim (q: numHeads, kv: numKvHeads). */
  | { op: "rope"; x: ValueName; heads: "q" | "kv"; out: ValueName }
  /** out = causal GQA attention softmax(q·kᵀ/√hd)·v, windows independent. */
  | { op: "attention"; q: ValueName; k: ValueName; v: ValueName; out: ValueName }
  /** out = silu(gate) ⊙ up. */
  | { op: "swiglu"; gate: ValueName; up: ValueName; out: ValueName }
  /** out = a + b (the residual adds). */
  | { op: "add"; a: ValueName; b: ValueName; out: ValueName };

/** The LLaMA decoder block (see the module doc for the same in formulas). */
export const BLOCK_PROGRAM: readonly BlockOp[] = Object.freeze(
  [
    { op: "rmsnorm", x: "x", weight: "inputNorm", out: "n1" },
    { op: "linear", lin: "self_attn.q_proj", x: "n1", out: "qLin" },
    { op: "linear", lin: "self_attn.k_proj", x: "n1", out: "kLin" },
    { op: "linear", lin: "self_attn.v_proj", x: "n1", out: "v" },
    { op: "rope", x: "qLin", heads: "q", out: "q" },
    { op: "rope", x: "kLin", heads: "kv", out: "k" },
    { op: "attention", q: "q", k: "k", v: "v", out: "att" },
    { op: "linear", lin: "self_attn.o_proj", x: "att", out: "oOut" },
    { op: "add", a: "x", b: "oOut", out: "mid" },
    { op: "rmsnorm", x: "mid", weight: "postNorm", out: "n2" },
    { op: "linear", lin: "mlp.gate_proj", x: "n2", out: "g" },
    { op: "linear", lin: "mlp.up_proj", x: "n2", out: "u" },
    { op: "swiglu", gate: "g", up: "u", out: "act" },
    { op: "linear", lin: "mlp.down_proj", x: "act", out: "dOut" },
    { op: "add", a: "mid", b: "dOut", out: "out" },
  ] as const satisfies readonly BlockOp[],
);

/** The values an operation reads. */
export function opInputs(op: BlockOp): ValueName[] {
  switch (op.op) {
    case "rmsnorm":
    case "linear":
    case "rope":
      return [op.x];
    case "attention":
      return [op.q, op.k, op.v];
    case "swiglu":
      return [op.gate, op.up];
    case "add":
      return [op.a, op.b];
  }
}

/**
 * The operations whose result changes when linear `from` changes: `from` itself and everything downstream of
 * it, in program order (what a caller replacing one linear must recompute from a trace of the rest).
 */
export function opsAffectedBy(from: LinearName, program: readonly BlockOp[] = BLOCK_PROGRAM): BlockOp[] {
  const dirty = new Set<ValueName>();
  const ops: BlockOp[] = [];
  for (const op of program) {
    if ((op.op === "linear" && op.lin === from) || opInputs(op).some((v) => dirty.has(v))) {
      dirty.add(op.out);
      ops.push(op);
    }
  }
  return ops;
}

/**
 * The operations that `wanted` depends on, in program order: the backward slice of the program from those
 * values (what a pass that only needs, say, every linear's input must run). Values given from outside the
 * program (`x`) need no operation.
 */
export function opsNeededFor(
  wanted: Iterable<ValueName>,
  program: readonly BlockOp[] = BLOCK_PROGRAM,
): BlockOp[] {
  const need = new Set<ValueName>(wanted);
  const ops: BlockOp[] = [];
  for (let i = program.length - 1; i >= 0; i--) {
    const op = program[i];
    if (!need.has(op.out)) continue;
    ops.push(op);
    for (const v of opInputs(op)) need.add(v);
  }
  return ops.reverse();
}

/**
 * The width (columns) of a block value for `spec`: hidden for the residual stream and its norms, heads·headDim
 * for queries and the attention output, kvHeads·headDim for keys and values, intermediate for the MLP.
 */
export function valueWidth(spec: LlamaSpec, v: ValueName): number {
  switch (v) {
    case "qLin":
    case "q":
    case "att":
      return spec.numHeads * spec.headDim;
    case "kLin":
    case "k":
    case "v":
      return spec.numKvHeads * spec.headDim;
    case "g":
    case "u":
    case "act":
      return spec.intermediateSize;
    default:
      return spec.hiddenSize;
  }
}
