/**
 * The weights of one decoder block and its linear layers, dense or factored (W ≈ A·B), with the product
 * y = x·Wᵀ (+ b) that every interpreter of the block program applies.
 *
 * @example
 * ```ts
 * import { applyLinear, type Linear } from "./block_weights.ts";
 * const lin: Linear = { kind: "dense", weight: { rows: 1, cols: 2, data: new Float32Array([1, 1]) } };
 * applyLinear(lin, { rows: 1, cols: 2, data: new Float32Array([2, 3]) }).data; // [5]
 * ```
 *
 * @module
 */
import { matmul } from "../linalg/gemm.ts";
import type { Matrix } from "../linalg/matrix.ts";
import type { LinearName } from "./names.ts";

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

/** y += b on every row of y (rows×out), b of length out. */
export function addBias(y: Matrix, b: Float32Array): void {
  const n = y.cols, d = y.data;
  for (let t = 0; t < y.rows; t++) for (let j = 0; j < n; j++) d[t * n + j] += b[j];
}

/** y = x·Wᵀ (+ b) for x: tokens×in → tokens×out; a low-rank linear computes (x·Bᵀ)·Aᵀ. */
export function applyLinear(lin: Linear, x: Matrix): Matrix {
  const y = lin.kind === "dense"
    ? matmul(x, lin.weight, { transB: true })
    : matmul(matmul(x, lin.b, { transB: true }), lin.a, { transB: true });
  if (lin.bias) addBias(y, lin.bias);
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
