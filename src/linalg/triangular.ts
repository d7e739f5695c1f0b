/**
 * Triangular solves with many right-hand sides: op(T)·X = B (left) or X·op(T) = B (right), T lower or upper
 * triangular, op(T) = T or Tᵀ. Used to apply L⁻¹ (SVD-LLM's B = Σ½ Vᵀ L⁻¹) without forming an inverse.
 *
 * @module
 */
import { NumericError, ShapeError } from "../errors.ts";
import { checkFinite, checkSquare, gemm64 } from "./factor_kernels.ts";
import type { Matrix64 } from "./matrix.ts";
import { transpose } from "./matrix.ts";

/** Options of {@link solveTriangular}. */
export interface SolveTriangularOptions {
  /** T is lower triangular (else upper). Only that triangle of T is read. */
  lower: boolean;
  /** Solve with Tᵀ instead of T. */
  transpose?: boolean;
  /** "left" (default): op(T)·X = B; "right": X·op(T) = B. */
  side?: "left" | "right";
}

/** Diagonal blocks of this size are solved by substitution; the rest of the work is matrix products. */
const BLOCK = 64;

/**
 * Solve a triangular system. Shapes: `t: n×n`; left: `b: n×k` → X n×k; right: `b: k×n` → X k×n.
 * Throws NumericError on a zero diagonal entry of T or non-finite input, ShapeError on mismatched shapes.
 *
 * @example
 * ```ts
 * import { solveTriangular } from "./triangular.ts";
 * import { matrix64 } from "./matrix.ts";
 * const l = matrix64(2, 2, new Float64Array([2, 0, 1, 1]));
 * const x = solveTriangular(l, matrix64(2, 1, new Float64Array([2, 3])), { lower: true }); // [1, 2]
 * ```
 */
export function solveTriangular(t: Matrix64, b: Matrix64, opts: SolveTriangularOptions): Matrix64 {
  checkSquare(t, "solveTriangular");
  const n = t.rows;
  const side = opts.side ?? "left";
  if (side !== "left" && side !== "right") {
    throw new ShapeError(`solveTriangular: side must be "left" or "right", got ${String(side)}`);
  }
  const need = side === "left" ? b.rows : b.cols;
  if (need !== n) {
    throw new ShapeError(
      `solveTriangular: T is ${n}×${n} but B is ${b.rows}×${b.cols} (${side} side needs ${
        side === "left" ? "rows" : "cols"
      } = ${n})`,
    );
  }
  checkFinite(t, "solveTriangular (T)");
  checkFinite(b, "solveTriangular (B)");
  for (let i = 0; i < n; i++) {
    const v = t.data[i * n + i];
    if (v === 0) throw new NumericError(`solveTriangular: T (${n}×${n}) has a zero on the diagonal at ${i}`);
  }
  // op(T)·X = B in terms of an "effectively lower" solve: op(T) lower ⇔ lower xor transpose.
  if (side === "left") return solveLeft(t, b, opts.lower, !!opts.transpose);
  // X·op(T) = B ⇔ op(T)ᵀ·Xᵀ = Bᵀ.
  return transpose(solveLeft(t, transpose(b), opts.lower, !opts.transpose));
}

/** op(T)·X = B for X, blocked: substitution on diagonal blocks, products for the coupling blocks. */
function solveLeft(t: Matrix64, b: Matrix64, lower: boolean, trans: boolean): Matrix64 {
  const n = t.rows, k = b.cols, td = t.data;
  const x = Float64Array.from(b.data);
  // op(T)[i][j]
  const at = trans ? (i: number, j: number) => td[j * n + i] : (i: number, j: number) => td[i * n + j];
  const opLower = lower !== trans;
  const blocks: [number, number][] = [];
  for (let s = 0; s < n; s += BLOCK) blocks.push([s, Math.min(n, s + BLOCK)]);
  if (!opLower) blocks.reverse();
  for (let bi = 0; bi < blocks.length; bi++) {
    const [s, e] = blocks[bi];
    // Diagonal block: substitution, rows in dependency order.
    for (let q = 0; q < e - s; q++) {
      const i = opLower ? s + q : e - 1 - q;
      const xi = i * k;
      const j0 = opLower ? s : i + 1, j1 = opLower ? i : e;
      for (let j = j0; j < j1; j++) {
        const c = at(i, j);
        if (c === 0) continue;
        const xj = j * k;
        for (let c2 = 0; c2 < k; c2++) x[xi + c2] -= c * x[xj + c2];
      }
      const inv = 1 / at(i, i);
      for (let c2 = 0; c2 < k; c2++) x[xi + c2] *= inv;
    }
    // Coupling: rows not yet solved -= op(T)[rest, block]·X[block].
    const r0 = opLower ? e : 0, r1 = opLower ? n : s;
    if (r1 <= r0) continue;
    const coup = new Float64Array((r1 - r0) * (e - s));
    for (let i = r0; i < r1; i++) for (let j = s; j < e; j++) coup[(i - r0) * (e - s) + j - s] = at(i, j);
    const xb = { rows: e - s, cols: k, data: x.subarray(s * k, e * k) };
    const p = gemm64({ rows: r1 - r0, cols: e - s, data: coup }, xb);
    const pd = p.data, off = r0 * k;
    for (let q = 0; q < pd.length; q++) x[off + q] -= pd[q];
  }
  return { rows: n, cols: k, data: x };
}
