/**
 * Reverse mode through the LLaMA model, streaming: the loss and, for every linear of every block, its input x
 * and the loss gradient dy at its output — from which a method derives any parameter gradient it needs
 * (dL/dW = dyᵀ·x for a dense W; for W' = A·B, dL/dA = dyᵀ·(x·Bᵀ), and so on).
 *
 * The block is not written out again here: {@link blockForward} and {@link blockBackward} interpret
 * {@link BLOCK_PROGRAM} (the one definition of the block), the first keeping the values the VJPs of
 * `backward_ops.ts` need, the second running the ops in reverse with one VJP per op kind.
 *
 * {@link lossAndGrad} checkpoints at block boundaries: a forward pass keeps only each block's input
 * (L × tokens × d floats), the head gives the loss and dL/dh, then each block, last first, is fetched again
 * from the model's block provider, its forward recomputed with intermediates, and its backward run. Peak
 * memory is therefore one block's weights and intermediates (the widest are tokens × intermediate and one
 * head's seq × seq weights) plus the checkpoints, plus, for a KL objective, the reference's final hidden
 * states (tokens × d).
 *
 * @example
 * ```ts ignore
 * import { lossAndGrad } from "./backward.ts";
 * const fisher = new Map<string, Float64Array>();
 * const { loss, tokens } = await lossAndGrad(
 *   { spec, head, block: (i) => loadBlock(reader, spec, i) },
 *   windows,
 *   { onLinearGrad: (layer, lin, x, dy) => {/* dL/dW = dyᵀ·x *\/} },
 * );
 * ```
 *
 * @module
 */
import { OptionError, ShapeError } from "../errors.ts";
import type { FloatArray, Matrix } from "../linalg/matrix.ts";
import { BLOCK_PROGRAM, opInputs, type ValueName } from "./block_def.ts";

export type { ValueName };
import {
  addForward,
  attentionBackward,
  attentionForward,
  embeddingForward,
  type GradHead,
  type GradLinear,
  headLogitsInto,
  headLossBackward,
  linearBackward,
  linearForward,
  type LinearGrads,
  rmsnormBackward,
  rmsnormForward,
  ropeBackward,
  ropeForward,
  swigluBackward,
  swigluForward,
  zerosLike,
} from "./backward_ops.ts";
import { BLOCK_FIELD, type Layout } from "./llama.ts";
import type { LinearName } from "./names.ts";
import type { LlamaSpec } from "./spec.ts";

/** The weights of one block with element type T (a `LlamaBlock` is a `GradBlock<Float32Array>`). */
export interface GradBlock<T extends FloatArray = Float32Array> {
  /** d. */
  inputNorm: T;
  /** q×d. */
  q: GradLinear<T>;
  /** kv×d. */
  k: GradLinear<T>;
  /** kv×d. */
  v: GradLinear<T>;
  /** d×q. */
  o: GradLinear<T>;
  /** d. */
  postNorm: T;
  /** f×d. */
  gate: GradLinear<T>;
  /** f×d. */
  up: GradLinear<T>;
  /** d×f. */
  down: GradLinear<T>;
}

/** Called once per linear of each block during the backward pass: x its input (tokens×in), dy the loss gradient w.r.t. its output (tokens×out). */
export type LinearGradHook<T extends FloatArray = Float32Array> = (
  layer: number,
  lin: LinearName,
  x: Matrix<T>,
  dy: Matrix<T>,
) => void;

/** A model as the backward pass sees it: the spec, the head in memory, and blocks fetched on demand. */
export interface GradModel<T extends FloatArray = Float32Array> {
  /** Architecture. */
  spec: LlamaSpec;
  /** Embedding, final norm, lm_head (a `LlamaHead`). */
  head: GradHead<T>;
  /** Block i's weights; called twice per pass (forward, then backward), so it may reload instead of keeping. */
  block(i: number): GradBlock<T> | Promise<GradBlock<T>>;
}

/** Every value of one block's program (tokens×width each). */
export type BlockValues<T extends FloatArray = Float32Array> = Partial<Record<ValueName, Matrix<T>>>;

/** Where in the program each value is read for the last time (to drop it when only the output is wanted). */
const LAST_USE: ReadonlyMap<ValueName, number> = (() => {
  const m = new Map<ValueName, number>();
  BLOCK_PROGRAM.forEach((op, i) => {
    for (const v of opInputs(op)) m.set(v, i);
  });
  return m;
})();

function need<T extends FloatArray>(values: BlockValues<T>, name: ValueName): Matrix<T> {
  const m = values[name];
  if (!m) throw new ShapeError(`block backward: value ${name} was not kept by the forward pass`);
  return m;
}

/**
 * Run {@link BLOCK_PROGRAM} over x ((batch·seq)×d). With `keep` (default) every value is returned (what
 * {@link blockBackward} needs); without, each value is dropped after its last use and only `x` and `out` remain.
 */
export function blockForward<T extends FloatArray>(
  spec: LlamaSpec,
  block: GradBlock<T>,
  x: Matrix<T>,
  layout: Layout,
  keep = true,
): BlockValues<T> {
  if (x.rows !== layout.batch * layout.seq || x.cols !== spec.hiddenSize) {
    throw new ShapeError(
      `block forward: x is ${x.rows}×${x.cols}, the layout needs ${
        layout.batch * layout.seq
      }×${spec.hiddenSize}`,
    );
  }
  const vals: BlockValues<T> = { x };
  BLOCK_PROGRAM.forEach((op, i) => {
    const get = (n: ValueName) => need(vals, n);
    switch (op.op) {
      case "rmsnorm":
        vals[op.out] = rmsnormForward(get(op.x), block[op.weight], spec.rmsNormEps);
        break;
      case "linear":
        vals[op.out] = linearForward(block[BLOCK_FIELD[op.lin]], get(op.x));
        break;
      case "rope":
        vals[op.out] = ropeForward(
          get(op.x),
          op.heads === "q" ? spec.numHeads : spec.numKvHeads,
          spec,
          layout.seq,
        );
        break;
      case "attention":
        vals[op.out] = attentionForward(spec, get(op.q), get(op.k), get(op.v), layout);
        break;
      case "swiglu":
        vals[op.out] = swigluForward(get(op.gate), get(op.up));
        break;
      case "add":
        vals[op.out] = addForward(get(op.a), get(op.b));
        break;
    }
    if (!keep) { for (const v of opInputs(op)) if (v !== "x" && LAST_USE.get(v) === i) delete vals[v]; }
  });
  return vals;
}

/** Parameter gradients of one block (see {@link blockBackward}'s `params`). */
export interface BlockGrads<T extends FloatArray = Float32Array> {
  /** dL/d inputNorm (d). */
  inputNorm: Float64Array;
  /** dL/d postNorm (d). */
  postNorm: Float64Array;
  /** Per linear, its parameter gradients. */
  linears: Partial<Record<LinearName, LinearGrads<T>>>;
}

/** Options of {@link blockBackward}. */
export interface BlockBackwardOptions<T extends FloatArray> {
  /** Sees each linear's input x and output gradient dy (in reverse program order). */
  onLinear?: (lin: LinearName, x: Matrix<T>, dy: Matrix<T>) => void;
  /** Also compute every parameter gradient (norm weights, dense dW, low-rank dA/dB, biases). */
  params?: boolean;
}

/**
 * The ops of {@link BLOCK_PROGRAM} in reverse, one VJP each, from dOut = dL/d out (tokens×d) and the values
 * of {@link blockForward}: returns dx = dL/dx (and with `params`, the parameter gradients). Values the program
 * reads twice (n1 by q/k/v, mid by the norm and the residual) accumulate their gradients.
 */
export function blockBackward<T extends FloatArray>(
  spec: LlamaSpec,
  block: GradBlock<T>,
  values: BlockValues<T>,
  dOut: Matrix<T>,
  layout: Layout,
  opts: BlockBackwardOptions<T> = {},
): { dx: Matrix<T>; grads?: BlockGrads<T> } {
  const grads: BlockGrads<T> | undefined = opts.params
    ? {
      inputNorm: new Float64Array(spec.hiddenSize),
      postNorm: new Float64Array(spec.hiddenSize),
      linears: {},
    }
    : undefined;
  // Gradients flow through the residual adds unchanged and then accumulate in place: start from a copy so
  // that the caller's dOut is never written.
  const d = new Map<ValueName, Matrix<T>>([["out", {
    rows: dOut.rows,
    cols: dOut.cols,
    data: dOut.data.slice() as T,
  }]]);
  /** d[name] += g; g is stored as is when it is the first contribution (so never store one matrix twice). */
  const acc = (name: ValueName, g: Matrix<T>) => {
    const cur = d.get(name);
    if (!cur) d.set(name, g);
    else for (let i = 0; i < cur.data.length; i++) cur.data[i] += g.data[i];
  };
  for (let i = BLOCK_PROGRAM.length - 1; i >= 0; i--) {
    const op = BLOCK_PROGRAM[i], g = d.get(op.out);
    if (!g) continue; // nothing downstream depends on it
    d.delete(op.out);
    const get = (n: ValueName) => need(values, n);
    switch (op.op) {
      case "rmsnorm": {
        const dw = grads ? grads[op.weight] : undefined;
        acc(op.x, rmsnormBackward(get(op.x), block[op.weight], spec.rmsNormEps, g, dw));
        break;
      }
      case "linear": {
        const x = get(op.x);
        opts.onLinear?.(op.lin, x, g);
        const r = linearBackward(block[BLOCK_FIELD[op.lin]], x, g, !!grads);
        if (grads) grads.linears[op.lin] = r.grads;
        acc(op.x, r.dx);
        break;
      }
      case "rope":
        acc(op.x, ropeBackward(g, op.heads === "q" ? spec.numHeads : spec.numKvHeads, spec, layout.seq));
        break;
      case "attention": {
        const r = attentionBackward(spec, get(op.q), get(op.k), get(op.v), g, layout);
        acc(op.q, r.dq);
        acc(op.k, r.dk);
        acc(op.v, r.dv);
        break;
      }
      case "swiglu": {
        const r = swigluBackward(get(op.gate), get(op.up), g);
        acc(op.gate, r.dg);
        acc(op.up, r.du);
        break;
      }
      case "add":
        acc(op.b, { rows: g.rows, cols: g.cols, data: g.data.slice() as T });
        acc(op.a, g);
        break;
    }
  }
  const dx = d.get("x");
  if (!dx) throw new ShapeError("block backward: the program does not depend on its input x");
  return { dx, grads };
}

/** Options of {@link lossAndGrad}. */
export interface LossAndGradOptions<T extends FloatArray = Float32Array> {
  /** Sees every linear's input and output gradient, block by block from the last. */
  onLinearGrad?: LinearGradHook<T>;
  /**
   * A reference for a KL(p_ref ‖ p) term: the original model (run forward once, keeping only its final hidden
   * states), or per-window reference logits (seq×vocab each, in `windows` order).
   */
  reference?: GradModel<T> | readonly Matrix<T>[];
  /** Weight of the mean KL term (default 1 with a reference; 0 ignores it). */
  klWeight?: number;
  /** Weight of the mean next-token NLL (default 1; 0 for a pure distillation objective). */
  nllWeight?: number;
  /** Sees dL/dx at the embedding output (tokens×d): the embedding gradient is its scatter-add. */
  onInputGrad?: (dx: Matrix<T>) => void;
  /** Checked between blocks. */
  signal?: AbortSignal;
  /**
   * Start at block `layer` with `x` its input (tokens×d, the windows' rows in order) instead of at the
   * embedding: the blocks before are neither fetched nor run, the hook sees blocks `layer`… only, and
   * `onInputGrad` sees dL/dx at `x`. (A caller feeding `x` from a compressed prefix gets the gradients of the
   * later blocks' linears on that prefix's activations, without a backward pass through the prefix.)
   */
  from?: { layer: number; x: Matrix<T> };
}

/** What {@link lossAndGrad} returns. */
export interface LossAndGrad {
  /** The objective: nllWeight·nll + klWeight·kl. */
  loss: number;
  /** Mean next-token NLL (natural log) over the predicted positions. */
  nll: number;
  /** Mean KL(p_ref ‖ p) over the same positions (0 without a reference). */
  kl: number;
  /** Predicted positions: windows × (seq − 1). */
  tokens: number;
}

function checkWeight(what: string, v: number | undefined): void {
  if (v !== undefined && !(Number.isFinite(v) && v >= 0)) {
    throw new OptionError(`lossAndGrad: ${what} must be a finite number ≥ 0, got ${v}`);
  }
}

function checkFrom<T extends FloatArray>(
  spec: LlamaSpec,
  from: { layer: number; x: Matrix<T> },
  tokens: number,
): void {
  const { layer, x } = from;
  if (!Number.isInteger(layer) || layer < 0 || layer >= spec.numLayers) {
    throw new OptionError(
      `lossAndGrad: from.layer must be a block index in 0…${spec.numLayers - 1}, got ${layer}`,
    );
  }
  if (!x || x.rows !== tokens || x.cols !== spec.hiddenSize || x.data.length !== tokens * spec.hiddenSize) {
    throw new ShapeError(
      `lossAndGrad: from.x must be ${tokens}×${spec.hiddenSize} (the windows' tokens × hidden), got ${x?.rows}×${x?.cols}`,
    );
  }
}

/**
 * The next-token targets of `windows` (equal lengths), row by row as the forward pass stacks them: row b·seq + t
 * predicts window b's token t + 1, and each window's last row predicts nothing (−1).
 */
export function nextTokenTargets(windows: readonly Int32Array[]): Int32Array {
  const seq = windows[0]?.length ?? 0;
  const targets = new Int32Array(windows.length * seq).fill(-1);
  windows.forEach((w, b) => {
    for (let t = 0; t + 1 < seq; t++) targets[b * seq + t] = w[t + 1];
  });
  return targets;
}

/** Final hidden states of a model (tokens×d): the forward pass alone, keeping nothing. */
async function finalHidden<T extends FloatArray>(
  model: GradModel<T>,
  windows: readonly Int32Array[],
  layout: Layout,
  signal?: AbortSignal,
): Promise<Matrix<T>> {
  let x = embeddingForward(model.head.embed, windows);
  for (let i = 0; i < model.spec.numLayers; i++) {
    signal?.throwIfAborted();
    x = blockForward(model.spec, await model.block(i), x, layout, false).out!;
  }
  return x;
}

/**
 * The mean next-token loss over `windows` (equal lengths ≥ 2; every position but each window's last
 * predicts the next token) and, through `onLinearGrad`, every linear's (x, dy) pair, streaming with
 * checkpoints at block boundaries (see the module doc for the memory this takes). The objective is
 * nllWeight·NLL + klWeight·KL(p_ref ‖ p), both means over the predicted positions. A non-finite loss is
 * returned as it is (the hook then sees non-finite gradients): the caller decides, e.g. refuses to step.
 */
export async function lossAndGrad<T extends FloatArray = Float32Array>(
  model: GradModel<T>,
  windows: readonly Int32Array[],
  opts: LossAndGradOptions<T> = {},
): Promise<LossAndGrad> {
  const { spec, head } = model;
  if (!windows.length) throw new OptionError("lossAndGrad: no windows given");
  const seq = windows[0].length;
  if (seq < 2) {
    throw new OptionError(`lossAndGrad: windows need at least 2 tokens to predict one, got ${seq}`);
  }
  checkWeight("klWeight", opts.klWeight);
  checkWeight("nllWeight", opts.nllWeight);
  const layout: Layout = { batch: windows.length, seq };
  const tokens = windows.length * (seq - 1);
  const targets = nextTokenTargets(windows);

  // Reference logits, a chunk of rows at a time, for the KL term.
  let reference: ((row0: number, rows: number) => Matrix<T>) | undefined;
  const ref = opts.reference;
  if (ref && opts.klWeight !== 0) {
    if (Array.isArray(ref)) {
      const logits = ref as readonly Matrix<T>[];
      const V = head.lmHead.rows;
      if (logits.length !== windows.length || logits.some((m) => m.rows !== seq || m.cols !== V)) {
        throw new ShapeError(
          `lossAndGrad: reference logits must be ${windows.length} matrices of ${seq}×${V}, got ${logits.length} of ${
            logits[0]?.rows
          }×${logits[0]?.cols}`,
        );
      }
      reference = (r0, n) => {
        const out = {
          rows: n,
          cols: V,
          data: new (logits[0].data.constructor as { new (n: number): T })(n * V),
        };
        for (let i = 0; i < n; i++) {
          const r = r0 + i, w = logits[Math.floor(r / seq)], t = r % seq;
          out.data.set(w.data.subarray(t * V, (t + 1) * V), i * V);
        }
        return out;
      };
    } else {
      const rm = ref as GradModel<T>;
      const hRef = await finalHidden(rm, windows, layout, opts.signal); // tokens×d
      // One buffer for every chunk's reference logits (n×vocab), as the head loss does for its own.
      let buf: T | undefined;
      reference = (r0, n) => {
        const d = hRef.cols, rows = { rows: n, cols: d, data: hRef.data.subarray(r0 * d, (r0 + n) * d) as T };
        const V = rm.head.lmHead.rows;
        if (!buf || buf.length < n * V) buf = zerosLike(hRef.data, n, V).data;
        const out: Matrix<T> = { rows: n, cols: V, data: buf.subarray(0, n * V) as T };
        return headLogitsInto(rmsnormForward(rows, rm.head.norm, rm.spec.rmsNormEps), rm.head.lmHead, out);
      };
    }
  }

  // Forward, keeping each block's input only.
  const from = opts.from?.layer ?? 0;
  if (opts.from) checkFrom(spec, opts.from, windows.length * seq);
  const checkpoints: (Matrix<T> | undefined)[] = [];
  let x = opts.from ? opts.from.x : embeddingForward(head.embed, windows);
  for (let i = 0; i < from; i++) checkpoints.push(undefined);
  for (let i = from; i < spec.numLayers; i++) {
    opts.signal?.throwIfAborted();
    checkpoints.push(x);
    x = blockForward(spec, await model.block(i), x, layout, false).out!;
  }

  const nllW = opts.nllWeight ?? 1, klW = reference ? (opts.klWeight ?? 1) : 0;
  const lossAt = headLossBackward(spec, head, x, targets, {
    scale: 1 / tokens,
    reference,
    klWeight: klW,
    nllWeight: nllW,
  });
  const nll = lossAt.nllSum / tokens, kl = lossAt.klSum / tokens;

  // Backward, block by block from the last, recomputing each block's intermediates from its checkpoint.
  let dh = lossAt.dh;
  for (let i = spec.numLayers - 1; i >= from; i--) {
    opts.signal?.throwIfAborted();
    const block = await model.block(i);
    const values = blockForward(spec, block, checkpoints[i]!, layout, true);
    checkpoints[i] = undefined;
    const hook = opts.onLinearGrad;
    dh = blockBackward(spec, block, values, dh, layout, {
      onLinear: hook ? (lin, xi, dy) => hook(i, lin, xi, dy) : undefined,
    }).dx;
  }
  opts.onInputGrad?.(dh);
  return { loss: nllW * nll + klW * kl, nll, kl, tokens };
}
