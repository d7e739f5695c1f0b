/**
 * SVD-LLM (Wang et al., arXiv 2403.07378): truncation-aware data whitening.
 *
 * With G = (1/T)·Σ x xᵀ the mean Gram matrix of a layer's inputs and G = L Lᵀ its Cholesky factorisation,
 * truncate the SVD of W L = U Σ Vᵀ and fold L back:
 *
 *   A = U_k Σ_k^½,   B = Σ_k^½ V_kᵀ L⁻¹   (a triangular solve, never an explicit inverse).
 *
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
import { matmul64 } from "../linalg/gemm.ts";
import type { FloatArray, Matrix, Matrix64 } from "../linalg/matrix.ts";
import { toFloat64 } from "../linalg/matrix.ts";
import { svd } from "../linalg/svd.ts";
import { solveTriangular } from "../linalg/triangular.ts";
import {
  checkWeight,
  type Factors,
  leftFactor,
  rightFactor64,
  since,
  tailEnergy,
  toF32Checked,
} from "./factors.ts";

/** Activation statistics of one layer for SVD-LLM. */
export interface SvdLlmStats {
  /** Mean Gram matrix of the inputs, (1/T)·XᵀX, in×in (from {@link GramObserver}). */
  gram: Matrix64;
  /**
   * Its Cholesky factorisation, when already computed for another linear reading the same inputs (q/k/v,
   * gate/up): reused instead of factoring again.
   */
  cholesky?: CholeskyResult;
}

/** Options of {@link compressSvdLlm}. */
export interface SvdLlmOptions {
  /** Cholesky damping (default "auto": shift only when needed, see `cholesky`). */
  damping?: "none" | "auto" | number;
}

/**
 * SVD-LLM factors of `w: out×in` at rank k from the inputs' mean Gram matrix `stats.gram: in×in`.
 * Returns `a: out×k`, `b: k×in` and a report with the predicted loss and the Cholesky shift.
 * Throws ShapeError on mismatched shapes, NumericError on non-finite input or a Gram matrix damping cannot
 * repair.
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
  const m = w.rows, n = w.cols, g = stats.gram;
  if (!g || g.rows !== n || g.cols !== n) {
    throw new ShapeError(
      `svdllm compress: Gram matrix is ${g?.rows}×${g?.cols}, the weight ${m}×${n} needs ${n}×${n}`,
    );
  }
  const { factor: l, shift, tries } = stats.cholesky ?? cholesky(g, { damping: opts.damping ?? "auto" });
  if (l.rows !== n) {
    throw new ShapeError(
      `svdllm compress: Cholesky factor is ${l.rows}×${l.cols}, the weight needs ${n}×${n}`,
    );
  }
  const wl = matmul64(toFloat64(w), l); // m×n
  const { u, s, vt } = svd(wl);
  const a = leftFactor(u, s, rank);
  // B·L = Σ_k^½ V_kᵀ  ⇒  B = Σ_k^½ V_kᵀ L⁻¹, solved from the right.
  const b64 = solveTriangular(l, rightFactor64(vt, s, rank), { lower: true, side: "right" });
  const { tail, total } = tailEnergy(s, rank);
  return {
    a,
    b: toF32Checked(b64, "svdllm compress"),
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
