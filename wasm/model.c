// The non-GEMM parts of the LLaMA forward pass (src/model/llama.ts) that are dominated by exp():
//
//   sattend    causal multi-head attention with GQA and an optional sliding window, fused: scores, softmax
//              and the value average of one query row never leave the kernel, and masked keys cost nothing
//   ssilu_mul  g ← silu(g) ⊙ u (SwiGLU)
//
// Math.exp costs ~20 ns in V8; the f32x4 exp below costs well under 1 ns a value, with a relative error of
// about 2 ulp (float32), far inside the 1e-3 the reference logits are checked to.
// No static data; scratch comes in as `work` (sized by sattend_work_size), so threads may share the memory.

#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(name)))

// exp(x), f32x4: x = n·ln2 + r with |r| ≤ ln2/2, exp(r) by Cephes' degree-6 polynomial, 2^n by building the
// exponent bits. Below −87.33 (where float32 leaves the normal range) the result is 0; above ln(FLT_MAX) it
// is +Inf (or the largest finite value just below it); NaN stays NaN. Cheap operations only: pmin/pmax are
// single instructions (min/max with NaN semantics are not), and n is rounded by adding 1.5·2²³, whose low
// mantissa bits then hold n itself.
static inline v128_t vexp(v128_t x) {
  const v128_t lo = wasm_f32x4_splat(-87.33654475f), hi = wasm_f32x4_splat(88.72283905f);
  const v128_t magic = wasm_f32x4_splat(12582912.0f);
  v128_t xc = wasm_f32x4_pmin(wasm_f32x4_pmax(x, lo), hi); // x < lo ? lo : x, then hi < · ? hi : ·; NaN stays
  v128_t t = wasm_f32x4_add(wasm_f32x4_mul(xc, wasm_f32x4_splat(1.44269504088896341f)), magic);
  v128_t n = wasm_f32x4_sub(t, magic);
  v128_t r = wasm_f32x4_sub(xc, wasm_f32x4_mul(n, wasm_f32x4_splat(0.693359375f)));
  r = wasm_f32x4_sub(r, wasm_f32x4_mul(n, wasm_f32x4_splat(-2.12194440e-4f)));
  v128_t p = wasm_f32x4_splat(1.9875691500e-4f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.3981999507e-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(8.3334519073e-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(4.1665795894e-2f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.6666665459e-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(5.0000001201e-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, wasm_f32x4_mul(r, r)), wasm_f32x4_add(r, wasm_f32x4_splat(1.0f)));
  v128_t e = wasm_i32x4_shl(wasm_i32x4_add(t, wasm_i32x4_splat(127)), 23); // 2^n: n + 127 in the exponent
  v128_t y = wasm_f32x4_mul(p, e);
  return wasm_v128_andnot(y, wasm_f32x4_lt(x, lo)); // underflow (and −Inf) → 0
}

static inline float hmax(v128_t v) {
  v = wasm_f32x4_max(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_f32x4_max(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(v, 0);
}

static inline float hsum(v128_t v) {
  v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(v, 0);
}

// In place over n values: g[i] ← g[i]·σ(g[i])·u[i].
EXPORT("ssilu_mul") void ssilu_mul(float* g, const float* u, int n) {
  const v128_t one = wasm_f32x4_splat(1.0f);
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    v128_t x = wasm_v128_load(g + i);
    v128_t s = wasm_f32x4_div(x, wasm_f32x4_add(one, vexp(wasm_f32x4_neg(x))));
    wasm_v128_store(g + i, wasm_f32x4_mul(s, wasm_v128_load(u + i)));
  }
  for (; i < n; i++) {
    v128_t x = wasm_f32x4_splat(g[i]);
    v128_t s = wasm_f32x4_div(x, wasm_f32x4_add(one, vexp(wasm_f32x4_neg(x))));
    g[i] = wasm_f32x4_extract_lane(s, 0) * u[i];
  }
}

// Keys padded to a multiple of 8 (the score loop's width).
static inline int pad8(int n) {
  return (n + 7) & ~7;
}

// Floats of scratch sattend needs for nk keys of width hd: the transposed keys of one head (hd × nk, padded)
// and the scores of four query rows.
EXPORT("sattend_work_size") int sattend_work_size(int nk, int hd) {
  return (hd + 4) * pad8(nk) + 16;
}

// One query row's output: out[0..hd) = (Σ_{j∈[j0,j1]} e[j]·V[j]) / sum, V rows ldv apart.
static void weighted_rows(const float* e, int j0, int j1, const float* v, int ldv, int hd, float inv,
                          float* out) {
  int dc = 0;
  for (; dc + 32 <= hd; dc += 32) {
    v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const float* vr = v + (long)j0 * ldv + dc;
    for (int j = j0; j <= j1; j++, vr += ldv) {
      v128_t p = wasm_f32x4_splat(e[j]);
      a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(p, wasm_v128_load(vr)));
      a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(p, wasm_v128_load(vr + 4)));
      a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(p, wasm_v128_load(vr + 8)));
      a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(p, wasm_v128_load(vr + 12)));
      a4 = wasm_f32x4_add(a4, wasm_f32x4_mul(p, wasm_v128_load(vr + 16)));
      a5 = wasm_f32x4_add(a5, wasm_f32x4_mul(p, wasm_v128_load(vr + 20)));
      a6 = wasm_f32x4_add(a6, wasm_f32x4_mul(p, wasm_v128_load(vr + 24)));
      a7 = wasm_f32x4_add(a7, wasm_f32x4_mul(p, wasm_v128_load(vr + 28)));
    }
    v128_t s = wasm_f32x4_splat(inv);
    wasm_v128_store(out + dc, wasm_f32x4_mul(a0, s));
    wasm_v128_store(out + dc + 4, wasm_f32x4_mul(a1, s));
    wasm_v128_store(out + dc + 8, wasm_f32x4_mul(a2, s));
    wasm_v128_store(out + dc + 12, wasm_f32x4_mul(a3, s));
    wasm_v128_store(out + dc + 16, wasm_f32x4_mul(a4, s));
    wasm_v128_store(out + dc + 20, wasm_f32x4_mul(a5, s));
    wasm_v128_store(out + dc + 24, wasm_f32x4_mul(a6, s));
    wasm_v128_store(out + dc + 28, wasm_f32x4_mul(a7, s));
  }
  for (; dc + 4 <= hd; dc += 4) {
    v128_t a = wasm_f32x4_splat(0);
    const float* vr = v + (long)j0 * ldv + dc;
    for (int j = j0; j <= j1; j++, vr += ldv) a = wasm_f32x4_add(a, wasm_f32x4_mul(wasm_f32x4_splat(e[j]), wasm_v128_load(vr)));
    wasm_v128_store(out + dc, wasm_f32x4_mul(a, wasm_f32x4_splat(inv)));
  }
}

// Causal attention. q: (batch·nq)×(H·hd), k and v: (batch·nk)×(KV·hd), out: (batch·nq)×(H·hd), all row-major
// with no padding. Query i of a window sits at position past + i (past = nk − nq) and sees keys
// max(0, pos − slide + 1)..pos of its own window; head h reads kv head h / (H / KV). hd must be a multiple
// of 4. A row whose scores are not all finite (NaN, ±Inf) gets a NaN output row: shown, not hidden.
EXPORT("sattend") void sattend(const float* q, const float* k, const float* v, float* out, int batch, int nq,
                               int nk, int H, int KV, int hd, float scale, int slide, float* work) {
  const int nkp = pad8(nk), group = H / KV, past = nk - nq, ldq = H * hd, ldk = KV * hd;
  float* kt = work;                  // hd × nkp: the keys of one head, transposed in panels of 8
  float* sc = work + (long)hd * nkp; // 4 × nkp: scores, then exp, of four query rows
  const v128_t zero = wasm_f32x4_splat(0);
  for (int b = 0; b < batch; b++) {
    for (int kh = 0; kh < KV; kh++) {
      const float* kb = k + (long)b * nk * ldk + kh * hd;
      // Packed in panels of 8 keys: panel j/8 holds, for each d, keys j..j+7 (8 consecutive floats), so the
      // score loop reads memory sequentially (a d-major layout strides by nk and thrashes L1 sets).
      for (int j = 0; j < nkp; j++) {
        float* dst = kt + (long)(j >> 3) * hd * 8 + (j & 7);
        if (j < nk) {
          const float* src = kb + (long)j * ldk;
          for (int d = 0; d < hd; d++) dst[d * 8] = src[d];
        } else {
          for (int d = 0; d < hd; d++) dst[d * 8] = 0;
        }
      }
      const float* vb = v + (long)b * nk * ldk + kh * hd;
      for (int h = kh * group; h < (kh + 1) * group; h++) {
        for (int i0 = 0; i0 < nq; i0 += 4) {
          const int rows = nq - i0 < 4 ? nq - i0 : 4;
          const int pos0 = past + i0, posL = past + i0 + rows - 1;
          int jlo = pos0 - slide + 1;
          if (jlo < 0) jlo = 0;
          jlo &= ~7;
          const int jhi = pad8(posL + 1); // ≤ nkp
          const float* q0 = q + (long)(b * nq + i0) * ldq + h * hd;
          const float* q1 = rows > 1 ? q0 + ldq : q0;
          const float* q2 = rows > 2 ? q0 + 2 * ldq : q1;
          const float* q3 = rows > 3 ? q0 + 3 * ldq : q2;
          for (int j = jlo; j < jhi; j += 8) {
            v128_t s00 = zero, s01 = zero, s10 = zero, s11 = zero, s20 = zero, s21 = zero, s30 = zero, s31 = zero;
            const float* kr = kt + (long)(j >> 3) * hd * 8;
            for (int d = 0; d < hd; d++, kr += 8) {
              v128_t k0 = wasm_v128_load(kr), k1 = wasm_v128_load(kr + 4);
              v128_t x0 = wasm_v128_load32_splat(q0 + d);
              v128_t x1 = wasm_v128_load32_splat(q1 + d);
              v128_t x2 = wasm_v128_load32_splat(q2 + d);
              v128_t x3 = wasm_v128_load32_splat(q3 + d);
              s00 = wasm_f32x4_add(s00, wasm_f32x4_mul(x0, k0));
              s01 = wasm_f32x4_add(s01, wasm_f32x4_mul(x0, k1));
              s10 = wasm_f32x4_add(s10, wasm_f32x4_mul(x1, k0));
              s11 = wasm_f32x4_add(s11, wasm_f32x4_mul(x1, k1));
              s20 = wasm_f32x4_add(s20, wasm_f32x4_mul(x2, k0));
              s21 = wasm_f32x4_add(s21, wasm_f32x4_mul(x2, k1));
              s30 = wasm_f32x4_add(s30, wasm_f32x4_mul(x3, k0));
              s31 = wasm_f32x4_add(s31, wasm_f32x4_mul(x3, k1));
            }
            wasm_v128_store(sc + j, s00);
            wasm_v128_store(sc + j + 4, s01);
            wasm_v128_store(sc + nkp + j, s10);
            wasm_v128_store(sc + nkp + j + 4, s11);
            wasm_v128_store(sc + 2 * nkp + j, s20);
            wasm_v128_store(sc + 2 * nkp + j + 4, s21);
            wasm_v128_store(sc + 3 * nkp + j, s30);
            wasm_v128_store(sc + 3 * nkp + j + 4, s31);
          }
          for (int r = 0; r < rows; r++) {
            const int pos = pos0 + r;
            int j0 = pos - slide + 1;
            if (j0 < 0) j0 = 0;
            float* e = sc + (long)r * nkp;
            float* o = out + (long)(b * nq + i0 + r) * ldq + h * hd;
            // max over e[j0..pos]
            v128_t mv = wasm_f32x4_splat(-__builtin_inff());
            int j = j0;
            for (; j + 4 <= pos + 1; j += 4) mv = wasm_f32x4_max(mv, wasm_v128_load(e + j));
            float m = hmax(mv);
            for (; j <= pos; j++) m = e[j] > m || e[j] != e[j] ? e[j] : m;
            if (!(m - m == 0)) { // NaN or ±Inf among the scores
              for (int d = 0; d < hd; d++) o[d] = __builtin_nanf("");
              continue;
            }
            const v128_t vs = wasm_f32x4_splat(scale), vm = wasm_f32x4_splat(m * scale);
            v128_t sum = zero;
            for (j = j0; j + 4 <= pos + 1; j += 4) {
              v128_t x = vexp(wasm_f32x4_sub(wasm_f32x4_mul(wasm_v128_load(e + j), vs), vm));
              wasm_v128_store(e + j, x);
              sum = wasm_f32x4_add(sum, x);
            }
            float s = hsum(sum);
            for (; j <= pos; j++) {
              float x = wasm_f32x4_extract_lane(vexp(wasm_f32x4_splat(e[j] * scale - m * scale)), 0);
              e[j] = x;
              s += x;
            }
            weighted_rows(e, j0, pos, vb, ldk, hd, 1.0f / s, o);
          }
        }
      }
    }
  }
}

// Per row r of x (rows×n, row-major): stats[2r] = max_j x[r,j], stats[2r+1] = Σ_j exp(x[r,j] − max) summed in
// float64, so that log Σ exp = max + log(sum) (the log is taken by the caller). A row whose max is not finite
// (NaN among the values, ±Inf) gets sum NaN and is the caller's to report.
EXPORT("slogsumexp_rows") void slogsumexp_rows(const float* x, int rows, int n, double* stats) {
  for (int r = 0; r < rows; r++) {
    const float* a = x + (long)r * n;
    v128_t mv = wasm_f32x4_splat(-__builtin_inff());
    int j = 0;
    for (; j + 4 <= n; j += 4) mv = wasm_f32x4_max(mv, wasm_v128_load(a + j));
    float m = hmax(mv);
    for (; j < n; j++) m = a[j] > m || a[j] != a[j] ? a[j] : m;
    stats[2 * r] = m;
    if (!(m - m == 0)) {
      stats[2 * r + 1] = __builtin_nan("");
      continue;
    }
    const v128_t vm = wasm_f32x4_splat(m);
    v128_t s0 = wasm_f64x2_splat(0), s1 = s0;
    for (j = 0; j + 4 <= n; j += 4) {
      v128_t e = vexp(wasm_f32x4_sub(wasm_v128_load(a + j), vm));
      s0 = wasm_f64x2_add(s0, wasm_f64x2_promote_low_f32x4(e));
      s1 = wasm_f64x2_add(s1, wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(e, e, 2, 3, 0, 1)));
    }
    s0 = wasm_f64x2_add(s0, s1);
    double s = wasm_f64x2_extract_lane(s0, 0) + wasm_f64x2_extract_lane(s0, 1);
    for (; j < n; j++) s += wasm_f32x4_extract_lane(vexp(wasm_f32x4_splat(a[j] - m)), 0);
    stats[2 * r + 1] = s;
  }
}
