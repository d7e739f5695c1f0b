/**
 * The decoder as an ONNX graph, derived from the one block definition: {@link BLOCK_PROGRAM} is walked op by op,
 * each op having one emitter here (rmsnorm, linear, rope, attention, swiglu, add), so the graph computes what
 * the forward pass computes. Around the blocks: the embedding Gather, the RoPE tables gathered by
 * `position_ids`, the causal/padding mask, the final norm and lm_head.
 *
 * Inputs and outputs follow the layout transformers.js and Optimum use for decoder-only models:
 * `input_ids` (batch×seq int64), `attention_mask` (batch×(past+seq) int64), `position_ids` (batch×seq int64),
 * `past_key_values.N.key/value` (batch×kvHeads×past×headDim float32) → `logits` (batch×seq×vocab float32),
 * `present.N.key/value` (batch×kvHeads×(past+seq)×headDim). In ASVD's KV-cache mode ("latent"), the cache of a
 * low-rank k/v projection holds its rank-r latents instead (batch×1×(past+seq)×r) and the keys/values are
 * rebuilt from them (keys rotated after the rebuild: RoPE does not commute with A).
 *
 * Values are tensors batch×seq×width ("flat") or batch×heads×seq×headDim ("heads", after RoPE). A low-rank
 * linear is two MatMuls (x·Bᵀ)·Aᵀ, so the file keeps the saving. Weights are stored transposed (in×out) for
 * MatMul; float16 weights are Cast to float32 (compute stays float32), int8 weights are per-output-channel
 * symmetric and pass through DequantizeLinear (the int8 embedding: its gathered rows times their scales).
 *
 * Weights are not held here: each initializer is a {@link WeightTensor} whose bytes are produced on demand.
 *
 * @example
 * ```ts ignore
 * const g = decoderGraph(spec, plan, "f32");
 * g.nodes.length; // a few hundred nodes for a small model
 * ```
 *
 * @module
 */
import { BLOCK_FIELD } from "../model/block_weights.ts";
import { BLOCK_PROGRAM, type BlockOp, type ValueName } from "../model/block_def.ts";
import type { LinearName } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import { constTensor, ElemType, node, valueInfo } from "./onnx_proto.ts";
import type { Message } from "./protobuf.ts";

/** Weight storage of an export. */
export type ExportDtype = "f32" | "f16" | "int8";

/** The shape of one linear as stored in the model (from tensor headers, before any weight is read). */
export type LinearShape =
  | { kind: "dense"; out: number; in: number; bias: boolean }
  | { kind: "lowrank"; out: number; in: number; rank: number; bias: boolean };

/** What the graph needs to know of the weights: each block's linear shapes, and whether lm_head is tied. */
export interface WeightPlan {
  /** Per block, the shape of each linear. */
  blocks: readonly Readonly<Record<LinearName, LinearShape>>[];
  /** lm_head shares the embedding. */
  tied: boolean;
}

/**
 * Where an initializer's values come from: a float32 matrix or vector of the model (`source`), stored
 * transposed or not, as `type`. int8 matrices come with a scale tensor (`scaleOf`).
 */
export interface WeightTensor {
  /** Initializer name. */
  name: string;
  /** Stored element type. */
  type: ElemType;
  /** Stored dims. */
  dims: number[];
  /** Which model values: block `layer`'s `field` ("q", "q.a", "q.b", "q.bias", "inputNorm", …) or the head's. */
  source: { layer: number; field: string } | { head: "embed" | "norm" | "lmHead" };
  /** Transpose the rows×cols source to cols×rows. */
  transpose: boolean;
  /** For an int8 scale vector: the name of the quantized matrix it belongs to. */
  scaleOf?: string;
}

/** The graph: nodes, small constants, weight initializers (bytes to produce), inputs, outputs. */
export interface DecoderGraph {
  /** Nodes in topological order. */
  nodes: Message[];
  /** Small constants (shapes, axes, RoPE tables are weights). */
  constants: Message[];
  /** Weight initializers, in the order their bytes should be produced (block by block). */
  weights: WeightTensor[];
  /** RoPE tables: maxPositions×(headDim/2) cos and sin, float32, computed by the caller. */
  ropeNames: { cos: string; sin: string };
  /** Graph inputs. */
  inputs: Message[];
  /** Graph outputs. */
  outputs: Message[];
}

/** The smallest float32: masked scores (finite, so a fully masked padding row stays finite). */
const LOWEST = -3.4028234663852886e38;

/** Emitting helper: unique names, deduplicated constants. */
class Builder {
  nodes: Message[] = [];
  constants: Message[] = [];
  weights: WeightTensor[] = [];
  #n = 0;
  #consts = new Map<string, string>();

  op(
    type: string,
    inputs: string[],
    attrs: Record<string, number | number[] | { f: number }> = {},
    out?: string,
  ) {
    const name = out ?? `/${type}_${this.#n++}`;
    this.nodes.push(node(type, inputs, [name], attrs));
    return name;
  }

  i64(values: number[], scalar = false): string {
    const key = `i64:${scalar}:${values}`;
    let n = this.#consts.get(key);
    if (!n) {
      n = `const_i64_${this.#consts.size}`;
      this.constants.push(constTensor(n, ElemType.INT64, scalar ? [] : [values.length], values));
      this.#consts.set(key, n);
    }
    return n;
  }

  f32(value: number): string {
    const key = `f32:${value}`;
    let n = this.#consts.get(key);
    if (!n) {
      n = `const_f32_${this.#consts.size}`;
      this.constants.push(constTensor(n, ElemType.FLOAT, [], [value]));
      this.#consts.set(key, n);
    }
    return n;
  }
}

/** A weight matrix (source rows×cols, stored transposed) as a float32 graph value, per the dtype. */
function matrixValue(
  g: Builder,
  name: string,
  source: WeightTensor["source"],
  rows: number,
  cols: number,
  dtype: ExportDtype,
): string {
  const dims = [cols, rows]; // stored in×out for MatMul
  if (dtype === "f32") {
    g.weights.push({ name, type: ElemType.FLOAT, dims, source, transpose: true });
    return name;
  }
  if (dtype === "f16") {
    g.weights.push({ name: `${name}_f16`, type: ElemType.FLOAT16, dims, source, transpose: true });
    return g.op("Cast", [`${name}_f16`], { to: ElemType.FLOAT }, name);
  }
  g.weights.push({ name: `${name}_q`, type: ElemType.INT8, dims, source, transpose: true });
  g.weights.push({
    name: `${name}_scale`,
    type: ElemType.FLOAT,
    dims: [rows],
    source,
    transpose: true,
    scaleOf: `${name}_q`,
  });
  return g.op("DequantizeLinear", [`${name}_q`, `${name}_scale`], { axis: 1 }, name);
}

/** A norm weight (float32 always: d floats). */
function vectorValue(g: Builder, name: string, source: WeightTensor["source"], n: number): string {
  g.weights.push({ name, type: ElemType.FLOAT, dims: [n], source, transpose: false });
  return name;
}

function rmsNorm(g: Builder, x: string, w: string, eps: number): string {
  const ms = g.op("ReduceMean", [g.op("Mul", [x, x])], { axes: [-1], keepdims: 1 });
  const inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [ms, g.f32(eps)])])]);
  return g.op("Mul", [g.op("Mul", [x, inv]), w]);
}

/** Everything an emitter may need besides its inputs. */
interface Ctx {
  spec: LlamaSpec;
  layer: number;
  shapes: Readonly<Record<LinearName, LinearShape>>;
  dtype: ExportDtype;
  /** cos/sin gathered by position_ids: batch×1×seq×(headDim/2). */
  cos: string;
  sin: string;
  /** The attention mask: batch×1×(group·seq)×total, true where a query sees a key. */
  mask: string;
  /** ASVD's KV-cache mode: the cache holds k/v latents (see {@link decoderGraph}). */
  latent: boolean;
  /** Latent mode: cos/sin of key positions 0..total-1, 1×1×total×(headDim/2). */
  keyCos: string;
  keySin: string;
  /** Latent mode: the k/v latents of this block (graph value → its linear, and whether RoPE is pending). */
  latents: Map<string, { lin: LinearName; rope: boolean }>;
}

const KV_LINS: readonly LinearName[] = ["self_attn.k_proj", "self_attn.v_proj"];

function linear(g: Builder, c: Ctx, lin: LinearName, x: string): string {
  const s = c.shapes[lin], p = `model.layers.${c.layer}.${lin}`, f = BLOCK_FIELD[lin];
  let y: string;
  if (c.latent && KV_LINS.includes(lin) && s.kind === "lowrank") {
    // latent mode: the cached value is B·x (rank wide); A (and the bias) are applied after the cache
    const b = matrixValue(g, `${p}.svd_b`, { layer: c.layer, field: `${f}.b` }, s.rank, s.in, c.dtype);
    y = g.op("MatMul", [x, b]);
    c.latents.set(y, { lin, rope: false });
    return y;
  }
  if (s.kind === "dense") {
    const w = matrixValue(g, `${p}.weight`, { layer: c.layer, field: f }, s.out, s.in, c.dtype);
    y = g.op("MatMul", [x, w]);
  } else {
    const b = matrixValue(g, `${p}.svd_b`, { layer: c.layer, field: `${f}.b` }, s.rank, s.in, c.dtype);
    const a = matrixValue(g, `${p}.svd_a`, { layer: c.layer, field: `${f}.a` }, s.out, s.rank, c.dtype);
    y = g.op("MatMul", [g.op("MatMul", [x, b]), a]);
  }
  if (s.bias) {
    y = g.op("Add", [y, vectorValue(g, `${p}.bias`, { layer: c.layer, field: `${f}.bias` }, s.out)]);
  }
  if (c.latent && KV_LINS.includes(lin)) c.latents.set(y, { lin, rope: false }); // a dense k/v caches W·x + b
  return y;
}

/** Latent mode: a low-rank k/v's output rebuilt from its cached latents (…×rank → …×out): latent·Aᵀ (+ bias). */
function fromLatent(g: Builder, c: Ctx, lin: LinearName, latent: string): string {
  const s = c.shapes[lin], p = `model.layers.${c.layer}.${lin}`, f = BLOCK_FIELD[lin];
  if (s.kind === "dense") return latent;
  const a = matrixValue(g, `${p}.svd_a`, { layer: c.layer, field: `${f}.a` }, s.out, s.rank, c.dtype);
  const y = g.op("MatMul", [latent, a]);
  return s.bias
    ? g.op("Add", [y, vectorValue(g, `${p}.bias`, { layer: c.layer, field: `${f}.bias` }, s.out)])
    : y;
}

/** flat batch×seq×(heads·hd) → heads batch×heads×seq×hd. */
function toHeads(g: Builder, x: string, heads: number, hd: number): string {
  return g.op("Transpose", [g.op("Reshape", [x, g.i64([0, 0, heads, hd])])], { perm: [0, 2, 1, 3] });
}

function rope(g: Builder, c: Ctx, x: string, heads: number): string {
  const lat = c.latents.get(x);
  if (lat) { // rotate the rebuilt keys, not the latent: rotation does not commute with A
    lat.rope = true;
    return x;
  }
  return rotate(g, c, toHeads(g, x, heads, c.spec.headDim), c.cos, c.sin);
}

/** RoPE on h (batch×heads×n×hd) with cos/sin broadcastable to batch×1×n×(hd/2). */
function rotate(g: Builder, c: Ctx, h: string, cosT: string, sinT: string): string {
  const hd = c.spec.headDim, half = hd / 2;
  const rot = (x1: string, x2: string, cos: string, sin: string, axis: number) =>
    g.op("Concat", [
      g.op("Sub", [g.op("Mul", [x1, cos]), g.op("Mul", [x2, sin])]),
      g.op("Add", [g.op("Mul", [x2, cos]), g.op("Mul", [x1, sin])]),
    ], { axis });
  const slice = (v: string, from: number, to: number) =>
    g.op("Slice", [v, g.i64([from]), g.i64([to]), g.i64([-1])]);
  if (c.spec.ropeStyle === "halves") {
    return rot(slice(h, 0, half), slice(h, half, hd), cosT, sinT, -1);
  }
  // interleaved: pairs (2i, 2i+1) → view the head as half×2
  const p = g.op("Reshape", [h, g.i64([0, 0, 0, half, 2])]);
  const cos = g.op("Unsqueeze", [cosT, g.i64([-1])]), sin = g.op("Unsqueeze", [sinT, g.i64([-1])]);
  return g.op("Reshape", [rot(slice(p, 0, 1), slice(p, 1, 2), cos, sin, -1), g.i64([0, 0, 0, hd])]);
}

/**
 * The keys or values attended to, batch×KV×total×hd, and the cache output: the past concatenated with the
 * new heads; in latent mode, with the new latents (batch×1×total×width), from which the heads are rebuilt.
 */
function cached(g: Builder, c: Ctx, x: string, kind: "key" | "value", heads: boolean): string {
  const { numKvHeads: KV, headDim: hd } = c.spec, i = c.layer;
  const past = `past_key_values.${i}.${kind}`, present = `present.${i}.${kind}`;
  const lat = c.latents.get(x);
  if (!lat) {
    return g.op("Concat", [past, heads ? x : toHeads(g, x, KV, hd)], { axis: 2 }, present);
  }
  const all = g.op("Concat", [past, g.op("Unsqueeze", [x, g.i64([1])])], { axis: 2 }, present);
  const flat = g.op("Squeeze", [fromLatent(g, c, lat.lin, all), g.i64([1])]); // batch×total×kv
  const h = toHeads(g, flat, KV, hd);
  return lat.rope ? rotate(g, c, h, c.keyCos, c.keySin) : h;
}

function attention(g: Builder, c: Ctx, q: string, k: string, vFlat: string): string {
  const { numHeads: H, numKvHeads: KV, headDim: hd } = c.spec;
  const pk = cached(g, c, k, "key", true), pv = cached(g, c, vFlat, "value", false);
  // GQA without copying keys: the `group` query heads of one kv head become group·seq rows against it
  const qg = g.op("Reshape", [q, g.i64([0, KV, -1, hd])]); // batch×KV×(group·seq)×hd
  const scores = g.op("Mul", [
    g.op("MatMul", [qg, g.op("Transpose", [pk], { perm: [0, 1, 3, 2] })]),
    g.f32(1 / Math.sqrt(hd)),
  ]);
  const p = g.op("Softmax", [g.op("Where", [c.mask, scores, g.f32(LOWEST)])], { axis: -1 });
  const o = g.op("Reshape", [g.op("MatMul", [p, pv]), g.i64([0, H, -1, hd])]); // batch×H×seq×hd
  return g.op("Reshape", [g.op("Transpose", [o], { perm: [0, 2, 1, 3] }), g.i64([0, 0, -1])]);
}

function emit(g: Builder, c: Ctx, op: BlockOp, env: Map<ValueName, string>): void {
  const get = (v: ValueName) => env.get(v)!;
  const p = `model.layers.${c.layer}`;
  switch (op.op) {
    case "rmsnorm": {
      const which = op.weight === "inputNorm" ? "input_layernorm" : "post_attention_layernorm";
      const w = vectorValue(
        g,
        `${p}.${which}.weight`,
        { layer: c.layer, field: op.weight },
        c.spec.hiddenSize,
      );
      env.set(op.out, rmsNorm(g, get(op.x), w, c.spec.rmsNormEps));
      return;
    }
    case "linear":
      env.set(op.out, linear(g, c, op.lin, get(op.x)));
      return;
    case "rope":
      env.set(op.out, rope(g, c, get(op.x), op.heads === "q" ? c.spec.numHeads : c.spec.numKvHeads));
      return;
    case "attention":
      env.set(op.out, attention(g, c, get(op.q), get(op.k), get(op.v)));
      return;
    case "swiglu": {
      const gate = get(op.gate);
      env.set(op.out, g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), get(op.up)]));
      return;
    }
    case "add":
      env.set(op.out, g.op("Add", [get(op.a), get(op.b)]));
      return;
  }
}

/** The causal (and sliding-window) mask and padding: batch×1×(group·seq)×total bool. */
function attentionMask(g: Builder, spec: LlamaSpec): string {
  const total = g.op("Gather", [g.op("Shape", ["attention_mask"]), g.i64([1], true)], { axis: 0 });
  const seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.i64([1], true)], { axis: 0 });
  const past = g.op("Sub", [total, seq]);
  const qPos = g.op("Unsqueeze", [g.op("Range", [past, total, g.i64([1], true)]), g.i64([1])]); // seq×1
  const kPos = g.op("Unsqueeze", [g.op("Range", [g.i64([0], true), total, g.i64([1], true)]), g.i64([0])]); // 1×total
  let allowed = g.op("LessOrEqual", [kPos, qPos]); // seq×total
  if (spec.slidingWindow !== undefined) {
    const first = g.op("Sub", [qPos, g.i64([spec.slidingWindow], true)]);
    allowed = g.op("And", [allowed, g.op("Greater", [kPos, first])]);
  }
  const pad = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], { to: ElemType.BOOL }), g.i64([1, 2])]);
  const mask = g.op("And", [allowed, pad]); // batch×1×seq×total
  const group = spec.numHeads / spec.numKvHeads;
  return group === 1 ? mask : g.op("Concat", Array(group).fill(mask), { axis: 2 });
}

/**
 * Build the decoder graph for `spec` with the linear shapes of `plan`, weights stored as `dtype`, the cache
 * holding full keys/values or (`kvCache` "latent") k/v latents. The weight list is in block order (embedding,
 * then block 0's tensors in program order, …, final norm, lm_head), which is the order the exporter reads the
 * model in.
 */
export function decoderGraph(
  spec: LlamaSpec,
  plan: WeightPlan,
  dtype: ExportDtype,
  kvCache: "full" | "latent" = "full",
): DecoderGraph {
  const g = new Builder(), { hiddenSize: d, vocabSize: V } = spec;
  // The embedding table is gathered in its stored type and converted after the Gather (int8: times the
  // row's scale), so only the rows in use are ever float32.
  const E = "model.embed_tokens.weight", embedSrc = { head: "embed" } as const;
  let x: string, embedF32: () => string; // the whole table as float32 (tied lm_head)
  if (dtype === "f32") {
    g.weights.push({ name: E, type: ElemType.FLOAT, dims: [V, d], source: embedSrc, transpose: false });
    x = g.op("Gather", [E, "input_ids"]);
    embedF32 = () => E;
  } else if (dtype === "f16") {
    g.weights.push({
      name: `${E}_f16`,
      type: ElemType.FLOAT16,
      dims: [V, d],
      source: embedSrc,
      transpose: false,
    });
    x = g.op("Cast", [g.op("Gather", [`${E}_f16`, "input_ids"])], { to: ElemType.FLOAT });
    embedF32 = () => g.op("Cast", [`${E}_f16`], { to: ElemType.FLOAT });
  } else {
    g.weights.push({ name: `${E}_q`, type: ElemType.INT8, dims: [V, d], source: embedSrc, transpose: false });
    g.weights.push({
      name: `${E}_scale`,
      type: ElemType.FLOAT,
      dims: [V],
      source: embedSrc,
      transpose: false,
      scaleOf: `${E}_q`,
    });
    const rows = g.op("Cast", [g.op("Gather", [`${E}_q`, "input_ids"])], { to: ElemType.FLOAT });
    const scales = g.op("Unsqueeze", [g.op("Gather", [`${E}_scale`, "input_ids"]), g.i64([-1])]);
    x = g.op("Mul", [rows, scales]);
    embedF32 = () => g.op("DequantizeLinear", [`${E}_q`, `${E}_scale`], { axis: 0 });
  }
  const ropeNames = { cos: "rope.cos", sin: "rope.sin" };
  const gathered = (t: string) => g.op("Unsqueeze", [g.op("Gather", [t, "position_ids"]), g.i64([1])]);
  const cos = gathered(ropeNames.cos), sin = gathered(ropeNames.sin);
  const mask = attentionMask(g, spec);
  let keyCos = "", keySin = "";
  if (kvCache === "latent") { // keys rebuilt from latents sit at positions 0..total-1
    const total = g.op("Gather", [g.op("Shape", ["attention_mask"]), g.i64([1], true)], { axis: 0 });
    const kPos = g.op("Range", [g.i64([0], true), total, g.i64([1], true)]);
    const table = (t: string) => g.op("Unsqueeze", [g.op("Gather", [t, kPos]), g.i64([0, 1])]);
    [keyCos, keySin] = [table(ropeNames.cos), table(ropeNames.sin)];
  }
  for (let layer = 0; layer < spec.numLayers; layer++) {
    const c: Ctx = {
      spec,
      layer,
      shapes: plan.blocks[layer],
      dtype,
      cos,
      sin,
      mask,
      latent: kvCache === "latent",
      keyCos,
      keySin,
      latents: new Map(),
    };
    const env = new Map<ValueName, string>([["x", x]]);
    for (const op of BLOCK_PROGRAM) emit(g, c, op, env);
    x = env.get("out")!;
  }
  const norm = vectorValue(g, "model.norm.weight", { head: "norm" }, d);
  const h = rmsNorm(g, x, norm, spec.rmsNormEps);
  let lmHead: string;
  if (plan.tied) lmHead = g.op("Transpose", [embedF32()], { perm: [1, 0] });
  else lmHead = matrixValue(g, "lm_head.weight", { head: "lmHead" }, V, d, dtype);
  g.op("MatMul", [h, lmHead], {}, "logits");

  const F = ElemType.FLOAT, I = ElemType.INT64;
  const inputs = [
    valueInfo("input_ids", I, ["batch_size", "sequence_length"]),
    valueInfo("attention_mask", I, ["batch_size", "total_sequence_length"]),
    valueInfo("position_ids", I, ["batch_size", "sequence_length"]),
  ];
  const outputs = [valueInfo("logits", F, ["batch_size", "sequence_length", V])];
  for (let i = 0; i < spec.numLayers; i++) {
    for (const kv of ["key", "value"]) {
      const [heads, width] = cacheShape(plan, spec, kvCache, i, kv as "key" | "value");
      inputs.push(
        valueInfo(`past_key_values.${i}.${kv}`, F, ["batch_size", heads, "past_sequence_length", width]),
      );
      outputs.push(valueInfo(`present.${i}.${kv}`, F, ["batch_size", heads, "total_sequence_length", width]));
    }
  }
  return { nodes: g.nodes, constants: g.constants, weights: g.weights, ropeNames, inputs, outputs };
}

/**
 * [heads, width] of block `layer`'s cached keys or values: [kvHeads, headDim]; in latent mode [1, rank] for a
 * low-rank k/v projection and [1, kvHeads·headDim] for a dense one.
 */
export function cacheShape(
  plan: WeightPlan,
  spec: LlamaSpec,
  kvCache: "full" | "latent",
  layer: number,
  kind: "key" | "value",
): [number, number] {
  if (kvCache === "full") return [spec.numKvHeads, spec.headDim];
  const s = plan.blocks[layer][kind === "key" ? "self_attn.k_proj" : "self_attn.v_proj"];
  return [1, s.kind === "lowrank" ? s.rank : spec.numKvHeads * spec.headDim];
}
