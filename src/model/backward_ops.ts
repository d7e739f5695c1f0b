/**
 * The operations of the LLaMA block and head, each with its forward and its vector–Jacobian product (VJP), in
 * the spirit of llama2.c's training code: plain loops where they are clear, GEMMs where the work is, every
 * shape in a comment. {@link ./backward.ts} interprets {@link BLOCK_PROGRAM} with them.
 *
 * Every function is generic in the element type: float32 for real models, float64 for the gradient checks
 * (all operands of one call share one type). Long sums (RMSNorm's mean square, softmax normalisers, the
 * log-sum-exp of a vocabulary, bias and norm-weight gradients) accumulate in float64 whatever the storage.
 *
 * Conventions: y = x·Wᵀ (W stored out×in), rows are tokens, `windows` of `seq` consecutive rows at positions
 * 0..seq-1 (a {@link Layout}).
 *
 * @example
 * ```ts
 * import { rmsnormBackward, rmsnormForward } from "./backward_ops.ts";
 * const x = { rows: 1, cols: 2, data: new Float64Array([3, 4]) };
 * const w = new Float64Array([1, 1]);
 * const y = rmsnormForward(x, w, 0); // [3, 4] / √12.5
 * const dx = rmsnormBackward(x, w, 0, { rows: 1, cols: 2, data: new Float64Array([1, 0]) });
 * ```
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { gemmInto } from "../linalg/gemm.ts";
import type { FloatArray, Matrix } from "../linalg/matrix.ts";
import { applyRope, type RopeTables, ropeTables } from "./rope.ts";
import type { Layout } from "./llama.ts";
import type { LlamaSpec } from "./spec.ts";

/** A linear layer of element type T: dense W (out×in) or low-rank A (out×rank) · B (rank×in), optional bias (out). */
export type GradLinear<T extends FloatArray = Float32Array> =
  | { kind: "dense"; weight: Matrix<T>; bias?: T }
  | { kind: "lowrank"; a: Matrix<T>; b: Matrix<T>; bias?: T };

/** Gradients of a linear's parameters (those of its kind): dW (out×in), or dA (out×rank) and dB (rank×in); dbias (out). */
export interface LinearGrads<T extends FloatArray = Float32Array> {
  /** dL/dW, dense only. */
  weight?: Matrix<T>;
  /** dL/dA, low-rank only. */
  a?: Matrix<T>;
  /** dL/dB, low-rank only. */
  b?: Matrix<T>;
  /** dL/dbias, when the linear has a bias. */
  bias?: T;
}

/** A zero rows×cols matrix of the same element type as `like`. */
export function zerosLike<T extends FloatArray>(like: T, rows: number, cols: number): Matrix<T> {
  const C = like.constructor as { new (n: number): T };
  return { rows, cols, data: new C(rows * cols) };
}

/** C = op(A)·op(B) as a new matrix of A's element type. */
export function mm<T extends FloatArray>(
  a: Matrix<T>,
  b: Matrix<T>,
  opts: { transA?: boolean; transB?: boolean } = {},
): Matrix<T> {
  const m = opts.transA ? a.cols : a.rows, n = opts.transB ? b.rows : b.cols;
  return gemmInto(a, b, zerosLike(a.data, m, n), opts);
}

function copyOf<T extends FloatArray>(m: Matrix<T>): Matrix<T> {
  return { rows: m.rows, cols: m.cols, data: m.data.slice() as T };
}

// ---------------------------------------------------------------------------------------------------------
// Embedding

/** x[r] = table[id of row r]: windows (batch of seq ids) → (batch·seq)×d. Throws on an id outside the table. */
export function embeddingForward<T extends FloatArray>(
  table: Matrix<T>,
  windows: readonly Int32Array[],
): Matrix<T> {
  const d = table.cols, seq = windows.length ? windows[0].length : 0;
  const x = zerosLike(table.data, windows.length * seq, d);
  let r = 0;
  for (const w of windows) {
    if (w.length !== seq) {
      throw new ShapeError(`embedding: windows of unequal length (${w.length} and ${seq})`);
    }
    for (let t = 0; t < seq; t++, r++) {
      const id = w[t];
      if (!(Number.isInteger(id) && id >= 0 && id < table.rows)) {
        throw new ShapeError(`embedding: token id ${id} outside the vocabulary (${table.rows})`);
      }
      x.data.set(table.data.subarray(id * d, (id + 1) * d), r * d);
    }
  }
  return x;
}

/** VJP of the embedding: dTable (vocab×d, float64) = scatter-add of dx's rows (tokens×d) at their ids. */
export function embeddingBackward(
  dx: Matrix<FloatArray>,
  windows: readonly Int32Array[],
  vocab: number,
): Matrix<Float64Array> {
  const d = dx.cols, out = new Float64Array(vocab * d);
  let r = 0;
  for (const w of windows) {
    for (let t = 0; t < w.length; t++, r++) {
      const o = w[t] * d;
      for (let j = 0; j < d; j++) out[o + j] += dx.data[r * d + j];
    }
  }
  return { rows: vocab, cols: d, data: out };
}

// ---------------------------------------------------------------------------------------------------------
// RMSNorm: y_j = x_j · r · w_j, r = (Σ x²/n + eps)^-½ per row

function rowScale(x: FloatArray, o: number, n: number, eps: number): number {
  let ss = 0;
  for (let j = 0; j < n; j++) ss += x[o + j] * x[o + j];
  return 1 / Math.sqrt(ss / n + eps);
}

/** RMSNorm of each row of x (tokens×d) times w (d). */
export function rmsnormForward<T extends FloatArray>(x: Matrix<T>, w: FloatArray, eps: number): Matrix<T> {
  const n = x.cols, y = zerosLike(x.data, x.rows, n);
  for (let t = 0, o = 0; t < x.rows; t++, o += n) {
    const r = rowScale(x.data, o, n, eps);
    for (let j = 0; j < n; j++) y.data[o + j] = x.data[o + j] * r * w[j];
  }
  return y;
}

/**
 * VJP of RMSNorm: dx_j = r·w_j·dy_j − r³·x_j·(Σ_k w_k·dy_k·x_k)/n per row. With `dw` (d, float64), adds
 * dL/dw_j = Σ_rows dy_j·x_j·r to it.
 */
export function rmsnormBackward<T extends FloatArray>(
  x: Matrix<T>,
  w: FloatArray,
  eps: number,
  dy: Matrix<T>,
  dw?: Float64Array,
): Matrix<T> {
  const n = x.cols, dx = zerosLike(x.data, x.rows, n), xd = x.data, g = dy.data;
  for (let t = 0, o = 0; t < x.rows; t++, o += n) {
    const r = rowScale(xd, o, n, eps);
    let c = 0;
    for (let j = 0; j < n; j++) c += w[j] * g[o + j] * xd[o + j];
    const k = (r * r * r * c) / n;
    for (let j = 0; j < n; j++) dx.data[o + j] = r * w[j] * g[o + j] - k * xd[o + j];
    if (dw) { for (let j = 0; j < n; j++) dw[j] += g[o + j] * xd[o + j] * r; }
  }
  return dx;
}

// ---------------------------------------------------------------------------------------------------------
// Linear: y = x·Wᵀ (+ b), or (x·Bᵀ)·Aᵀ (+ b)

/** y (tokens×out) = x (tokens×in) · Wᵀ (+ bias). */
export function linearForward<T extends FloatArray>(lin: GradLinear<T>, x: Matrix<T>): Matrix<T> {
  const y = lin.kind === "dense"
    ? mm(x, lin.weight, { transB: true })
    : mm(mm(x, lin.b, { transB: true }), lin.a, { transB: true });
  if (lin.bias) {
    const b = lin.bias, n = y.cols;
    for (let t = 0; t < y.rows; t++) for (let j = 0; j < n; j++) y.data[t * n + j] += b[j];
  }
  return y;
}

/**
 * VJP of a linear: dx = dy·W (dense) or (dy·A)·B (low-rank), tokens×in. With `params`, also the parameter
 * gradients: dW = dyᵀ·x; dA = dyᵀ·(x·Bᵀ), dB = (dy·A)ᵀ·x; dbias = Σ_rows dy.
 */
export function linearBackward<T extends FloatArray>(
  lin: GradLinear<T>,
  x: Matrix<T>,
  dy: Matrix<T>,
  params = false,
): { dx: Matrix<T>; grads?: LinearGrads<T> } {
  let dx: Matrix<T>, grads: LinearGrads<T> | undefined;
  if (lin.kind === "dense") {
    dx = mm(dy, lin.weight); // tokens×out · out×in
    if (params) grads = { weight: mm(dy, x, { transA: true }) }; // out×in
  } else {
    const dmid = mm(dy, lin.a); // tokens×rank
    dx = mm(dmid, lin.b); // tokens×in
    if (params) {
      const mid = mm(x, lin.b, { transB: true }); // tokens×rank
      grads = { a: mm(dy, mid, { transA: true }), b: mm(dmid, x, { transA: true }) };
    }
  }
  if (params && lin.bias) {
    const n = dy.cols, db = new Float64Array(n);
    for (let t = 0; t < dy.rows; t++) for (let j = 0; j < n; j++) db[j] += dy.data[t * n + j];
    grads!.bias = (lin.bias.constructor === Float64Array ? db : Float32Array.from(db)) as T;
  }
  return { dx, grads };
}

// ---------------------------------------------------------------------------------------------------------
// RoPE: a rotation per (position, pair); its VJP is the inverse rotation (the transpose)

const tableCache = new Map<string, { fwd: RopeTables; inv: RopeTables }>();

/** The same tables as the forward pass (angles depend on the position alone) and their inverse (−sin). */
function tablesFor(spec: LlamaSpec, seq: number): { fwd: RopeTables; inv: RopeTables } {
  const key = `${spec.headDim}/${spec.ropeTheta}/${JSON.stringify(spec.ropeScaling ?? null)}`;
  let t = tableCache.get(key);
  if (!t || t.fwd.positions < seq) {
    const fwd = ropeTables(
      Math.max(seq, spec.maxPositions, 64),
      spec.headDim,
      spec.ropeTheta,
      spec.ropeScaling,
    );
    t = { fwd, inv: { ...fwd, sin: fwd.sin.map((s) => -s) } };
    tableCache.set(key, t);
  }
  return t;
}

function rotate<T extends FloatArray>(
  x: Matrix<T>,
  heads: number,
  spec: LlamaSpec,
  seq: number,
  inverse: boolean,
): Matrix<T> {
  const y = copyOf(x), t = tablesFor(spec, seq);
  // applyRope only indexes y.data, so a float64 matrix is rotated in float64 (by the same float32 angles).
  applyRope(
    y as unknown as Matrix,
    heads,
    spec.headDim,
    inverse ? t.inv : t.fwd,
    spec.ropeStyle,
    (r) => r % seq,
  );
  return y;
}

/** RoPE (the spec's convention) of x (tokens×(heads·headDim)), row r at position r mod seq; x is not modified. */
export function ropeForward<T extends FloatArray>(
  x: Matrix<T>,
  heads: number,
  spec: LlamaSpec,
  seq: number,
): Matrix<T> {
  return rotate(x, heads, spec, seq, false);
}

/** VJP of RoPE: dy rotated back by the same angles. */
export function ropeBackward<T extends FloatArray>(
  dy: Matrix<T>,
  heads: number,
  spec: LlamaSpec,
  seq: number,
): Matrix<T> {
  return rotate(dy, heads, spec, seq, true);
}

// ---------------------------------------------------------------------------------------------------------
// Causal GQA attention: per window and head, P = softmax(q·kᵀ/√hd) over visible keys, out = P·v

/** Copy head h (width hd) of window b's rows (seq of them) out of m (rows×(heads·hd)): seq×hd. */
function gatherHead<T extends FloatArray>(
  m: Matrix<T>,
  b: number,
  seq: number,
  h: number,
  hd: number,
): Matrix<T> {
  const out = zerosLike(m.data, seq, hd);
  for (let t = 0; t < seq; t++) {
    const o = (b * seq + t) * m.cols + h * hd;
    out.data.set(m.data.subarray(o, o + hd), t * hd);
  }
  return out;
}

/** m's head h of window b += src (seq×hd). */
function scatterAddHead<T extends FloatArray>(m: Matrix<T>, src: Matrix<T>, b: number, h: number): void {
  const hd = src.cols;
  for (let t = 0; t < src.rows; t++) {
    const o = (b * src.rows + t) * m.cols + h * hd;
    for (let j = 0; j < hd; j++) m.data[o + j] += src.data[t * hd + j];
  }
}

/** In place: scores (seq×seq) → causal (and sliding-window) softmax of scale·scores; masked entries 0. */
function maskedSoftmax(s: FloatArray, seq: number, scale: number, slide: number): void {
  for (let i = 0; i < seq; i++) {
    const o = i * seq, first = Math.max(0, i - slide + 1); // keys first..i are visible
    let max = -Infinity;
    for (let j = first; j <= i; j++) if (s[o + j] > max) max = s[o + j];
    let sum = 0; // float64
    for (let j = first; j <= i; j++) {
      const e = Math.exp((s[o + j] - max) * scale);
      s[o + j] = e;
      sum += e;
    }
    s.fill(0, o, o + first);
    s.fill(0, o + i + 1, o + seq);
    for (let j = first; j <= i; j++) s[o + j] /= sum;
  }
}

/** Per (window, kv head, query head of its group): k, v and q of that head, and the attention weights P. */
function eachHead<T extends FloatArray>(
  spec: LlamaSpec,
  q: Matrix<T>,
  k: Matrix<T>,
  v: Matrix<T>,
  { batch, seq }: Layout,
  visit: (
    b: number,
    h: number,
    kh: number,
    kb: Matrix<T>,
    vb: Matrix<T>,
    qb: Matrix<T>,
    p: Matrix<T>,
  ) => void,
): void {
  const H = spec.numHeads, KV = spec.numKvHeads, hd = spec.headDim, group = H / KV;
  const scale = 1 / Math.sqrt(hd), slide = spec.slidingWindow ?? Infinity;
  for (let b = 0; b < batch; b++) {
    for (let kh = 0; kh < KV; kh++) {
      const kb = gatherHead(k, b, seq, kh, hd), vb = gatherHead(v, b, seq, kh, hd); // seq×hd
      for (let h = kh * group; h < (kh + 1) * group; h++) {
        const qb = gatherHead(q, b, seq, h, hd); // seq×hd
        const p = mm(qb, kb, { transB: true }); // seq×seq scores, recomputed per head (never all heads at once)
        maskedSoftmax(p.data, seq, scale, slide);
        visit(b, h, kh, kb, vb, qb, p);
      }
    }
  }
}

/** Causal GQA attention: q (tokens×(H·hd)), k, v (tokens×(KV·hd)) → tokens×(H·hd), windows independent. */
export function attentionForward<T extends FloatArray>(
  spec: LlamaSpec,
  q: Matrix<T>,
  k: Matrix<T>,
  v: Matrix<T>,
  layout: Layout,
): Matrix<T> {
  const out = zerosLike(q.data, q.rows, q.cols);
  eachHead(spec, q, k, v, layout, (b, h, _kh, _kb, vb, _qb, p) => scatterAddHead(out, mm(p, vb), b, h));
  return out;
}

/**
 * VJP of attention, recomputing each head's weights P: dP = dO·vᵀ; dS = P ⊙ (dP − rowsum(P ⊙ dP))/√hd;
 * dq = dS·k, dk += dSᵀ·q, dv += Pᵀ·dO (k and v summed over the query heads of their group).
 */
export function attentionBackward<T extends FloatArray>(
  spec: LlamaSpec,
  q: Matrix<T>,
  k: Matrix<T>,
  v: Matrix<T>,
  dOut: Matrix<T>,
  layout: Layout,
): { dq: Matrix<T>; dk: Matrix<T>; dv: Matrix<T> } {
  const dq = zerosLike(q.data, q.rows, q.cols);
  const dk = zerosLike(k.data, k.rows, k.cols), dv = zerosLike(v.data, v.rows, v.cols);
  const seq = layout.seq, scale = 1 / Math.sqrt(spec.headDim);
  eachHead(spec, q, k, v, layout, (b, h, kh, kb, vb, qb, p) => {
    const dob = gatherHead(dOut, b, seq, h, spec.headDim); // seq×hd
    const ds = mm(dob, vb, { transB: true }); // seq×seq: dP, then dS in place
    const pd = p.data, sd = ds.data;
    for (let i = 0; i < seq; i++) {
      let dot = 0;
      for (let j = 0; j <= i; j++) dot += pd[i * seq + j] * sd[i * seq + j];
      for (let j = 0; j < seq; j++) sd[i * seq + j] = pd[i * seq + j] * (sd[i * seq + j] - dot) * scale;
    }
    scatterAddHead(dq, mm(ds, kb), b, h);
    scatterAddHead(dk, mm(ds, qb, { transA: true }), b, kh);
    scatterAddHead(dv, mm(p, dob, { transA: true }), b, kh);
  });
  return { dq, dk, dv };
}

// ---------------------------------------------------------------------------------------------------------
// SwiGLU and the residual add

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** act = silu(g) ⊙ u (both tokens×f). */
export function swigluForward<T extends FloatArray>(g: Matrix<T>, u: Matrix<T>): Matrix<T> {
  const out = zerosLike(g.data, g.rows, g.cols);
  for (let i = 0; i < out.data.length; i++) out.data[i] = g.data[i] * sigmoid(g.data[i]) * u.data[i];
  return out;
}

/** VJP of SwiGLU: dg = dy·u·σ(g)·(1 + g·(1 − σ(g))), du = dy·silu(g). */
export function swigluBackward<T extends FloatArray>(
  g: Matrix<T>,
  u: Matrix<T>,
  dy: Matrix<T>,
): { dg: Matrix<T>; du: Matrix<T> } {
  const dg = zerosLike(g.data, g.rows, g.cols), du = zerosLike(g.data, g.rows, g.cols);
  for (let i = 0; i < g.data.length; i++) {
    const x = g.data[i], s = sigmoid(x);
    dg.data[i] = dy.data[i] * u.data[i] * s * (1 + x * (1 - s));
    du.data[i] = dy.data[i] * x * s;
  }
  return { dg, du };
}

/** a + b (same shapes); its VJP passes dy to both. */
export function addForward<T extends FloatArray>(a: Matrix<T>, b: Matrix<T>): Matrix<T> {
  const out = copyOf(a);
  for (let i = 0; i < out.data.length; i++) out.data[i] += b.data[i];
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// The head and the losses

/** The model's boundary of element type T (a {@link LlamaHead} is one). */
export interface GradHead<T extends FloatArray = Float32Array> {
  /** vocab×d. */
  embed: Matrix<T>;
  /** d. */
  norm: T;
  /** vocab×d. */
  lmHead: Matrix<T>;
}

/** Rows of logits computed at once: about 4M values whatever the vocabulary (as `tokenNll`). */
export function lossChunkRows(vocab: number): number {
  return Math.max(1, Math.floor((1 << 22) / vocab));
}

/**
 * Vocabulary rows of lm_head in one product (about 2M values, 8 MiB in float32, whatever d). The wasm kernels
 * copy their operands into wasm memory, so a product with the whole lm_head (vocab×d) copied all of it there
 * each time, where its pages stayed resident beside the JavaScript copy (125 MiB at vocab 32000, d 1024).
 */
export function headChunkRows(d: number): number {
  return Math.max(1, Math.floor((1 << 21) / d));
}

/**
 * out (n×V) = x (n×d) · lm_headᵀ (lm_head V×d), `vocabRows` rows of lm_head per product (default
 * {@link headChunkRows}). Each logit is the same dot product as in one whole-vocabulary product, equal to
 * float32 rounding: the kernels may sum a small product in another order than a large one (a 7×1 product and
 * a 7×2 one differ in the last bit), so chunked and whole logits are not always bit-identical.
 */
export function headLogitsInto<T extends FloatArray>(
  x: Matrix<T>,
  lmHead: Matrix<T>,
  out: Matrix<T>,
  vocabRows: number = headChunkRows(lmHead.cols),
): Matrix<T> {
  const V = lmHead.rows, d = lmHead.cols, n = x.rows;
  if (out.rows !== n || out.cols !== V || x.cols !== d) {
    throw new ShapeError(
      `head logits: x ${n}×${x.cols}, lm_head ${V}×${d}, out ${out.rows}×${out.cols} do not fit`,
    );
  }
  if (vocabRows >= V) return gemmInto(x, lmHead, out, { transB: true });
  const part = zerosLike(out.data, n, vocabRows); // n×vc, reused
  for (let v0 = 0; v0 < V; v0 += vocabRows) {
    const vc = Math.min(vocabRows, V - v0);
    const p: Matrix<T> = { rows: n, cols: vc, data: part.data.subarray(0, n * vc) as T };
    gemmInto(x, rowsOf(lmHead, v0, vc), p, { transB: true });
    for (let i = 0; i < n; i++) out.data.set(p.data.subarray(i * vc, (i + 1) * vc), i * V + v0);
  }
  return out;
}

/**
 * dx (n×d) = g (n×V) · lm_head (V×d), `vocabRows` rows of lm_head per product (default {@link headChunkRows}),
 * accumulated chunk after chunk (float32 sums in another order than one product: equal to rounding).
 */
export function headBackward<T extends FloatArray>(
  g: Matrix<T>,
  lmHead: Matrix<T>,
  vocabRows: number = headChunkRows(lmHead.cols),
): Matrix<T> {
  const V = lmHead.rows, d = lmHead.cols, n = g.rows;
  if (g.cols !== V) throw new ShapeError(`head backward: g is ${n}×${g.cols}, lm_head ${V}×${d}`);
  const dx = zerosLike(g.data, n, d);
  if (vocabRows >= V) return gemmInto(g, lmHead, dx);
  const part = zerosLike(g.data, n, vocabRows); // n×vc, reused
  for (let v0 = 0; v0 < V; v0 += vocabRows) {
    const vc = Math.min(vocabRows, V - v0);
    const p: Matrix<T> = { rows: n, cols: vc, data: part.data.subarray(0, n * vc) as T };
    for (let i = 0; i < n; i++) p.data.set(g.data.subarray(i * V + v0, i * V + v0 + vc), i * vc);
    gemmInto(p, rowsOf(lmHead, v0, vc), dx, { beta: v0 === 0 ? 0 : 1 });
  }
  return dx;
}

/** Rows [r0, r0+n) of m, without a copy. */
function rowsOf<T extends FloatArray>(m: Matrix<T>, r0: number, n: number): Matrix<T> {
  return { rows: n, cols: m.cols, data: m.data.subarray(r0 * m.cols, (r0 + n) * m.cols) as T };
}

/** What {@link headLossBackward} returns. */
export interface HeadLoss<T extends FloatArray> {
  /** Σ over predicted rows of −log p(target) (natural log). */
  nllSum: number;
  /** Σ over predicted rows of KL(p_ref ‖ p), 0 without a reference. */
  klSum: number;
  /** Rows with a target (≥ 0). */
  count: number;
  /** dL/dh (tokens×d) for L = (nllSum + klWeight·klSum)·scale. */
  dh: Matrix<T>;
}

/** Options of {@link headLossBackward}. */
export interface HeadLossOptions<T extends FloatArray> {
  /** Multiplies the whole loss (e.g. 1/tokens for a mean); default 1. */
  scale?: number;
  /** Logits of the reference model for rows [row0, row0+rows): rows×vocab. */
  reference?: (row0: number, rows: number) => Matrix<T>;
  /** Weight of the KL term (default 1 with a reference). */
  klWeight?: number;
  /** Weight of the next-token cross-entropy (default 1). */
  nllWeight?: number;
  /** Rows of logits at once (default {@link lossChunkRows}). */
  chunkRows?: number;
  /** Rows of lm_head per product (default {@link headChunkRows}; ≥ vocab: one product). */
  vocabRows?: number;
}

/**
 * Next-token cross-entropy (and KL(p_ref ‖ p) to reference logits) at the head, with its gradient dL/dh:
 * logits = RMSNorm(h)·lm_headᵀ, computed a chunk of rows at a time ({@link lossChunkRows}) so that a large
 * vocabulary never holds all its logits, each product over a chunk of lm_head's rows ({@link headChunkRows}) so
 * that the kernels never copy all of lm_head. `targets[r] < 0`: row r predicts nothing (no loss, zero gradient).
 * d(nll)/dlogits = p − onehot, d(KL)/dlogits = p − p_ref.
 */
export function headLossBackward<T extends FloatArray>(
  spec: LlamaSpec,
  head: GradHead<T>,
  h: Matrix<T>,
  targets: Int32Array,
  opts: HeadLossOptions<T> = {},
): HeadLoss<T> {
  if (targets.length !== h.rows) throw new ShapeError(`loss: ${targets.length} targets for ${h.rows} rows`);
  const V = head.lmHead.rows, d = h.cols, step = opts.chunkRows ?? lossChunkRows(V), scale = opts.scale ?? 1;
  const vocabRows = opts.vocabRows ?? headChunkRows(head.lmHead.cols);
  const wNll = opts.nllWeight ?? 1, wKl = opts.reference ? (opts.klWeight ?? 1) : 0;
  const dh = zerosLike(h.data, h.rows, d);
  // One logits buffer for every chunk: a fresh chunk.rows×V array per chunk is garbage the collector is slow to
  // free (at vocab 32000, 16 MB a chunk), and it set the peak of a SoCo step.
  const buf = zerosLike(h.data, Math.min(step, h.rows), V).data;
  let nllSum = 0, klSum = 0, count = 0;
  for (let r0 = 0; r0 < h.rows; r0 += step) {
    const n = Math.min(step, h.rows - r0);
    const hc: Matrix<T> = { rows: n, cols: d, data: h.data.subarray(r0 * d, (r0 + n) * d) as T };
    const normed = rmsnormForward(hc, head.norm, spec.rmsNormEps); // n×d
    const logits: Matrix<T> = { rows: n, cols: V, data: buf.subarray(0, n * V) as T }; // becomes dL/dlogits
    headLogitsInto(normed, head.lmHead, logits, vocabRows);
    const ref = wKl ? opts.reference!(r0, n) : undefined;
    if (ref && (ref.rows !== n || ref.cols !== V)) {
      throw new ShapeError(`loss: reference logits are ${ref.rows}×${ref.cols}, expected ${n}×${V}`);
    }
    const l = logits.data;
    for (let i = 0; i < n; i++) {
      const tgt = targets[r0 + i], o = i * V;
      if (tgt < 0) {
        l.fill(0, o, o + V);
        continue;
      }
      count++;
      const lse = logSumExp(l, o, V);
      nllSum += lse - l[o + tgt];
      const lseRef = ref ? logSumExp(ref.data, o, V) : 0;
      for (let j = 0; j < V; j++) {
        const lp = l[o + j] - lse, p = Math.exp(lp);
        let g = wNll * p;
        if (ref) {
          const lq = ref.data[o + j] - lseRef, pr = Math.exp(lq);
          if (pr > 0) klSum += pr * (lq - lp);
          g += wKl * (p - pr);
        }
        l[o + j] = g * scale;
      }
      l[o + tgt] -= wNll * scale;
    }
    const dn = headBackward(logits, head.lmHead, vocabRows); // n×d
    dh.data.set(rmsnormBackward(hc, head.norm, spec.rmsNormEps, dn).data, r0 * d);
  }
  return { nllSum, klSum, count, dh };
}

/** log Σ exp(a[off..off+n)) in float64, stable (NaN when a value is NaN, +Inf when one is +Inf). */
export function logSumExp(a: FloatArray, off: number, n: number): number {
  let max = -Infinity;
  for (let j = 0; j < n; j++) if (a[off + j] > max || a[off + j] !== a[off + j]) max = a[off + j];
  if (!Number.isFinite(max)) return max;
  let s = 0;
  for (let j = 0; j < n; j++) s += Math.exp(a[off + j] - max);
  return max + Math.log(s);
}
