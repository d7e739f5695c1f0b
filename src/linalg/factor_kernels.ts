/**
 * Internal float64 building blocks of the factorisations (not part of the public API): the checks every
 * factorisation starts with, the product {@link gemm64}, Householder reflectors and plane rotations in
 * TypeScript, and {@link Workspace}, which places a factorisation's arrays in WASM memory and runs the same
 * operations through the SIMD kernels of `wasm/factor.c` (and `dgemm`) when the WASM backend is active.
 * Every operation has a TypeScript twin with the same semantics, so each algorithm is written once.
 *
 * @module
 */
import { NumericError, ShapeError } from "../errors.ts";
import { matmul64 } from "./gemm.ts";
import type { FloatArray, Matrix, Matrix64 } from "./matrix.ts";
import { toFloat64 } from "./matrix.ts";
import { activeBackend, activePool } from "./backend.ts";
import type { Job, ThreadPool } from "./threads/pool.ts";
import { type Kernel, type WasmRuntime, wasmRuntime } from "./wasm/runtime.ts";
import { gemmWasmAt, THREAD_MIN_WORK } from "./wasm/gemm_wasm.ts";

/** Options of {@link gemm64}. */
export interface Gemm64Options {
  /** Use Aᵀ. */
  transA?: boolean;
  /** Use Bᵀ. */
  transB?: boolean;
  /** Force the TypeScript path (tests compare both). */
  ts?: boolean;
}

/** Whether the WASM float64 kernels are loaded. */
export function hasWasm64(): boolean {
  const rt = wasmRuntime();
  return rt !== null && rt.has("dgemm");
}

/**
 * C = op(A)·op(B) in float64 through {@link matmul64} (WASM DGEMM, threads when enabled). Float32 operands
 * are widened first. Shapes: op(A) m×k, op(B) k×n → C m×n.
 */
export function gemm64(a: Matrix<FloatArray>, b: Matrix<FloatArray>, opts: Gemm64Options = {}): Matrix64 {
  return matmul64(toF64(a), toF64(b), {
    transA: opts.transA,
    transB: opts.transB,
    ...(opts.ts ? { backend: "ts" as const } : {}),
  });
}

function toF64(m: Matrix<FloatArray>): Matrix64 {
  return m.data instanceof Float64Array ? m as Matrix64 : toFloat64(m);
}

/** Throw a {@link NumericError} naming `op` if any value is NaN or ±Inf. */
export function checkFinite(m: Matrix<FloatArray>, op: string): void {
  const d = m.data;
  for (let i = 0; i < d.length; i++) {
    if (!Number.isFinite(d[i])) {
      throw new NumericError(
        `${op}: input ${m.rows}×${m.cols} has non-finite value ${d[i]} at (${Math.floor(i / m.cols)}, ${
          i % m.cols
        })`,
      );
    }
  }
}

/** Throw a {@link ShapeError} naming `op` unless `m` is square. */
export function checkSquare(m: Matrix<FloatArray>, op: string): void {
  if (m.rows !== m.cols) throw new ShapeError(`${op}: needs a square matrix, got ${m.rows}×${m.cols}`);
  if (m.data.length !== m.rows * m.cols) {
    throw new ShapeError(`${op}: ${m.rows}×${m.cols} matrix has ${m.data.length} values`);
  }
}

/**
 * √(x² + y²) without overflow or underflow: the plain formula where the squares are safe (V8's Math.hypot
 * is several times slower, and bulge chasing calls this twice per step), Math.hypot elsewhere.
 */
export function hypot(x: number, y: number): number {
  const m = Math.max(Math.abs(x), Math.abs(y));
  if (m > 1e-150 && m < 1e150) return Math.sqrt(x * x + y * y);
  return Math.hypot(x, y);
}

/** Smallest x with 1/x finite, over ε (LAPACK dlamch('S')/dlamch('E')): below it a reflector is rescaled. */
const SAFMIN = 2.2250738585072014e-308 / 2.220446049250313e-16;

/** ‖x[off+stride], …, x[off+(len−1)·stride]‖₂ without overflow or underflow (scaled sum of squares). */
function tailNorm(x: Float64Array, off: number, stride: number, len: number): number {
  let scale = 0;
  for (let i = 1; i < len; i++) scale = Math.max(scale, Math.abs(x[off + i * stride]));
  if (scale === 0) return 0;
  let ss = 0;
  for (let i = 1; i < len; i++) {
    const v = x[off + i * stride] / scale;
    ss += v * v;
  }
  return scale * Math.sqrt(ss);
}

/**
 * Householder reflector of `x[off], x[off+stride], …` (len values), LAPACK dlarfg convention:
 * H = I − tau·v·vᵀ with v[0] = 1 and H·x = beta·e₁. Writes v[1..] back over x[1..] (v[0] is implicit),
 * returns [tau, beta]; tau = 0 when x is already a multiple of e₁. When |beta| is below {@link SAFMIN}
 * (the rounding residue of a rank-deficient matrix decays by ε per step down to subnormals), x is first scaled
 * up as dlarfg does: otherwise 1/(alpha − beta) overflows and the factorisation fills with ±Inf and NaN.
 */
export function householder(x: Float64Array, off: number, stride: number, len: number): [number, number] {
  let alpha = x[off];
  let xnorm = tailNorm(x, off, stride, len);
  if (xnorm === 0) return [0, alpha];
  let beta = -(alpha >= 0 ? 1 : -1) * hypot(alpha, xnorm);
  let knt = 0;
  while (Math.abs(beta) < SAFMIN && knt < 20) {
    knt++;
    for (let i = 1; i < len; i++) x[off + i * stride] /= SAFMIN;
    beta /= SAFMIN;
    alpha /= SAFMIN;
  }
  if (knt > 0) {
    xnorm = tailNorm(x, off, stride, len);
    beta = -(alpha >= 0 ? 1 : -1) * hypot(alpha, xnorm);
  }
  const tau = (beta - alpha) / beta;
  const inv = 1 / (alpha - beta);
  for (let i = 1; i < len; i++) x[off + i * stride] *= inv;
  for (let j = 0; j < knt; j++) beta *= SAFMIN;
  return [tau, beta];
}

/**
 * Apply plane rotations to consecutive rows of a row-major matrix, in order: rotation q acts on rows
 * first+q and first+q+1 (x' = c·x + s·y, y' = −s·x + c·y) over columns [0, len). Column-chunked so a whole
 * sweep of rotations runs over a cache-resident slice.
 */
export function rotateRowsSeq(
  data: Float64Array,
  ld: number,
  len: number,
  first: number,
  c: Float64Array,
  s: Float64Array,
  count: number,
): void {
  const CH = 512;
  for (let j0 = 0; j0 < len; j0 += CH) {
    const j1 = Math.min(len, j0 + CH);
    for (let q = 0; q < count; q++) {
      const cq = c[q], sq = s[q];
      if (sq === 0 && cq === 1) continue;
      const x = (first + q) * ld, y = x + ld;
      for (let j = j0; j < j1; j++) {
        const a = data[x + j], b = data[y + j];
        data[x + j] = cq * a + sq * b;
        data[y + j] = cq * b - sq * a;
      }
    }
  }
}

/** One plane rotation of rows `rx` and `ry` (x' = c·x + s·y, y' = −s·x + c·y) over columns [0, len). */
export function rotateRows(
  data: Float64Array,
  ld: number,
  len: number,
  rx: number,
  ry: number,
  c: number,
  s: number,
) {
  const x = rx * ld, y = ry * ld;
  for (let j = 0; j < len; j++) {
    const a = data[x + j], b = data[y + j];
    data[x + j] = c * a + s * b;
    data[y + j] = c * b - s * a;
  }
}

/**
 * Apply H = I − tau·v·vᵀ from the right to rows [r0, r1) of a row-major matrix, on columns [c0, c0+len):
 * row ← row − tau·(row·v)·vᵀ. `v` is given as v[voff + i·vstride], with v[0] taken as 1.
 */
export function reflectRows(
  data: Float64Array,
  ld: number,
  r0: number,
  r1: number,
  c0: number,
  len: number,
  tau: number,
  v: Float64Array,
): void {
  if (tau === 0) return;
  for (let i = r0; i < r1; i++) {
    const o = i * ld + c0;
    let dot = data[o];
    for (let j = 1; j < len; j++) dot += data[o + j] * v[j];
    if (dot === 0) continue;
    const f = tau * dot;
    data[o] -= f;
    for (let j = 1; j < len; j++) data[o + j] -= f * v[j];
  }
}

/**
 * Apply H = I − tau·v·vᵀ from the left to rows [r0, r0+len) × columns [c0, c1) of a row-major matrix
 * (v[0] = 1 implicit, v[1..] in `v`): w = vᵀ·block, block −= tau·v·w. `w` is scratch of ≥ c1 − c0 values.
 */
export function reflectCols(
  data: Float64Array,
  ld: number,
  r0: number,
  len: number,
  c0: number,
  c1: number,
  tau: number,
  v: Float64Array,
  w: Float64Array,
): void {
  if (tau === 0 || c1 <= c0) return;
  const nc = c1 - c0;
  for (let j = 0; j < nc; j++) w[j] = data[r0 * ld + c0 + j];
  for (let i = 1; i < len; i++) {
    const vi = v[i];
    if (vi === 0) continue;
    const o = (r0 + i) * ld + c0;
    for (let j = 0; j < nc; j++) w[j] += vi * data[o + j];
  }
  for (let j = 0; j < nc; j++) w[j] *= tau;
  for (let i = 0; i < len; i++) {
    const vi = i === 0 ? 1 : v[i];
    if (vi === 0) continue;
    const o = (r0 + i) * ld + c0;
    for (let j = 0; j < nc; j++) data[o + j] -= vi * w[j];
  }
}

/** The exports a {@link Workspace} uses; a build without any of them falls back to TypeScript. */
const KERNELS = [
  "dlarf_right",
  "dlarf_left",
  "drot_rows",
  "drot_sweeps",
  "dgemm",
  "dlarf_left_w",
  "dbidiag_fused",
  "dgemv_n",
  "dgemv_t",
];

/** Element operations below which a kernel call stays on one thread (a hand-off costs tens of µs). */
const PARALLEL_MIN_WORK = 1 << 17;

/**
 * Scratch memory of one factorisation, and the level-2 kernels over it. With the WASM backend the arrays
 * live in WASM memory (one allocation, freed by {@link Workspace.dispose}) and the kernels are the SIMD ones
 * of `wasm/factor.c`; otherwise they are plain arrays and the TypeScript loops above. Arrays handed to the
 * kernels must come from the same workspace. Nothing may allocate WASM memory while a workspace is in use
 * (growth would detach its views): no `matmul64` in between, only {@link Workspace.gemm} on its own arrays.
 */
export class Workspace {
  /** Whether the arrays live in WASM memory. */
  readonly wasm: boolean;
  #rt: WasmRuntime | null;
  #pool: ThreadPool | null;
  #ptr = 0;
  #bytes = 0;
  #used = 0;
  #k: Record<string, Kernel> = {};

  /** Reserve room for `f64` doubles and `i32` ints in total (a few extra for alignment are added). */
  constructor(f64: number, i32 = 0) {
    const rt = wasmRuntime();
    this.wasm = rt !== null && activeBackend() === "wasm" && KERNELS.every((name) => rt.has(name));
    this.#rt = this.wasm ? rt : null;
    this.#pool = this.wasm && rt!.shared ? activePool() : null;
    if (this.#rt) {
      this.#bytes = 8 * f64 + 4 * i32 + 64 * 32;
      this.#ptr = this.#rt.alloc(this.#bytes);
      for (const name of KERNELS) this.#k[name] = this.#rt.fn(name);
    }
  }

  /** Doubles {@link Workspace.gemm} needs as scratch (reserve them in the constructor's count). */
  static gemmScratch(): number {
    const rt = wasmRuntime();
    return rt && rt.has("dgemm_work_size") ? rt.fn("dgemm_work_size")() + 8 : 0;
  }

  #gemmWork: Float64Array | null = null;
  /** Packing scratch of the threads' parts beyond the first (which uses `#gemmWork`), byte offsets. */
  #gemmWorkExtra: number[] = [];

  /**
   * C ← alpha·op(A)·op(B) + beta·C on this workspace's arrays (row-major, leading dimensions lda, ldb, ldc,
   * element offsets ao, bo, co). Shapes: op(A) m×k, op(B) k×n, C m×n.
   */
  gemm(
    ta: boolean,
    tb: boolean,
    m: number,
    n: number,
    k: number,
    alpha: number,
    a: Float64Array,
    ao: number,
    lda: number,
    b: Float64Array,
    bo: number,
    ldb: number,
    beta: number,
    c: Float64Array,
    co: number,
    ldc: number,
  ): void {
    if (m <= 0 || n <= 0) return;
    if (this.#rt) {
      const rt = this.#rt, pool = this.#pool;
      if (!this.#gemmWork) this.#gemmWork = this.f64(rt.fn("dgemm_work_size")());
      const ab = a.byteOffset + 8 * ao, bb = b.byteOffset + 8 * bo, cb = c.byteOffset + 8 * co;
      if (pool && m * n * k >= THREAD_MIN_WORK) {
        // Worth splitting over the threads: one packing scratch per part, allocated once. (This may grow the
        // memory: harmless, a pool implies a shared memory, whose views stay valid.)
        while (this.#gemmWorkExtra.length < pool.size - 1) {
          this.#gemmWorkExtra.push(rt.alloc(8 * rt.fn("dgemm_work_size")()));
        }
        const works = [this.#gemmWork.byteOffset, ...this.#gemmWorkExtra];
        const shape = { transA: ta, transB: tb, m, n, k, alpha, beta, lda, ldb, ldc };
        gemmWasmAt(rt, works, true, { ...shape, a: ab, b: bb, c: cb }, pool);
        return;
      }
      this.#k.dgemm(
        ta ? 1 : 0,
        tb ? 1 : 0,
        m,
        n,
        k,
        alpha,
        ab,
        lda,
        bb,
        ldb,
        beta,
        cb,
        ldc,
        this.#gemmWork.byteOffset,
      );
      return;
    }
    const row = new Float64Array(n);
    for (let i = 0; i < m; i++) {
      row.fill(0);
      for (let p = 0; p < k; p++) {
        const av = ta ? a[ao + p * lda + i] : a[ao + i * lda + p];
        if (av === 0) continue;
        if (tb) { for (let j = 0; j < n; j++) row[j] += av * b[bo + j * ldb + p]; }
        else {
          const bp = bo + p * ldb;
          for (let j = 0; j < n; j++) row[j] += av * b[bp + j];
        }
      }
      const ci = co + i * ldc;
      for (let j = 0; j < n; j++) c[ci + j] = alpha * row[j] + (beta === 0 ? 0 : beta * c[ci + j]);
    }
  }

  /**
   * Apply a block of nb reflectors from the right to rows [r0, r1) × columns [c0, c0+len) of `x`:
   * X ← X·(H_1·…·H_nb)ᵀ = X·(I − Y·Tᵀ·Yᵀ), i.e. H_nb first. `y` holds Y (len×nb row-major, unit lower
   * trapezoidal, zeros above the unit diagonal), `t` the nb×nb upper triangular T of
   * {@link Workspace.blockT}, `tmp` ≥ 2·(r1 − r0)·nb scratch.
   */
  applyBlockRight(
    x: Float64Array,
    ld: number,
    r0: number,
    r1: number,
    c0: number,
    len: number,
    y: Float64Array,
    t: Float64Array,
    nb: number,
    tmp: Float64Array,
  ): void {
    const rows = r1 - r0;
    if (rows <= 0) return;
    // W = X·Y (rows×nb); W2 = W·Tᵀ; X −= W2·Yᵀ.
    this.gemm(false, false, rows, nb, len, 1, x, r0 * ld + c0, ld, y, 0, nb, 0, tmp, 0, nb);
    // T is stored with zeros below its diagonal, so W·Tᵀ is a plain product.
    const w2 = rows * nb;
    this.gemm(false, true, rows, nb, nb, 1, tmp, 0, nb, t, 0, nb, 0, tmp, w2, nb);
    this.gemm(false, true, rows, len, nb, -1, tmp, w2, nb, y, 0, nb, 1, x, r0 * ld + c0, ld);
  }

  /**
   * Apply a block of nb reflectors from the left to rows [r0, r0+len) × columns [c0, c1) of `x`:
   * X ← (H_1·…·H_nb)ᵀ·X = (I − Y·Tᵀ·Yᵀ)·X, i.e. H_1 first. `y` (len×nb) and `t` as for
   * {@link Workspace.applyBlockRight}; `tmp` ≥ 2·nb·(c1 − c0) scratch.
   */
  applyBlockLeft(
    x: Float64Array,
    ld: number,
    r0: number,
    len: number,
    c0: number,
    c1: number,
    y: Float64Array,
    t: Float64Array,
    nb: number,
    tmp: Float64Array,
  ): void {
    const nc = c1 - c0;
    if (nc <= 0) return;
    // W = Yᵀ·X (nb×nc); W2 = Tᵀ·W; X −= Y·W2.
    this.gemm(true, false, nb, nc, len, 1, y, 0, nb, x, r0 * ld + c0, ld, 0, tmp, 0, nc);
    const w2 = nb * nc;
    this.gemm(true, false, nb, nc, nb, 1, t, 0, nb, tmp, 0, nc, 0, tmp, w2, nc);
    this.gemm(false, false, len, nc, nb, -1, y, 0, nb, tmp, w2, nc, 1, x, r0 * ld + c0, ld);
  }

  /**
   * The upper triangular T (nb×nb) with H_1·…·H_nb = I − Y·T·Yᵀ (LAPACK dlarft, forward, columnwise), from
   * Y (len×nb row-major) and the taus; `g` ≥ nb² scratch.
   */
  blockT(
    y: Float64Array,
    len: number,
    nb: number,
    taus: ArrayLike<number>,
    t: Float64Array,
    g: Float64Array,
  ): void {
    this.gemm(true, false, nb, nb, len, 1, y, 0, nb, y, 0, nb, 0, g, 0, nb);
    t.fill(0, 0, nb * nb);
    for (let j = 0; j < nb; j++) {
      const tau = taus[j];
      t[j * nb + j] = tau;
      // T[0:j, j] = −tau·T[0:j, 0:j]·G[0:j, j]
      for (let i = 0; i < j; i++) {
        let acc = 0;
        for (let p = i; p < j; p++) acc += t[i * nb + p] * g[p * nb + j];
        t[i * nb + j] = -tau * acc;
      }
    }
  }

  /** A zeroed float64 array of `len` values. */
  f64(len: number): Float64Array {
    if (!this.#rt) return new Float64Array(len);
    const off = this.#take(len * 8);
    const v = new Float64Array(this.#rt.memory.buffer, off, len);
    v.fill(0);
    return v;
  }

  /** A zeroed int32 array of `len` values. */
  i32(len: number): Int32Array {
    if (!this.#rt) return new Int32Array(len);
    const off = this.#take(len * 4);
    const v = new Int32Array(this.#rt.memory.buffer, off, len);
    v.fill(0);
    return v;
  }

  #take(bytes: number): number {
    const start = Math.ceil(this.#used / 64) * 64;
    if (start + bytes > this.#bytes) throw new RangeError(`Workspace: ${bytes} bytes do not fit`);
    this.#used = start + bytes;
    return this.#ptr + start;
  }

  /** Release the WASM memory (the arrays must not be used afterwards). */
  dispose(): void {
    if (this.#rt && this.#ptr) this.#rt.free(this.#ptr);
    for (const p of this.#gemmWorkExtra) this.#rt!.free(p);
    this.#gemmWorkExtra = [];
    this.#ptr = 0;
  }

  /**
   * With worker threads (`initLinalg({ threads })`), run kernel `fn` over [lo, hi) split into one contiguous
   * part per thread (`args(a, b)` gives a part's arguments) and return true; false when single-threaded or
   * when `work` is too small to repay the hand-off. Parts touch disjoint rows or columns, so the result is
   * bit-identical to one call.
   */
  #parallel(
    fn: string,
    lo: number,
    hi: number,
    work: number,
    align: number,
    args: (a: number, b: number) => number[],
  ) {
    const pool = this.#pool;
    if (!pool || pool.size < 2 || work < PARALLEL_MIN_WORK || hi - lo < 2 * align) return false;
    const parts = Math.min(pool.size, Math.floor((hi - lo) / align));
    const step = Math.ceil((hi - lo) / parts / align) * align;
    const jobs: Job[] = [];
    for (let a = lo; a < hi; a += step) jobs.push({ fn, args: args(a, Math.min(hi, a + step)) });
    pool.run(jobs);
    return true;
  }

  /** w = tau·(vᵀ·block) for rows [r0, r0+len) × columns [c0, c1) (v[0] = 1 implied); read-only. */
  leftW(
    data: Float64Array,
    ld: number,
    r0: number,
    len: number,
    c0: number,
    c1: number,
    tau: number,
    v: Float64Array,
    w: Float64Array,
  ) {
    if (this.#rt) {
      const [pd, pv, pw] = [data.byteOffset, v.byteOffset, w.byteOffset];
      const split = (a: number, b: number) => [pd, ld, r0, len, a, b, tau, pv, pw + 8 * (a - c0)];
      if (!this.#parallel("dlarf_left_w", c0, c1, len * (c1 - c0), 8, split)) {
        this.#k.dlarf_left_w(pd, ld, r0, len, c0, c1, tau, pv, pw);
      }
      return;
    }
    const nc = c1 - c0;
    for (let j = 0; j < nc; j++) w[j] = data[r0 * ld + c0 + j];
    for (let i = 1; i < len; i++) {
      const vi = v[i];
      if (vi === 0) continue;
      const o = (r0 + i) * ld + c0;
      for (let j = 0; j < nc; j++) w[j] += vi * data[o + j];
    }
    for (let j = 0; j < nc; j++) w[j] *= tau;
  }

  /**
   * Rows [r0, r1) × columns [c0, c0+nc): row −= vl[i − r0]·w, then row −= tauR·(row·u)·uᵀ (u[0] = 1
   * implied): a left reflector's update fused with the next right reflector, one pass over the rows.
   * `vl` and `u` are views into this workspace (their byteOffset is used as is).
   */
  bidiagFused(
    data: Float64Array,
    ld: number,
    r0: number,
    r1: number,
    c0: number,
    nc: number,
    vl: Float64Array,
    w: Float64Array,
    tauR: number,
    u: Float64Array,
  ) {
    if (this.#rt) {
      const [pd, pl, pw, pu] = [data.byteOffset, vl.byteOffset, w.byteOffset, u.byteOffset];
      const split = (a: number, b: number) => [pd, ld, a, b, c0, nc, pl + 8 * (a - r0), pw, tauR, pu];
      if (!this.#parallel("dbidiag_fused", r0, r1, (r1 - r0) * nc, 1, split)) {
        this.#k.dbidiag_fused(pd, ld, r0, r1, c0, nc, pl, pw, tauR, pu);
      }
      return;
    }
    for (let i = r0; i < r1; i++) {
      const o = i * ld + c0, f = vl[i - r0];
      let dot = 0;
      for (let j = 0; j < nc; j++) {
        const x = data[o + j] - f * w[j];
        data[o + j] = x;
        dot += x * (j === 0 ? 1 : u[j]);
      }
      if (tauR === 0 || dot === 0) continue;
      const g = tauR * dot;
      data[o] -= g;
      for (let j = 1; j < nc; j++) data[o + j] -= g * u[j];
    }
  }

  /**
   * y ← alpha·op(A)·x + beta·y with A the rows × cols block at `a[ao..]` (leading dimension ld), op(A) = A
   * (`trans` false: x has cols values, y rows) or Aᵀ; x at `x[xo..]`, y at `y[yo..]`, both contiguous.
   */
  gemv(
    trans: boolean,
    rows: number,
    cols: number,
    alpha: number,
    a: Float64Array,
    ao: number,
    ld: number,
    x: Float64Array,
    xo: number,
    beta: number,
    y: Float64Array,
    yo: number,
  ): void {
    const ny = trans ? cols : rows;
    if (ny <= 0) return;
    if (this.#rt) {
      const pa = a.byteOffset + 8 * ao, px = x.byteOffset + 8 * xo, py = y.byteOffset + 8 * yo;
      // With threads: y in parts (rows of A for A·x, columns of A for Aᵀ·x), each entry summed as in one call.
      const split = trans
        ? (c0: number, c1: number) => [pa + 8 * c0, ld, rows, c1 - c0, alpha, px, beta, py + 8 * c0]
        : (r0: number, r1: number) => [pa + 8 * r0 * ld, ld, r1 - r0, cols, alpha, px, beta, py + 8 * r0];
      const fn = trans ? "dgemv_t" : "dgemv_n";
      if (!this.#parallel(fn, 0, ny, rows * cols, 8, split)) {
        this.#k[fn](pa, ld, rows, cols, alpha, px, beta, py);
      }
      return;
    }
    if (trans) {
      for (let j = 0; j < cols; j++) y[yo + j] = beta === 0 ? 0 : beta * y[yo + j];
      for (let i = 0; i < rows; i++) {
        const f = alpha * x[xo + i], o = ao + i * ld;
        if (f === 0) continue;
        for (let j = 0; j < cols; j++) y[yo + j] += f * a[o + j];
      }
    } else {
      for (let i = 0; i < rows; i++) {
        let acc = 0;
        const o = ao + i * ld;
        for (let j = 0; j < cols; j++) acc += a[o + j] * x[xo + j];
        y[yo + i] = alpha * acc + (beta === 0 ? 0 : beta * y[yo + i]);
      }
    }
  }

  /** {@link reflectRows} on this workspace's arrays. */
  reflectRows(
    data: Float64Array,
    ld: number,
    r0: number,
    r1: number,
    c0: number,
    len: number,
    tau: number,
    v: Float64Array,
  ) {
    if (!this.#rt) return reflectRows(data, ld, r0, r1, c0, len, tau, v);
    const [pd, pv] = [data.byteOffset, v.byteOffset];
    const split = (a: number, b: number) => [pd, ld, a, b, c0, len, tau, pv];
    if (!this.#parallel("dlarf_right", r0, r1, (r1 - r0) * len, 1, split)) {
      this.#k.dlarf_right(pd, ld, r0, r1, c0, len, tau, pv);
    }
  }

  /** {@link reflectCols} on this workspace's arrays. */
  reflectCols(
    data: Float64Array,
    ld: number,
    r0: number,
    len: number,
    c0: number,
    c1: number,
    tau: number,
    v: Float64Array,
    w: Float64Array,
  ) {
    if (!this.#rt) return reflectCols(data, ld, r0, len, c0, c1, tau, v, w);
    const [pd, pv, pw] = [data.byteOffset, v.byteOffset, w.byteOffset];
    const split = (a: number, b: number) => [pd, ld, r0, len, a, b, tau, pv, pw + 8 * (a - c0)];
    if (!this.#parallel("dlarf_left", c0, c1, len * (c1 - c0), 8, split)) {
      this.#k.dlarf_left(pd, ld, r0, len, c0, c1, tau, pv, pw);
    }
  }

  /** {@link rotateRows} on this workspace's arrays. */
  rotateRows(data: Float64Array, ld: number, len: number, rx: number, ry: number, c: number, s: number) {
    if (this.#rt) this.#k.drot_rows(data.byteOffset, ld, len, rx, ry, c, s);
    else rotateRows(data, ld, len, rx, ry, c, s);
  }

  /** Apply `nsweeps` recorded sweeps (see {@link RotationBatch}). */
  rotateSweeps(
    data: Float64Array,
    ld: number,
    len: number,
    nsweeps: number,
    first: Int32Array,
    count: Int32Array,
    c: Float64Array,
    s: Float64Array,
    rows: number,
  ) {
    if (this.#rt) {
      const [pd, pf, pn, pc, ps] = [
        data.byteOffset,
        first.byteOffset,
        count.byteOffset,
        c.byteOffset,
        s.byteOffset,
      ];
      let nrot = 0;
      for (let q = 0; q < nsweeps; q++) nrot += count[q];
      const split = (a: number, b: number) => [pd + 8 * a, ld, b - a, nsweeps, pf, pn, pc, ps, rows];
      if (!this.#parallel("drot_sweeps", 0, len, nrot * len, 8, split)) {
        this.#k.drot_sweeps(pd, ld, len, nsweeps, pf, pn, pc, ps, rows);
      }
      return;
    }
    let off = 0;
    for (let q = 0; q < nsweeps; q++) {
      rotateRowsSeq(data, ld, len, first[q], c.subarray(off), s.subarray(off), count[q]);
      off += count[q];
    }
  }
}

/** Doubles and ints a {@link RotationBatch} of the given capacity takes from its workspace. */
export function rotationBatchSize(capRotations: number, capSweeps: number): { f64: number; i32: number } {
  return { f64: 2 * capRotations, i32: 2 * capSweeps };
}

/**
 * Sweeps of plane rotations on consecutive rows, recorded and applied together (one pass over the
 * matrix per batch instead of one per sweep). Call {@link RotationBatch.flush} before touching the matrix.
 */
export class RotationBatch {
  /** Cosines; write a sweep's values at `c[reserve(count) + t]`. */
  readonly c: Float64Array;
  /** Sines, same layout. */
  readonly s: Float64Array;
  #first: Int32Array;
  #count: Int32Array;
  #nrot = 0;
  #nsw = 0;

  /** A batch for `data` (rows × len row-major, leading dimension ld), storage from `ws`. */
  constructor(
    readonly ws: Workspace,
    readonly data: Float64Array,
    readonly ld: number,
    readonly len: number,
    readonly rows: number,
    capRotations: number,
    capSweeps: number,
  ) {
    this.c = ws.f64(capRotations);
    this.s = ws.f64(capRotations);
    this.#first = ws.i32(capSweeps);
    this.#count = ws.i32(capSweeps);
  }

  /** Offset in c/s where a sweep of `count` rotations goes (flushing first if full). */
  reserve(count: number): number {
    if (this.#nrot + count > this.c.length || this.#nsw >= this.#first.length) this.flush();
    if (count > this.c.length) throw new RangeError(`RotationBatch: sweep of ${count} exceeds capacity`);
    return this.#nrot;
  }

  /** Record the sweep just written at the reserved offset: rotations of rows first+t, first+t+1. */
  commit(first: number, count: number): void {
    this.#first[this.#nsw] = first;
    this.#count[this.#nsw] = count;
    this.#nsw++;
    this.#nrot += count;
  }

  /** Apply every recorded sweep, in order. */
  flush(): void {
    if (this.#nsw === 0) return;
    this.ws.rotateSweeps(
      this.data,
      this.ld,
      this.len,
      this.#nsw,
      this.#first,
      this.#count,
      this.c,
      this.s,
      this.rows,
    );
    this.#nsw = 0;
    this.#nrot = 0;
  }
}

/** Reflectors per block when forming U and V. */
export const NB = 32;

/**
 * X ← X·H_{count−1}·…·H_0 for reflectors k = 0..count−1 acting on coordinates k+shift.. of the rows of
 * `x` (rows × ld); reflector k's vector entry i (i ≥ 1) is `vec(k, i)`, its length `len(k)`. Rows below
 * k+shift are untouched by reflector k when X starts as [I 0], so each block only updates rows ≥ its start;
 * `allRows` drops that shortcut (any starting X).
 */
export function formBlocked(
  ws: Workspace,
  x: Float64Array,
  ld: number,
  rows: number,
  count: number,
  shift: number,
  nb: number,
  y: Float64Array,
  tmp: Float64Array,
  t: Float64Array,
  g: Float64Array,
  taus: Float64Array,
  vec: (k: number, i: number) => number,
  len: (k: number) => number,
  allRows = false,
): void {
  for (let k1 = count; k1 > 0; k1 -= nb) {
    const k0 = Math.max(0, k1 - nb), b = k1 - k0, span = len(k0);
    if (b < 4 || span < 2 * b) {
      // Small trailing blocks: one reflector at a time.
      for (let k = k1 - 1; k >= k0; k--) {
        const l = len(k);
        for (let i = 1; i < l; i++) y[i] = vec(k, i);
        ws.reflectRows(x, ld, allRows ? 0 : k + shift, rows, k + shift, l, taus[k], y);
      }
      continue;
    }
    // Y: span×b, column j = reflector k0+j placed at row j (unit diagonal, zeros above).
    y.fill(0, 0, span * b);
    for (let j = 0; j < b; j++) {
      y[j * b + j] = 1;
      const l = len(k0 + j);
      for (let i = 1; i < l; i++) y[(j + i) * b + j] = vec(k0 + j, i);
    }
    ws.blockT(y, span, b, taus.subarray(k0, k1), t, g);
    ws.applyBlockRight(x, ld, allRows ? 0 : k0 + shift, rows, k0 + shift, span, y, t, b, tmp);
  }
}
