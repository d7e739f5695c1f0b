// General matrix products for @svd/llm: sgemm (f32x4) and dgemm (f64x2), GotoBLAS-style.
//
//   C (m×n, row stride ldc) = alpha · op(A) · op(B) + beta · C
//   op(A) is m×k: A row-major m×k (ta = 0) or k×m read transposed (ta = 1); likewise op(B) k×n.
//
// Loop nest: columns of C in NC blocks, k in KC blocks (B block packed into NR-wide panels that stay in L2/L1),
// rows in MC blocks (A block packed into MR-tall panels), then an MR×NR register-tile micro-kernel.
// Transposes are absorbed by the packing routines, so the micro-kernel only ever sees one layout.
//
// The micro-kernels keep 8 vector accumulators: V8 on x64 has 16 vector registers, and tiles with 12–16
// accumulators spill and run at half speed (measured). They also load as little as possible per flop (3
// vectors per 64 flops in sgemm), because under Deno every wasm memory access carries an explicit bounds
// check (its kernels run like Node's with --wasm-enforce-bounds-checks, and speed up with
// --no-wasm-bounds-checks). Measured on Zen 3, sgemm 1024 without copies: A packed pre-broadcast (6 loads, no
// shuffles) is 15 % faster than this kernel under Node but 10 % slower under Deno; load-splats, 2×16 and 3×8
// tiles, k unrolled by 2–4 (V8 then spills) and constant memarg offsets (inline asm) were no faster.
// No static data: every buffer is passed in by the caller (`work`, sized by *_work_size), so any number of
// instances may share one memory as threads.
// Non-finite inputs propagate as IEEE arithmetic does; nothing is checked here (hot path).

#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(name)))

// ---------------------------------------------------------------- float32

#define SMR 4
#define SNR 8
// Cache blocks (tuning knobs): a KC×NR panel of B stays in L1, an MC×KC block of A in L2.
#ifndef SKC
#define SKC 512
#endif
#ifndef SMC
#define SMC 64
#endif
#define SNC 2048

// Floats of scratch sgemm needs: packed A block, packed B block, one edge tile.
EXPORT("sgemm_work_size") int sgemm_work_size(void) {
  return SMC * SKC + SKC * SNC + SMR * SNR + 64;
}

// Pack op(A)[i0.., p0..] (mc×kc) into MR-tall panels: panel r holds, for each p, MR consecutive values.
static void spack_a(int ta, const float* A, int lda, int mc, int kc, float* dst) {
  for (int i = 0; i < mc; i += SMR) {
    int mr = mc - i < SMR ? mc - i : SMR;
    if (!ta) {
      const float* r0 = A + (long)i * lda;
      if (mr == SMR) {
        const float* r1 = r0 + lda;
        const float* r2 = r1 + lda;
        const float* r3 = r2 + lda;
        int p = 0;
        // 4×4 blocks transposed in registers: 4 vector loads and stores instead of 16 scalar ones.
        for (; p + 4 <= kc; p += 4) {
          v128_t x0 = wasm_v128_load(r0 + p);
          v128_t x1 = wasm_v128_load(r1 + p);
          v128_t x2 = wasm_v128_load(r2 + p);
          v128_t x3 = wasm_v128_load(r3 + p);
          v128_t t0 = wasm_i32x4_shuffle(x0, x1, 0, 4, 1, 5);
          v128_t t1 = wasm_i32x4_shuffle(x0, x1, 2, 6, 3, 7);
          v128_t t2 = wasm_i32x4_shuffle(x2, x3, 0, 4, 1, 5);
          v128_t t3 = wasm_i32x4_shuffle(x2, x3, 2, 6, 3, 7);
          wasm_v128_store(dst, wasm_i64x2_shuffle(t0, t2, 0, 2));
          wasm_v128_store(dst + 4, wasm_i64x2_shuffle(t0, t2, 1, 3));
          wasm_v128_store(dst + 8, wasm_i64x2_shuffle(t1, t3, 0, 2));
          wasm_v128_store(dst + 12, wasm_i64x2_shuffle(t1, t3, 1, 3));
          dst += 16;
        }
        for (; p < kc; p++) {
          dst[0] = r0[p];
          dst[1] = r1[p];
          dst[2] = r2[p];
          dst[3] = r3[p];
          dst += SMR;
        }
      } else {
        for (int p = 0; p < kc; p++) {
          for (int r = 0; r < SMR; r++) dst[r] = r < mr ? r0[(long)r * lda + p] : 0.0f;
          dst += SMR;
        }
      }
    } else {
      // op(A)[i][p] = A[p][i]: the MR values of one p are contiguous.
      const float* c0 = A + i;
      if (mr == SMR) {
        for (int p = 0; p < kc; p++) {
          wasm_v128_store(dst, wasm_v128_load(c0 + (long)p * lda));
          dst += SMR;
        }
      } else {
        for (int p = 0; p < kc; p++) {
          for (int r = 0; r < SMR; r++) dst[r] = r < mr ? c0[(long)p * lda + r] : 0.0f;
          dst += SMR;
        }
      }
    }
  }
}

// Pack op(B) (kc×nc) into NR-wide panels: panel j holds, for each p, NR consecutive values.
static void spack_b(int tb, const float* B, int ldb, int kc, int nc, float* dst) {
  for (int j = 0; j < nc; j += SNR) {
    int nr = nc - j < SNR ? nc - j : SNR;
    if (!tb) {
      const float* c0 = B + j;
      if (nr == SNR) {
        for (int p = 0; p < kc; p++) {
          const float* s = c0 + (long)p * ldb;
          wasm_v128_store(dst, wasm_v128_load(s));
          wasm_v128_store(dst + 4, wasm_v128_load(s + 4));
          dst += SNR;
        }
      } else {
        for (int p = 0; p < kc; p++) {
          for (int c = 0; c < SNR; c++) dst[c] = c < nr ? c0[(long)p * ldb + c] : 0.0f;
          dst += SNR;
        }
      }
    } else {
      // op(B)[p][j] = B[j][p]: NR rows of B, each read along p; transpose 4×4 blocks in registers.
      const float* r0 = B + (long)j * ldb;
      if (nr == SNR) {
        int p = 0;
        for (; p + 4 <= kc; p += 4) {
          for (int h = 0; h < 2; h++) {
            const float* q = r0 + (long)(4 * h) * ldb + p;
            v128_t x0 = wasm_v128_load(q);
            v128_t x1 = wasm_v128_load(q + ldb);
            v128_t x2 = wasm_v128_load(q + 2 * (long)ldb);
            v128_t x3 = wasm_v128_load(q + 3 * (long)ldb);
            v128_t t0 = wasm_i32x4_shuffle(x0, x1, 0, 4, 1, 5);
            v128_t t1 = wasm_i32x4_shuffle(x0, x1, 2, 6, 3, 7);
            v128_t t2 = wasm_i32x4_shuffle(x2, x3, 0, 4, 1, 5);
            v128_t t3 = wasm_i32x4_shuffle(x2, x3, 2, 6, 3, 7);
            wasm_v128_store(dst + 4 * h, wasm_i64x2_shuffle(t0, t2, 0, 2));
            wasm_v128_store(dst + 4 * h + SNR, wasm_i64x2_shuffle(t0, t2, 1, 3));
            wasm_v128_store(dst + 4 * h + 2 * SNR, wasm_i64x2_shuffle(t1, t3, 0, 2));
            wasm_v128_store(dst + 4 * h + 3 * SNR, wasm_i64x2_shuffle(t1, t3, 1, 3));
          }
          dst += 4 * SNR;
        }
        for (; p < kc; p++) {
          for (int c = 0; c < SNR; c++) dst[c] = r0[(long)c * ldb + p];
          dst += SNR;
        }
      } else {
        for (int p = 0; p < kc; p++) {
          for (int c = 0; c < SNR; c++) dst[c] = c < nr ? r0[(long)c * ldb + p] : 0.0f;
          dst += SNR;
        }
      }
    }
  }
}

// C tile (MR×NR at c, stride ldc) = alpha · a·b + beta · C, with beta == 0 meaning "overwrite" (no 0·NaN).
static inline void skernel(int kc, const float* a, const float* b, float* c, long ldc, float alpha,
                           float beta) {
  v128_t c00 = wasm_f32x4_splat(0), c01 = c00, c10 = c00, c11 = c00;
  v128_t c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (int p = 0; p < kc; p++) {
    v128_t b0 = wasm_v128_load(b);
    v128_t b1 = wasm_v128_load(b + 4);
    // One load and four register shuffles: fewer bounds-checked loads than four load-splats (see top).
    v128_t av = wasm_v128_load(a);
    v128_t a0 = wasm_i32x4_shuffle(av, av, 0, 0, 0, 0);
    v128_t a1 = wasm_i32x4_shuffle(av, av, 1, 1, 1, 1);
    v128_t a2 = wasm_i32x4_shuffle(av, av, 2, 2, 2, 2);
    v128_t a3 = wasm_i32x4_shuffle(av, av, 3, 3, 3, 3);
    c00 = wasm_f32x4_add(c00, wasm_f32x4_mul(a0, b0));
    c01 = wasm_f32x4_add(c01, wasm_f32x4_mul(a0, b1));
    c10 = wasm_f32x4_add(c10, wasm_f32x4_mul(a1, b0));
    c11 = wasm_f32x4_add(c11, wasm_f32x4_mul(a1, b1));
    c20 = wasm_f32x4_add(c20, wasm_f32x4_mul(a2, b0));
    c21 = wasm_f32x4_add(c21, wasm_f32x4_mul(a2, b1));
    c30 = wasm_f32x4_add(c30, wasm_f32x4_mul(a3, b0));
    c31 = wasm_f32x4_add(c31, wasm_f32x4_mul(a3, b1));
    a += SMR;
    b += SNR;
  }
  v128_t va = wasm_f32x4_splat(alpha);
  if (beta == 0.0f) {
    wasm_v128_store(c, wasm_f32x4_mul(va, c00));
    wasm_v128_store(c + 4, wasm_f32x4_mul(va, c01));
    wasm_v128_store(c + ldc, wasm_f32x4_mul(va, c10));
    wasm_v128_store(c + ldc + 4, wasm_f32x4_mul(va, c11));
    wasm_v128_store(c + 2 * ldc, wasm_f32x4_mul(va, c20));
    wasm_v128_store(c + 2 * ldc + 4, wasm_f32x4_mul(va, c21));
    wasm_v128_store(c + 3 * ldc, wasm_f32x4_mul(va, c30));
    wasm_v128_store(c + 3 * ldc + 4, wasm_f32x4_mul(va, c31));
  } else {
    v128_t vb = wasm_f32x4_splat(beta);
#define SUPD(off, acc) \
  wasm_v128_store(c + (off), wasm_f32x4_add(wasm_f32x4_mul(vb, wasm_v128_load(c + (off))), wasm_f32x4_mul(va, acc)))
    SUPD(0, c00);
    SUPD(4, c01);
    SUPD(ldc, c10);
    SUPD(ldc + 4, c11);
    SUPD(2 * ldc, c20);
    SUPD(2 * ldc + 4, c21);
    SUPD(3 * ldc, c30);
    SUPD(3 * ldc + 4, c31);
#undef SUPD
  }
}

// Scale C by beta (beta == 0: set to zero), used when k == 0.
static void sscale(int m, int n, float* C, long ldc, float beta) {
  for (int i = 0; i < m; i++) {
    float* r = C + i * ldc;
    for (int j = 0; j < n; j++) r[j] = beta == 0.0f ? 0.0f : beta * r[j];
  }
}

// One row of C (m == 1: a vector times a matrix, as in token-by-token generation). The packed path would
// pad the row to MR and copy all of B into panels; here B is streamed once.
//   x: op(A)'s single row, contiguous (k values); c: C's row.
static void sgemv_row(int tb, int n, int k, float alpha, const float* x, const float* B, int ldb, float beta,
                      float* c, float* acc) {
  if (tb) {
    // c[j] = alpha · dot(x, B[j, :]): rows of B are contiguous.
    for (int j = 0; j < n; j++) {
      const float* r = B + (long)j * ldb;
      v128_t s0 = wasm_f32x4_splat(0), s1 = s0;
      int p = 0;
      for (; p + 8 <= k; p += 8) {
        s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(wasm_v128_load(x + p), wasm_v128_load(r + p)));
        s1 = wasm_f32x4_add(s1, wasm_f32x4_mul(wasm_v128_load(x + p + 4), wasm_v128_load(r + p + 4)));
      }
      s0 = wasm_f32x4_add(s0, s1);
      float d = (wasm_f32x4_extract_lane(s0, 0) + wasm_f32x4_extract_lane(s0, 1)) +
                (wasm_f32x4_extract_lane(s0, 2) + wasm_f32x4_extract_lane(s0, 3));
      for (; p < k; p++) d += x[p] * r[p];
      c[j] = beta == 0.0f ? alpha * d : beta * c[j] + alpha * d;
    }
    return;
  }
  // c[j] = alpha · Σ_p x[p]·B[p][j]: rows of B scaled and added, in column chunks that stay in L1.
  const int CH = 2048;
  for (int j0 = 0; j0 < n; j0 += CH) {
    int nc = n - j0 < CH ? n - j0 : CH;
    int nv = nc & ~3;
    for (int j = 0; j < nc; j++) acc[j] = 0.0f;
    for (int p = 0; p < k; p++) {
      const float* r = B + (long)p * ldb + j0;
      v128_t xv = wasm_f32x4_splat(x[p]);
      int j = 0;
      for (; j < nv; j += 4) {
        wasm_v128_store(acc + j, wasm_f32x4_add(wasm_v128_load(acc + j), wasm_f32x4_mul(xv, wasm_v128_load(r + j))));
      }
      for (; j < nc; j++) acc[j] += x[p] * r[j];
    }
    for (int j = 0; j < nc; j++) c[j0 + j] = beta == 0.0f ? alpha * acc[j] : beta * c[j0 + j] + alpha * acc[j];
  }
}

// C = alpha·op(A)·op(B) + beta·C. Pointers are byte offsets into memory; leading dimensions in elements;
// work holds sgemm_work_size() floats, 16-byte aligned. beta == 0 overwrites C without reading it.
EXPORT("sgemm")
void sgemm(int ta, int tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb,
           float beta, float* C, int ldc, float* work) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.0f) {
    sscale(m, n, C, ldc, beta);
    return;
  }
  if (m == 1) {
    // op(A)'s row: contiguous unless A is stored k×1 with a stride; copy it to scratch then.
    const float* x = A;
    float* acc = work;
    if (ta && lda != 1) {
      float* t = work;
      for (int p = 0; p < k; p++) t[p] = A[(long)p * lda];
      x = t;
      acc = work + ((k + 15) & ~15);
    }
    if (k <= SMC * SKC + SKC * SNC - 2048 - 16) {
      sgemv_row(tb, n, k, alpha, x, B, ldb, beta, C, acc);
      return;
    }
  }
  float* pa = work;
  float* pb = pa + SMC * SKC;
  float* tile = pb + SKC * SNC;
  for (int jc = 0; jc < n; jc += SNC) {
    int nc = n - jc < SNC ? n - jc : SNC;
    for (int pc = 0; pc < k; pc += SKC) {
      int kc = k - pc < SKC ? k - pc : SKC;
      float bt = pc == 0 ? beta : 1.0f;
      const float* bs = tb ? B + (long)jc * ldb + pc : B + (long)pc * ldb + jc;
      spack_b(tb, bs, ldb, kc, nc, pb);
      for (int ic = 0; ic < m; ic += SMC) {
        int mc = m - ic < SMC ? m - ic : SMC;
        const float* as = ta ? A + (long)pc * lda + ic : A + (long)ic * lda + pc;
        spack_a(ta, as, lda, mc, kc, pa);
        for (int jr = 0; jr < nc; jr += SNR) {
          int nr = nc - jr < SNR ? nc - jr : SNR;
          const float* bp = pb + (long)jr * kc;
          for (int ir = 0; ir < mc; ir += SMR) {
            int mr = mc - ir < SMR ? mc - ir : SMR;
            const float* ap = pa + (long)ir * kc;
            float* cp = C + (long)(ic + ir) * ldc + jc + jr;
            if (mr == SMR && nr == SNR) {
              skernel(kc, ap, bp, cp, ldc, alpha, bt);
            } else {
              skernel(kc, ap, bp, tile, SNR, alpha, 0.0f);
              for (int r = 0; r < mr; r++) {
                for (int c = 0; c < nr; c++) {
                  float v = tile[r * SNR + c];
                  float* d = cp + (long)r * ldc + c;
                  *d = bt == 0.0f ? v : bt * *d + v;
                }
              }
            }
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------- Gram (float32 blocks into float64)

// Tokens per float32 partial product: XᵀX of each run of SGB rows is summed in float32 (the micro-kernel),
// then added into the float64 accumulator. Part of the documented precision of "float32-blocks".
#define SGB 256

// Add scale · tile (MR×NR float32, row stride SNR) into G (float64, row stride ldg) at rows i0.., columns
// j0.., only where column ≥ row (the upper triangle; nothing below the diagonal is written).
static void sgram_tile_add(const float* tile, int i0, int j0, int mr, int nr, double scale, double* G, long ldg) {
  v128_t vs = wasm_f64x2_splat(scale);
  for (int r = 0; r < mr; r++) {
    int i = i0 + r;
    double* g = G + (long)i * ldg + j0;
    const float* t = tile + r * SNR;
    if (nr == SNR && i <= j0) {
      v128_t lo = wasm_v128_load(t), hi = wasm_v128_load(t + 4);
      wasm_v128_store(g, wasm_f64x2_add(wasm_v128_load(g), wasm_f64x2_mul(vs, wasm_f64x2_promote_low_f32x4(lo))));
      v128_t lo2 = wasm_i32x4_shuffle(lo, lo, 2, 3, 2, 3), hi2 = wasm_i32x4_shuffle(hi, hi, 2, 3, 2, 3);
      wasm_v128_store(g + 2,
                      wasm_f64x2_add(wasm_v128_load(g + 2), wasm_f64x2_mul(vs, wasm_f64x2_promote_low_f32x4(lo2))));
      wasm_v128_store(g + 4,
                      wasm_f64x2_add(wasm_v128_load(g + 4), wasm_f64x2_mul(vs, wasm_f64x2_promote_low_f32x4(hi))));
      wasm_v128_store(g + 6,
                      wasm_f64x2_add(wasm_v128_load(g + 6), wasm_f64x2_mul(vs, wasm_f64x2_promote_low_f32x4(hi2))));
    } else {
      for (int c = i > j0 ? i - j0 : 0; c < nr; c++) g[c] += scale * (double)t[c];
    }
  }
}

// Scratch floats sgram_acc needs (the same blocks as sgemm).
EXPORT("sgram_work_size") int sgram_work_size(void) {
  return sgemm_work_size();
}

// G += scale · XᵀX on the upper triangle (column ≥ row), for columns [c0, c1) only (threads split there):
//   X: t×n float32, row stride ldx; G: n×n float64, row stride n; below-diagonal entries are not touched.
// Each block of SGB tokens is one float32 product (the 4×8 micro-kernel over packed panels, tiles wholly
// below the diagonal skipped: half the flops of a GEMM), added into G in float64.
EXPORT("sgram_acc")
void sgram_acc(int n, int t, const float* X, int ldx, double scale, double* G, int c0, int c1, float* work) {
  float* pa = work;
  float* pb = pa + SMC * SKC;
  float* tile = pb + SKC * SNC;
  for (int t0 = 0; t0 < t; t0 += SGB) {
    int kc = t - t0 < SGB ? t - t0 : SGB;
    const float* xb = X + (long)t0 * ldx;
    for (int jc = c0; jc < c1; jc += SNC) {
      int nc = c1 - jc < SNC ? c1 - jc : SNC;
      spack_b(0, xb + jc, ldx, kc, nc, pb);
      int rows = jc + nc; // rows 0..jc+nc-1 meet the upper triangle of these columns
      for (int ic = 0; ic < rows; ic += SMC) {
        int mc = rows - ic < SMC ? rows - ic : SMC;
        spack_a(1, xb + ic, ldx, mc, kc, pa);
        for (int jr = 0; jr < nc; jr += SNR) {
          int nr = nc - jr < SNR ? nc - jr : SNR;
          int j0 = jc + jr;
          const float* bp = pb + (long)jr * kc;
          for (int ir = 0; ir < mc; ir += SMR) {
            int i0 = ic + ir;
            if (i0 > j0 + nr - 1) break; // this tile and the ones below it lie under the diagonal
            int mr = mc - ir < SMR ? mc - ir : SMR;
            skernel(kc, pa + (long)ir * kc, bp, tile, SNR, 1.0f, 0.0f);
            sgram_tile_add(tile, i0, j0, mr, nr, scale, G, n);
          }
        }
      }
    }
  }
}

// The upper triangle (column ≥ row) of G (n×n float64) times keep: a running mean's rescale before a batch.
EXPORT("dscale_upper")
void dscale_upper(int n, double* G, double keep) {
  for (int i = 0; i < n; i++) {
    double* g = G + (long)i * n;
    for (int j = i; j < n; j++) g[j] *= keep;
  }
}

// G (n×n float64): the upper triangle mirrored into the lower one (exactly symmetric), in 32×32 blocks so
// both the row-wise reads and the column-wise writes stay in cache.
EXPORT("dsym_upper")
void dsym_upper(int n, double* G) {
  const int B = 32;
  for (int i0 = 0; i0 < n; i0 += B) {
    int i1 = i0 + B < n ? i0 + B : n;
    for (int j0 = i0; j0 < n; j0 += B) {
      int j1 = j0 + B < n ? j0 + B : n;
      for (int i = i0; i < i1; i++) {
        for (int j = (j0 > i + 1 ? j0 : i + 1); j < j1; j++) G[(long)j * n + i] = G[(long)i * n + j];
      }
    }
  }
}

// ---------------------------------------------------------------- float64

#define DMR 4
#define DNR 4
#define DKC 256
#define DMC 64
#define DNC 1024

// Doubles of scratch dgemm needs.
EXPORT("dgemm_work_size") int dgemm_work_size(void) {
  return DMC * DKC + DKC * DNC + DMR * DNR + 32;
}

static void dpack_a(int ta, const double* A, int lda, int mc, int kc, double* dst) {
  for (int i = 0; i < mc; i += DMR) {
    int mr = mc - i < DMR ? mc - i : DMR;
    if (mr == DMR && ta) {
      // op(A)[i][p] = A[p][i]: the MR values of one p are contiguous.
      const double* c0 = A + i;
      for (int p = 0; p < kc; p++) {
        wasm_v128_store(dst, wasm_v128_load(c0 + (long)p * lda));
        wasm_v128_store(dst + 2, wasm_v128_load(c0 + (long)p * lda + 2));
        dst += DMR;
      }
    } else if (mr == DMR) {
      const double* r0 = A + (long)i * lda;
      const double* r1 = r0 + lda;
      const double* r2 = r1 + lda;
      const double* r3 = r2 + lda;
      int p = 0;
      for (; p + 2 <= kc; p += 2) {
        v128_t x0 = wasm_v128_load(r0 + p), x1 = wasm_v128_load(r1 + p);
        v128_t x2 = wasm_v128_load(r2 + p), x3 = wasm_v128_load(r3 + p);
        wasm_v128_store(dst, wasm_i64x2_shuffle(x0, x1, 0, 2));
        wasm_v128_store(dst + 2, wasm_i64x2_shuffle(x2, x3, 0, 2));
        wasm_v128_store(dst + 4, wasm_i64x2_shuffle(x0, x1, 1, 3));
        wasm_v128_store(dst + 6, wasm_i64x2_shuffle(x2, x3, 1, 3));
        dst += 2 * DMR;
      }
      for (; p < kc; p++) {
        dst[0] = r0[p];
        dst[1] = r1[p];
        dst[2] = r2[p];
        dst[3] = r3[p];
        dst += DMR;
      }
    } else {
      for (int p = 0; p < kc; p++) {
        for (int r = 0; r < DMR; r++) {
          dst[r] = r < mr ? (ta ? A[(long)p * lda + i + r] : A[(long)(i + r) * lda + p]) : 0.0;
        }
        dst += DMR;
      }
    }
  }
}

static void dpack_b(int tb, const double* B, int ldb, int kc, int nc, double* dst) {
  for (int j = 0; j < nc; j += DNR) {
    int nr = nc - j < DNR ? nc - j : DNR;
    if (!tb && nr == DNR) {
      for (int p = 0; p < kc; p++) {
        const double* s = B + (long)p * ldb + j;
        wasm_v128_store(dst, wasm_v128_load(s));
        wasm_v128_store(dst + 2, wasm_v128_load(s + 2));
        dst += DNR;
      }
    } else if (nr == DNR) {
      // op(B)[p][j] = B[j][p]: 2×2 blocks transposed in registers.
      const double* r0 = B + (long)j * ldb;
      const double* r1 = r0 + ldb;
      const double* r2 = r1 + ldb;
      const double* r3 = r2 + ldb;
      int p = 0;
      for (; p + 2 <= kc; p += 2) {
        v128_t x0 = wasm_v128_load(r0 + p), x1 = wasm_v128_load(r1 + p);
        v128_t x2 = wasm_v128_load(r2 + p), x3 = wasm_v128_load(r3 + p);
        wasm_v128_store(dst, wasm_i64x2_shuffle(x0, x1, 0, 2));
        wasm_v128_store(dst + 2, wasm_i64x2_shuffle(x2, x3, 0, 2));
        wasm_v128_store(dst + 4, wasm_i64x2_shuffle(x0, x1, 1, 3));
        wasm_v128_store(dst + 6, wasm_i64x2_shuffle(x2, x3, 1, 3));
        dst += 2 * DNR;
      }
      for (; p < kc; p++) {
        dst[0] = r0[p];
        dst[1] = r1[p];
        dst[2] = r2[p];
        dst[3] = r3[p];
        dst += DNR;
      }
    } else {
      for (int p = 0; p < kc; p++) {
        for (int c = 0; c < DNR; c++) {
          dst[c] = c < nr ? (tb ? B[(long)(j + c) * ldb + p] : B[(long)p * ldb + j + c]) : 0.0;
        }
        dst += DNR;
      }
    }
  }
}

// C tile (MR×NR) = alpha · a·b + beta · C. Products of a pair of A values with B's pair and with B's pair
// swapped: the accumulators hold the tile's diagonals (c00, c11), (c01, c10), …, untangled once at the end.
// Two shuffles per k step instead of four broadcasts (the shuffles compete with the adds and multiplies for
// the same ports); each entry is still the same sum in the same order.
static inline void dkernel(int kc, const double* a, const double* b, double* c, long ldc, double alpha,
                           double beta) {
  v128_t d0 = wasm_f64x2_splat(0), d1 = d0, d2 = d0, d3 = d0, d4 = d0, d5 = d0, d6 = d0, d7 = d0;
  for (int p = 0; p < kc; p++) {
    v128_t a01 = wasm_v128_load(a);
    v128_t a23 = wasm_v128_load(a + 2);
    v128_t b01 = wasm_v128_load(b);
    v128_t b23 = wasm_v128_load(b + 2);
    v128_t b10 = wasm_i64x2_shuffle(b01, b01, 1, 0);
    v128_t b32 = wasm_i64x2_shuffle(b23, b23, 1, 0);
    d0 = wasm_f64x2_add(d0, wasm_f64x2_mul(a01, b01));
    d1 = wasm_f64x2_add(d1, wasm_f64x2_mul(a01, b10));
    d2 = wasm_f64x2_add(d2, wasm_f64x2_mul(a01, b23));
    d3 = wasm_f64x2_add(d3, wasm_f64x2_mul(a01, b32));
    d4 = wasm_f64x2_add(d4, wasm_f64x2_mul(a23, b01));
    d5 = wasm_f64x2_add(d5, wasm_f64x2_mul(a23, b10));
    d6 = wasm_f64x2_add(d6, wasm_f64x2_mul(a23, b23));
    d7 = wasm_f64x2_add(d7, wasm_f64x2_mul(a23, b32));
    a += DMR;
    b += DNR;
  }
  // Rows of the tile: row 0 = (d0₀, d1₀ | d2₀, d3₀), row 1 = (d1₁, d0₁ | d3₁, d2₁), rows 2–3 likewise.
  v128_t c00 = wasm_i64x2_shuffle(d0, d1, 0, 2), c01 = wasm_i64x2_shuffle(d2, d3, 0, 2);
  v128_t c10 = wasm_i64x2_shuffle(d1, d0, 1, 3), c11 = wasm_i64x2_shuffle(d3, d2, 1, 3);
  v128_t c20 = wasm_i64x2_shuffle(d4, d5, 0, 2), c21 = wasm_i64x2_shuffle(d6, d7, 0, 2);
  v128_t c30 = wasm_i64x2_shuffle(d5, d4, 1, 3), c31 = wasm_i64x2_shuffle(d7, d6, 1, 3);
  v128_t va = wasm_f64x2_splat(alpha);
  if (beta == 0.0) {
    wasm_v128_store(c, wasm_f64x2_mul(va, c00));
    wasm_v128_store(c + 2, wasm_f64x2_mul(va, c01));
    wasm_v128_store(c + ldc, wasm_f64x2_mul(va, c10));
    wasm_v128_store(c + ldc + 2, wasm_f64x2_mul(va, c11));
    wasm_v128_store(c + 2 * ldc, wasm_f64x2_mul(va, c20));
    wasm_v128_store(c + 2 * ldc + 2, wasm_f64x2_mul(va, c21));
    wasm_v128_store(c + 3 * ldc, wasm_f64x2_mul(va, c30));
    wasm_v128_store(c + 3 * ldc + 2, wasm_f64x2_mul(va, c31));
  } else {
    v128_t vb = wasm_f64x2_splat(beta);
#define DUPD(off, acc) \
  wasm_v128_store(c + (off), wasm_f64x2_add(wasm_f64x2_mul(vb, wasm_v128_load(c + (off))), wasm_f64x2_mul(va, acc)))
    DUPD(0, c00);
    DUPD(2, c01);
    DUPD(ldc, c10);
    DUPD(ldc + 2, c11);
    DUPD(2 * ldc, c20);
    DUPD(2 * ldc + 2, c21);
    DUPD(3 * ldc, c30);
    DUPD(3 * ldc + 2, c31);
#undef DUPD
  }
}

// C = alpha·op(A)·op(B) + beta·C in float64; same conventions as sgemm, work holds dgemm_work_size() doubles.
EXPORT("dgemm")
void dgemm(int ta, int tb, int m, int n, int k, double alpha, const double* A, int lda, const double* B, int ldb,
           double beta, double* C, int ldc, double* work) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.0) {
    for (int i = 0; i < m; i++) {
      double* r = C + (long)i * ldc;
      for (int j = 0; j < n; j++) r[j] = beta == 0.0 ? 0.0 : beta * r[j];
    }
    return;
  }
  double* pa = work;
  double* pb = pa + DMC * DKC;
  double* tile = pb + DKC * DNC;
  for (int jc = 0; jc < n; jc += DNC) {
    int nc = n - jc < DNC ? n - jc : DNC;
    for (int pc = 0; pc < k; pc += DKC) {
      int kc = k - pc < DKC ? k - pc : DKC;
      double bt = pc == 0 ? beta : 1.0;
      const double* bs = tb ? B + (long)jc * ldb + pc : B + (long)pc * ldb + jc;
      dpack_b(tb, bs, ldb, kc, nc, pb);
      for (int ic = 0; ic < m; ic += DMC) {
        int mc = m - ic < DMC ? m - ic : DMC;
        const double* as = ta ? A + (long)pc * lda + ic : A + (long)ic * lda + pc;
        dpack_a(ta, as, lda, mc, kc, pa);
        for (int jr = 0; jr < nc; jr += DNR) {
          int nr = nc - jr < DNR ? nc - jr : DNR;
          const double* bp = pb + (long)jr * kc;
          for (int ir = 0; ir < mc; ir += DMR) {
            int mr = mc - ir < DMR ? mc - ir : DMR;
            const double* ap = pa + (long)ir * kc;
            double* cp = C + (long)(ic + ir) * ldc + jc + jr;
            if (mr == DMR && nr == DNR) {
              dkernel(kc, ap, bp, cp, ldc, alpha, bt);
            } else {
              dkernel(kc, ap, bp, tile, DNR, alpha, 0.0);
              for (int r = 0; r < mr; r++) {
                for (int c = 0; c < nr; c++) {
                  double v = tile[r * DNR + c];
                  double* d = cp + (long)r * ldc + c;
                  *d = bt == 0.0 ? v : bt * *d + v;
                }
              }
            }
          }
        }
      }
    }
  }
}
