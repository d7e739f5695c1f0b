/**
 * SVD-LLM (Wang et al., arXiv 2403.07378): truncation-aware data whitening.
 *
 * With G = (1/T)·Σ x xᵀ the mean Gram matrix of a layer's inputs and G = L Lᵀ its Cholesky factorisation,
 * truncate the SVD of W L = U Σ Vᵀ and fold L back:
 *
 *   A = U_k Σ_k^½,   B = Σ_k^½ V_kᵀ L⁻¹ = Σ_k^{−½} U_kᵀ W
 *
 * (the second form, used here, needs neither L nor a triangular solve after W·L; see {@link compressSvdLlm}).
 * Then (W − AB) L = U_{>k} Σ_{>k} V_{>k}ᵀ, so the layer loss on the calibration inputs is exactly
 * ‖(W − AB) Xᵀ‖_F = √T · sqrt(Σ_{i>k} σ_i²): truncating the smallest singular values of W L is optimal for
 * the data, which is why SVD-LLM beats plain SVD and ASVD.
 *
 * G is often singular (dead channels, fewer tokens than channels): Cholesky retries with a diagonal shift
 * (damping "auto"), and the shift used is reported.
 *
 * Closed-form update ({@link updateA}, paper v1): with B fixed, refit A by least squares on other inputs X'
 * against target outputs Y: A = argmin ‖A B X' − Y‖ = C Bᵀ (B P Bᵀ)⁻¹ with P = X'ᵀX', C = YᵀX'. With the
 * same inputs that built the whitening and Y = W X it is a no-op (B G Bᵀ = Σ_k, W G Bᵀ = U_k Σ_k^{3/2}); it
 * helps when X' are the activations of the already-compressed prefix (the reference's local update).
 *
 * @module
 */
import { NumericError, ShapeError } from "../errors.ts";
import { cholesky, type CholeskyResult } from "../linalg/cholesky.ts";
import { ResidentCholesky } from "../linalg/cholesky_resident.ts";
import { gemmInto, matmul64 } from "../linalg/gemm.ts";
import type { FloatArray, Matrix, Matrix64 } from "../linalg/matrix.ts";
import { toFloat64, transpose } from "../linalg/matrix.ts";
import { eigh } from "../linalg/eigh.ts";
import { qrCompact, qrR } from "../linalg/qr.ts";
import { matmulLowerInto } from "../linalg/trmm.ts";
import { svdPart } from "../linalg/svd.ts";
import { solveTriangular } from "../linalg/triangular.ts";
import { checkWeight, type Factors, since, tailEnergy } from "./factors.ts";

/** Activation statistics of one layer for SVD-LLM. */
export interface SvdLlmStats {
  /** Mean Gram matrix of the inputs, (1/T)·XᵀX, in×in (from {@link GramObserver}); unused with `cholesky`. */
  gram?: Matrix64;
  /**
   * Its Cholesky factorisation, when already computed for another linear reading the same inputs (q/k/v,
   * gate/up): reused instead of factoring again. On the host, or in wasm memory as `GramObserver.cholesky`
   * leaves it ({@link ResidentCholesky}: disposed here when `release`).
   */
  cholesky?: CholeskyResult | ResidentCholesky;
  /**
   * The caller keeps no other reference to `gram` and `cholesky`: {@link compressSvdLlm} deletes them from
   * this object as soon as it has used them (the Gram after its Cholesky, the factor after W·L; a resident
   * factor's wasm memory is freed then), so that the two in×in float64 matrices can be collected before the
   * SVD runs. Default false.
   */
  release?: boolean;
}

/** Options of {@link compressSvdLlm}. */
export interface SvdLlmOptions {
  /** Cholesky damping (default "auto": shift only when needed, see `cholesky`). */
  damping?: "none" | "auto" | number;
  /**
   * Called between the phases (after W·L, after the QR, after the SVD), when the previous phase's float64
   * temporaries have become unreachable: a garbage collection here (the pipeline passes one) frees them before
   * the next phase allocates, so the phases' working sets do not pile up (with `stats.release`, the Cholesky
   * factor too). Only for weights of at least 2²¹ values, where a collection's milliseconds buy tens of MB.
   * Does not change the result.
   */
  collect?: () => void;
}

/** Rows of W (or columns of B) per float64 block: bounds the float64 copies to a few MB. */
const BLOCK_ROWS = 256;

/** {@link SvdLlmOptions.collect} is called only for weights of at least this many values (float64 W·L: 16 MiB). */
const COLLECT_MIN_VALUES = 1 << 21;

/**
 * SVD-LLM factors of `w: out×in` at rank k from the inputs' mean Gram matrix `stats.gram: in×in` (or its
 * Cholesky factor `stats.cholesky`). Returns `a: out×k`, `b: k×in` and a report with the predicted loss and
 * the Cholesky shift. Throws ShapeError on mismatched shapes, NumericError on non-finite input or a Gram
 * matrix damping cannot repair.
 *
 * Memory: W stays float32; W·L is formed in blocks of rows (float64 only per block), and L is not needed
 * after it, because B = Σ_k^½ V_kᵀ L⁻¹ = Σ_k^{−½} U_kᵀ W (multiply W·L = U Σ Vᵀ by U_kᵀ on the left). So the
 * float64 working set is L while W·L is formed, then W·L and its SVD; with `stats.release` the Gram matrix
 * and L can be collected before the SVD. This form also needs no triangular solve: A·B = U_k U_kᵀ W, the
 * projection of W onto the top-k left singular vectors of W·L, whose data loss is the tail of the
 * spectrum up to rounding of the order of ε·‖W·L‖ (whatever the conditioning of L).
 *
 * @example
 * ```ts ignore
 * import { compressSvdLlm } from "./svdllm.ts";
 * const { a, b, report } = compressSvdLlm(w, { gram: observer.gram() }, 32);
 * report.predictedLoss; // sqrt(Σ_{i>k} σ_i²(W·L))
 * ```
 */
export function compressSvdLlm(
  w: Matrix<FloatArray>,
  stats: SvdLlmStats,
  rank: number,
  opts: SvdLlmOptions = {},
): Factors {
  const t0 = performance.now();
  checkWeight(w, rank, "svdllm compress");
  const m = w.rows, n = w.cols;
  // Collections cost milliseconds each: only worth it when the phases' temporaries are large.
  const collect = m * n >= COLLECT_MIN_VALUES ? opts.collect : undefined;
  const h: { wl?: Matrix64; shift: number; tries: number } = whiten(w, stats, opts);
  const { shift, tries } = h;
  collect?.(); // with `release`, L (and the Gram) are unreachable now
  const { ukt, s } = leftVectors(h, m > n, rank, collect); // U_kᵀ (k×m) and σ of W·L; drops h.wl
  collect?.(); // the QR's and SVD's factors
  const a = leftFactor(ukt, s, rank);
  const b = projectRows(w, ukt, s, rank);
  const { tail, total } = tailEnergy(s, rank);
  return {
    a,
    b,
    report: {
      method: "svdllm",
      rank,
      rows: m,
      cols: n,
      singularValues: s,
      energyKept: total > 0 ? 1 - tail / total : 1,
      predictedLoss: Math.sqrt(tail),
      relativeLoss: total > 0 ? Math.sqrt(tail / total) : 0,
      shift,
      tries,
      seconds: since(t0),
    },
  };
}

/**
 * The whitened weight W·L (m×n) for m > n, or its transpose (W·L)ᵀ (n×m) for m ≤ n, in float64, formed in
 * blocks of rows of W. Releases `stats.gram` / `stats.cholesky` when `stats.release`.
 */
function whiten(
  w: Matrix<FloatArray>,
  stats: SvdLlmStats,
  opts: SvdLlmOptions,
): { wl: Matrix64; shift: number; tries: number } {
  const m = w.rows, n = w.cols;
  let chol = stats.cholesky;
  if (!chol) {
    const g = stats.gram;
    if (!g || g.rows !== n || g.cols !== n) {
      throw new ShapeError(
        `svdllm compress: Gram matrix is ${g?.rows}×${g?.cols}, the weight ${m}×${n} needs ${n}×${n}`,
      );
    }
    chol = cholesky(g, { damping: opts.damping ?? "auto" });
  }
  if (stats.release) delete stats.gram;
  const resident = chol instanceof ResidentCholesky ? chol : undefined;
  const l = resident ? undefined : (chol as CholeskyResult).factor;
  const order = resident ? resident.n : l!.rows;
  if (order !== n || (l && l.cols !== n)) {
    throw new ShapeError(
      `svdllm compress: Cholesky factor is ${order}×${l?.cols ?? order}, the weight needs ${n}×${n}`,
    );
  }
  const tall = m > n; // a square W·L is factored transposed too: U_k are then right vectors (see leftVectors)
  const out = new Float64Array(m * n);
  const wd = w.data;
  // One block buffer for W and one for the product, reused (fresh ones per block would be garbage piling up
  // until the next collection); a tall product is written straight into `out`. Blocks of BLOCK_ROWS·1024
  // values (multiples of 8 rows, so the kernel's row tiles are the same as with any other such blocking):
  // wasm memory holds L plus two blocks, and never shrinks.
  const step = Math.max(8, Math.floor((BLOCK_ROWS * 1024) / n / 8) * 8);
  const br = Math.min(step, m);
  const wbuf = new Float64Array(br * n), pbuf = tall ? undefined : new Float64Array(br * n);
  for (let r0 = 0; r0 < m; r0 += step) {
    const rows = Math.min(step, m - r0);
    const wb: Matrix64 = { rows, cols: n, data: wbuf.subarray(0, rows * n) };
    wb.data.set(wd.subarray(r0 * n, (r0 + rows) * n));
    const p = tall ? out.subarray(r0 * n, (r0 + rows) * n) : pbuf!.subarray(0, rows * n);
    // rows×n block of W·L (a resident L stays in wasm memory: the same product without copying L in;
    // a heap L is lower triangular, so only its lower half is multiplied)
    if (resident) resident.mulInto(wb, { rows, cols: n, data: p });
    else matmulLowerInto(wb, l!, { rows, cols: n, data: p });
    if (!tall) {
      for (let i = 0; i < rows; i++) for (let j = 0; j < n; j++) out[j * m + r0 + i] = p[i * n + j];
    }
  }
  if (stats.release) {
    delete stats.cholesky;
    resident?.dispose();
  }
  return {
    wl: tall ? { rows: m, cols: n, data: out } : { rows: n, cols: m, data: out },
    shift: chol.shift,
    tries: chol.tries,
  };
}

/**
 * U_kᵀ (k×m) and the singular values of W·L, from `h.wl` = T, which is W·L (`tall`: m > n) or (W·L)ᵀ. Only
 * U_k is formed (`svdPart`): with T = (W·L)ᵀ, U_k holds T's leading right singular vectors, whose divide and
 * conquer needs no left vectors at all. A clearly tall T is first reduced to its square R factor (T = Q·R, as
 * `svd` does): for (W·L)ᵀ = Q·R = Q·U_R Σ V_Rᵀ, U_kᵀ of W·L is the first k rows of V_Rᵀ and Q is never formed;
 * for W·L, U_k = Q·U_R[:, :k], with U_R's columns the right vectors of Rᵀ and Q applied to those k columns
 * as reflectors (`qrCompact`), never formed either. T is dropped as soon as it is factored.
 */
function leftVectors(
  h: { wl?: Matrix64 },
  tall: boolean,
  k: number,
  collect?: () => void,
): { ukt: Matrix64; s: Float64Array } {
  // No local holds T: `h.wl` is its only reference, so that it can be collected once factored.
  const { rows, cols } = h.wl!;
  if (rows < 1.5 * cols || cols < 8) {
    const f = svdPart(h.wl!, tall ? { left: k } : { right: k });
    delete h.wl;
    return { ukt: tall ? transpose(f.u!) : f.vt!, s: f.s };
  }
  if (!tall) {
    const parts: { r?: Matrix64 } = { r: qrR(h.wl!) };
    delete h.wl;
    collect?.();
    return rightOf(parts, k);
  }
  // The reflectors of Q are held by `c` only.
  const c = qrCompact(h.wl!);
  delete h.wl;
  collect?.();
  const { ukt: urt, s } = rightOf({ r: transpose(c.r) }, k); // U_R,kᵀ (k×n)
  collect?.(); // Rᵀ's SVD temporaries
  return { ukt: c.qTimesT(urt), s };
}

/**
 * All singular values of `parts.r` (which it drops) and its first k right singular vectors; a function of its
 * own so that the SVD's temporaries die with it.
 */
function rightOf(parts: { r?: Matrix64 }, k: number): { ukt: Matrix64; s: Float64Array } {
  const f = svdPart(parts.r!, { right: k });
  delete parts.r;
  return { ukt: f.vt!, s: f.s };
}

/**
 * Directions whose singular value is below this fraction of the largest carry no energy worth keeping:
 * their A column and B row are set to zero rather than split as σ^{±½} (which could overflow float32).
 */
const NEGLIGIBLE = 1e-30;

/** A = U_k Σ_k^½ (m×k, float32) from `ut: k×m` = U_kᵀ. */
function leftFactor(ut: Matrix64, s: Float64Array, k: number): Matrix {
  const m = ut.cols, a = new Float32Array(m * k);
  for (let j = 0; j < k; j++) {
    const h = s[j] > NEGLIGIBLE * s[0] ? Math.sqrt(s[j]) : 0;
    for (let i = 0; i < m; i++) a[i * k + j] = ut.data[j * m + i] * h;
  }
  return { rows: m, cols: k, data: a };
}

/**
 * B = Σ_k^{−½} U_kᵀ W (k×n, float32) from `ukt: k×m` = U_kᵀ, in blocks of columns of W (float64 per block).
 * Throws NumericError on a value float32 cannot hold.
 */
function projectRows(w: Matrix<FloatArray>, ukt: Matrix64, s: Float64Array, k: number): Matrix {
  const m = w.rows, n = w.cols, wd = w.data;
  const b = new Float32Array(k * n);
  const inv = new Float64Array(k);
  for (let j = 0; j < k; j++) inv[j] = s[j] > NEGLIGIBLE * s[0] ? 1 / Math.sqrt(s[j]) : 0;
  const cb = Math.min(n, BLOCK_ROWS);
  const blk = new Float64Array(m * cb), pbuf = new Float64Array(k * cb);
  for (let c0 = 0; c0 < n; c0 += cb) {
    const cols = Math.min(cb, n - c0);
    for (let i = 0; i < m; i++) {
      const src = i * n + c0, dst = i * cols;
      for (let c = 0; c < cols; c++) blk[dst + c] = wd[src + c];
    }
    const p = pbuf.subarray(0, k * cols); // k×cols
    gemmInto(ukt, { rows: m, cols, data: blk.subarray(0, m * cols) }, { rows: k, cols, data: p });
    for (let j = 0; j < k; j++) {
      const h = inv[j], src = j * cols, dst = j * n + c0;
      for (let c = 0; c < cols; c++) {
        const v = p[src + c] * h;
        b[dst + c] = v;
        if (!Number.isFinite(b[dst + c])) {
          throw new NumericError(`svdllm compress: factor value ${v} is not representable in float32`);
        }
      }
    }
  }
  return { rows: k, cols: n, data: b };
}

/** Statistics for {@link updateA}: inputs X' (T×in) and targets Y (T×out), as means over T. */
export interface UpdateStats {
  /** P = (1/T)·X'ᵀX', in×in. */
  gram: Matrix64;
  /** C = (1/T)·YᵀX', out×in. For targets Y = X'Wᵀ (the original layer on the new inputs), C = W·P. */
  cross: Matrix64;
}

/** Result of {@link updateA}. */
export interface UpdateResult {
  /** The refitted A, out×k. */
  a: Matrix;
  /** Shift added to B P Bᵀ before its Cholesky (0 if none). */
  shift: number;
}

/**
 * Closed-form least-squares refit of A with B fixed: A = C Bᵀ (B P Bᵀ)⁻¹, solved through a Cholesky of the
 * k×k matrix B P Bᵀ (damped "auto" if singular). `b: k×in`; `stats.gram: in×in`; `stats.cross: out×in`.
 *
 * @example
 * ```ts ignore
 * import { crossFromLayer, updateA } from "./svdllm.ts";
 * const p = gramOfCompressedPrefixInputs; // in×in
 * const { a } = updateA(b, { gram: p, cross: crossFromLayer(w, p) });
 * ```
 */
export function updateA(b: Matrix<FloatArray>, stats: UpdateStats): UpdateResult {
  const k = b.rows, n = b.cols, { gram: p, cross: c } = stats;
  if (p.rows !== n || p.cols !== n) {
    throw new ShapeError(
      `svdllm update: Gram matrix is ${p.rows}×${p.cols}, B is ${k}×${n}: needs ${n}×${n}`,
    );
  }
  if (c.cols !== n) {
    throw new ShapeError(`svdllm update: cross statistic is ${c.rows}×${c.cols}, needs out×${n}`);
  }
  const b64 = toFloat64(b);
  const bp = matmul64(b64, p); // k×n
  const m = matmul64(bp, b64, { transB: true }); // k×k = B P Bᵀ
  const { factor: r, shift } = cholesky(m, { damping: "auto" });
  const bct = matmul64(b64, c, { transB: true }); // k×out = B Cᵀ
  // Aᵀ = (R Rᵀ)⁻¹ B Cᵀ: two triangular solves.
  const y = solveTriangular(r, bct, { lower: true });
  const at = solveTriangular(r, y, { lower: true, transpose: true }); // k×out
  const a = new Float32Array(c.rows * k);
  for (let i = 0; i < k; i++) for (let o = 0; o < c.rows; o++) a[o * k + i] = at.data[i * c.rows + o];
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) throw new NumericError(`svdllm update: refitted A has a non-finite value`);
  }
  return { a: { rows: c.rows, cols: k, data: a }, shift };
}

/** C = W·P: the cross statistic when the target is the original layer applied to the new inputs. */
export function crossFromLayer(w: Matrix<FloatArray>, p: Matrix64): Matrix64 {
  if (w.cols !== p.rows) {
    throw new ShapeError(`svdllm update: weight ${w.rows}×${w.cols} vs Gram ${p.rows}×${p.cols}`);
  }
  return matmul64(toFloat64(w), p);
}

/**
 * Layer loss per token on inputs with mean Gram `g`: sqrt(tr((W − AB) G (W − AB)ᵀ)) = ‖(W − AB)Xᵀ‖_F / √T.
 * For SVD-LLM's own G this equals the report's predictedLoss (when no shift was needed).
 */
export function layerLoss(
  w: Matrix<FloatArray>,
  a: Matrix<FloatArray>,
  b: Matrix<FloatArray>,
  g: Matrix64,
): number {
  const m = w.rows, n = w.cols;
  if (a.rows !== m || b.cols !== n || a.cols !== b.rows || g.rows !== n || g.cols !== n) {
    throw new ShapeError(
      `layer loss: W ${m}×${n}, A ${a.rows}×${a.cols}, B ${b.rows}×${b.cols}, G ${g.rows}×${g.cols} do not fit`,
    );
  }
  const e = matmul64(toFloat64(a), toFloat64(b)); // m×n = AB
  for (let i = 0; i < e.data.length; i++) e.data[i] = w.data[i] - e.data[i];
  const eg = matmul64(e, g);
  let s = 0;
  for (let i = 0; i < e.data.length; i++) s += e.data[i] * eg.data[i];
  return Math.sqrt(Math.max(0, s));
}

/**
 * SVD-LLM's truncation loss split by component, before any factorisation: the squared singular values of
 * W·L (G = L Lᵀ the mean Gram of the inputs, in×in), descending, so the mean squared output error per token
 * of the rank-k factors is Σ_{j ≥ k} σ_j². They are the eigenvalues of W G Wᵀ (m×m), or of Lᵀ WᵀW L (n×n)
 * when the input side is the narrower (then G is factored, damped as {@link cholesky} does when singular).
 * Throws ShapeError on mismatched sizes.
 */
export function whitenedComponentLosses(w: Matrix<FloatArray>, g: Matrix64): Float64Array {
  if (g.rows !== w.cols || g.cols !== w.cols) {
    throw new ShapeError(`svdllm component losses: weight ${w.rows}×${w.cols} vs Gram ${g.rows}×${g.cols}`);
  }
  const w64 = toFloat64(w);
  let c: Matrix64;
  if (w.rows <= w.cols) c = matmul64(matmul64(w64, g), w64, { transB: true });
  else {
    const l = cholesky(g).factor;
    c = matmul64(l, matmul64(matmul64(w64, w64, { transA: true }), l), { transA: true });
  }
  return eigh(c).values.map((v) => Math.max(0, v));
}
