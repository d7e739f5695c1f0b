// Float64 kernels of the factorisations (SVD, eigh, QR): Householder reflector applications and plane
// rotation sweeps, the level-2 inner loops that dominate a bidiagonalisation and a QR iteration.
//
// Matrices are row-major with leading dimension ld (elements). Pointers are byte offsets into the shared
// memory, sizes are ints. No static state: safe on a shared memory used by several instances.
// Reflectors follow LAPACK's dlarfg convention: H = I − tau·v·vᵀ with v[0] = 1 implied (v[0] is not read).

#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(name)))

// rows r0..r1−1, columns c0..c0+len−1:  row ← row − tau·(row·v)·vᵀ   (H applied from the right)
EXPORT("dlarf_right")
void dlarf_right(double* a, int ld, int r0, int r1, int c0, int len, double tau, const double* v) {
  if (tau == 0.0 || len <= 0) return;
  for (int i = r0; i < r1; i++) {
    double* row = a + (long)i * ld + c0;
    v128_t acc0 = wasm_f64x2_splat(0.0), acc1 = acc0;
    int j = 1;
    for (; j + 4 <= len; j += 4) {
      acc0 = wasm_f64x2_add(acc0, wasm_f64x2_mul(wasm_v128_load(row + j), wasm_v128_load(v + j)));
      acc1 = wasm_f64x2_add(acc1, wasm_f64x2_mul(wasm_v128_load(row + j + 2), wasm_v128_load(v + j + 2)));
    }
    acc0 = wasm_f64x2_add(acc0, acc1);
    double dot = row[0] + wasm_f64x2_extract_lane(acc0, 0) + wasm_f64x2_extract_lane(acc0, 1);
    for (; j < len; j++) dot += row[j] * v[j];
    if (dot == 0.0) continue;
    double f = tau * dot;
    v128_t vf = wasm_f64x2_splat(f);
    row[0] -= f;
    j = 1;
    for (; j + 2 <= len; j += 2) {
      wasm_v128_store(row + j, wasm_f64x2_sub(wasm_v128_load(row + j), wasm_f64x2_mul(vf, wasm_v128_load(v + j))));
    }
    for (; j < len; j++) row[j] -= f * v[j];
  }
}

// rows r0..r0+len−1, columns c0..c1−1:  w = vᵀ·block, block ← block − tau·v·wᵀ   (H from the left)
// w: scratch of ≥ c1 − c0 doubles.
EXPORT("dlarf_left")
void dlarf_left(double* a, int ld, int r0, int len, int c0, int c1, double tau, const double* v, double* w) {
  int nc = c1 - c0;
  if (tau == 0.0 || nc <= 0 || len <= 0) return;
  const double* first = a + (long)r0 * ld + c0;
  for (int j = 0; j < nc; j++) w[j] = first[j];
  for (int i = 1; i < len; i++) {
    double vi = v[i];
    if (vi == 0.0) continue;
    const double* row = a + (long)(r0 + i) * ld + c0;
    v128_t vv = wasm_f64x2_splat(vi);
    int j = 0;
    for (; j + 2 <= nc; j += 2) {
      wasm_v128_store(w + j, wasm_f64x2_add(wasm_v128_load(w + j), wasm_f64x2_mul(vv, wasm_v128_load(row + j))));
    }
    for (; j < nc; j++) w[j] += vi * row[j];
  }
  for (int j = 0; j < nc; j++) w[j] *= tau;
  for (int i = 0; i < len; i++) {
    double vi = i == 0 ? 1.0 : v[i];
    if (vi == 0.0) continue;
    double* row = a + (long)(r0 + i) * ld + c0;
    v128_t vv = wasm_f64x2_splat(vi);
    int j = 0;
    for (; j + 2 <= nc; j += 2) {
      wasm_v128_store(row + j, wasm_f64x2_sub(wasm_v128_load(row + j), wasm_f64x2_mul(vv, wasm_v128_load(w + j))));
    }
    for (; j < nc; j++) row[j] -= vi * w[j];
  }
}

static inline void rot_span(double* x, double* y, int j0, int j1, double c, double s) {
  v128_t vc = wasm_f64x2_splat(c), vs = wasm_f64x2_splat(s);
  int j = j0;
  for (; j + 2 <= j1; j += 2) {
    v128_t a = wasm_v128_load(x + j), b = wasm_v128_load(y + j);
    wasm_v128_store(x + j, wasm_f64x2_add(wasm_f64x2_mul(vc, a), wasm_f64x2_mul(vs, b)));
    wasm_v128_store(y + j, wasm_f64x2_sub(wasm_f64x2_mul(vc, b), wasm_f64x2_mul(vs, a)));
  }
  for (; j < j1; j++) {
    double a = x[j], b = y[j];
    x[j] = c * a + s * b;
    y[j] = c * b - s * a;
  }
}

// One rotation of rows rx, ry over columns 0..len−1: x' = c·x + s·y, y' = −s·x + c·y.
EXPORT("drot_rows")
void drot_rows(double* a, int ld, int len, int rx, int ry, double c, double s) {
  rot_span(a + (long)rx * ld, a + (long)ry * ld, 0, len, c, s);
}

// One sweep over columns j0..j1−1: rotation t acts on rows f+t and f+t+1. The running row f+t stays in
// registers from one rotation to the next, so each rotation costs one load and one store per element.
static void sweep_span(double* a, long ld, int f, int n, const double* c, const double* s, int j0, int j1) {
  double* base = a + (long)f * ld;
  int j = j0;
  for (; j + 8 <= j1; j += 8) {
    double* p = base + j;
    v128_t x0 = wasm_v128_load(p), x1 = wasm_v128_load(p + 2), x2 = wasm_v128_load(p + 4), x3 = wasm_v128_load(p + 6);
    for (int t = 0; t < n; t++) {
      v128_t vc = wasm_f64x2_splat(c[t]), vs = wasm_f64x2_splat(s[t]);
      double* q = p + ld;
      v128_t y0 = wasm_v128_load(q), y1 = wasm_v128_load(q + 2), y2 = wasm_v128_load(q + 4), y3 = wasm_v128_load(q + 6);
      wasm_v128_store(p, wasm_f64x2_add(wasm_f64x2_mul(vc, x0), wasm_f64x2_mul(vs, y0)));
      wasm_v128_store(p + 2, wasm_f64x2_add(wasm_f64x2_mul(vc, x1), wasm_f64x2_mul(vs, y1)));
      wasm_v128_store(p + 4, wasm_f64x2_add(wasm_f64x2_mul(vc, x2), wasm_f64x2_mul(vs, y2)));
      wasm_v128_store(p + 6, wasm_f64x2_add(wasm_f64x2_mul(vc, x3), wasm_f64x2_mul(vs, y3)));
      x0 = wasm_f64x2_sub(wasm_f64x2_mul(vc, y0), wasm_f64x2_mul(vs, x0));
      x1 = wasm_f64x2_sub(wasm_f64x2_mul(vc, y1), wasm_f64x2_mul(vs, x1));
      x2 = wasm_f64x2_sub(wasm_f64x2_mul(vc, y2), wasm_f64x2_mul(vs, x2));
      x3 = wasm_f64x2_sub(wasm_f64x2_mul(vc, y3), wasm_f64x2_mul(vs, x3));
      p = q;
    }
    wasm_v128_store(p, x0);
    wasm_v128_store(p + 2, x1);
    wasm_v128_store(p + 4, x2);
    wasm_v128_store(p + 6, x3);
  }
  for (; j < j1; j++) {
    double* p = base + j;
    double x = *p;
    for (int t = 0; t < n; t++) {
      double y = p[ld];
      *p = c[t] * x + s[t] * y;
      x = c[t] * y - s[t] * x;
      p += ld;
    }
    *p = x;
  }
}

// Several sweeps of rotations, in order: sweep q rotates rows first[q]+t and first[q]+t+1 by (c, s)[off+t]
// for t = 0..count[q]−1, where off is the running sum of the counts. Columns are processed in chunks so
// every sweep of the batch runs while the chunk is in cache: one pass over memory per batch.
EXPORT("drot_sweeps")
void drot_sweeps(double* a, int ld, int len, int nsweeps, const int* first, const int* count, const double* c,
                 const double* s, int rows) {
  int cw = rows > 0 ? (32768 / rows) & ~7 : len;
  if (cw < 8) cw = 8;
  for (int j0 = 0; j0 < len; j0 += cw) {
    int j1 = j0 + cw < len ? j0 + cw : len;
    int off = 0;
    for (int q = 0; q < nsweeps; q++) {
      if (count[q] > 0) sweep_span(a, ld, first[q], count[q], c + off, s + off, j0, j1);
      off += count[q];
    }
  }
}

// w = tau·(vᵀ·block) for the block rows r0..r0+len−1, columns c0..c1−1 (v[0] = 1 implied): the first half
// of a reflector applied from the left, a read-only pass.
EXPORT("dlarf_left_w")
void dlarf_left_w(const double* a, int ld, int r0, int len, int c0, int c1, double tau, const double* v, double* w) {
  int nc = c1 - c0;
  if (nc <= 0) return;
  const double* first = a + (long)r0 * ld + c0;
  for (int j = 0; j < nc; j++) w[j] = first[j];
  for (int i = 1; i < len; i++) {
    double vi = v[i];
    if (vi == 0.0) continue;
    const double* row = a + (long)(r0 + i) * ld + c0;
    v128_t vv = wasm_f64x2_splat(vi);
    int j = 0;
    for (; j + 4 <= nc; j += 4) {
      wasm_v128_store(w + j, wasm_f64x2_add(wasm_v128_load(w + j), wasm_f64x2_mul(vv, wasm_v128_load(row + j))));
      wasm_v128_store(w + j + 2,
                      wasm_f64x2_add(wasm_v128_load(w + j + 2), wasm_f64x2_mul(vv, wasm_v128_load(row + j + 2))));
    }
    for (; j < nc; j++) w[j] += vi * row[j];
  }
  for (int j = 0; j < nc; j++) w[j] *= tau;
}

// One fused pass of a bidiagonalisation step over rows r0..r1−1, columns c0..c0+nc−1:
//   row ← row − vl[i−r0]·w            (the left reflector's rank-1 update, w from dlarf_left_w)
//   row ← row − tauR·(row·u)·uᵀ       (the right reflector, u[0] = 1 implied)
// Each row is read and written once for both reflectors.
EXPORT("dbidiag_fused")
void dbidiag_fused(double* a, int ld, int r0, int r1, int c0, int nc, const double* vl, const double* w, double tauR,
                   const double* u) {
  for (int i = r0; i < r1; i++) {
    double* row = a + (long)i * ld + c0;
    double f = vl[i - r0];
    v128_t vf = wasm_f64x2_splat(f);
    v128_t acc0 = wasm_f64x2_splat(0.0), acc1 = acc0;
    // Left update, and the dot with u (u[0] = 1) in the same sweep.
    double r0v = row[0] - f * w[0];
    row[0] = r0v;
    int j = 1;
    for (; j + 4 <= nc; j += 4) {
      v128_t x0 = wasm_f64x2_sub(wasm_v128_load(row + j), wasm_f64x2_mul(vf, wasm_v128_load(w + j)));
      v128_t x1 = wasm_f64x2_sub(wasm_v128_load(row + j + 2), wasm_f64x2_mul(vf, wasm_v128_load(w + j + 2)));
      wasm_v128_store(row + j, x0);
      wasm_v128_store(row + j + 2, x1);
      acc0 = wasm_f64x2_add(acc0, wasm_f64x2_mul(x0, wasm_v128_load(u + j)));
      acc1 = wasm_f64x2_add(acc1, wasm_f64x2_mul(x1, wasm_v128_load(u + j + 2)));
    }
    acc0 = wasm_f64x2_add(acc0, acc1);
    double dot = r0v + wasm_f64x2_extract_lane(acc0, 0) + wasm_f64x2_extract_lane(acc0, 1);
    for (; j < nc; j++) {
      double x = row[j] - f * w[j];
      row[j] = x;
      dot += x * u[j];
    }
    if (tauR == 0.0 || dot == 0.0) continue;
    double g = tauR * dot;
    v128_t vg = wasm_f64x2_splat(g);
    row[0] -= g;
    j = 1;
    for (; j + 2 <= nc; j += 2) {
      wasm_v128_store(row + j, wasm_f64x2_sub(wasm_v128_load(row + j), wasm_f64x2_mul(vg, wasm_v128_load(u + j))));
    }
    for (; j < nc; j++) row[j] -= g * u[j];
  }
}

// y ← alpha·A·x + beta·y for A m×n (row-major, leading dimension ld); x, y contiguous. Each row is one dot
// product, four rows at a time so x is loaded once per four rows.
EXPORT("dgemv_n")
void dgemv_n(const double* a, int ld, int m, int n, double alpha, const double* x, double beta, double* y) {
  int i = 0;
  for (; i + 4 <= m; i += 4) {
    const double* r0 = a + (long)i * ld;
    const double* r1 = r0 + ld;
    const double* r2 = r1 + ld;
    const double* r3 = r2 + ld;
    v128_t s0 = wasm_f64x2_splat(0.0), s1 = s0, s2 = s0, s3 = s0;
    int j = 0;
    for (; j + 2 <= n; j += 2) {
      v128_t xv = wasm_v128_load(x + j);
      s0 = wasm_f64x2_add(s0, wasm_f64x2_mul(wasm_v128_load(r0 + j), xv));
      s1 = wasm_f64x2_add(s1, wasm_f64x2_mul(wasm_v128_load(r1 + j), xv));
      s2 = wasm_f64x2_add(s2, wasm_f64x2_mul(wasm_v128_load(r2 + j), xv));
      s3 = wasm_f64x2_add(s3, wasm_f64x2_mul(wasm_v128_load(r3 + j), xv));
    }
    double d0 = wasm_f64x2_extract_lane(s0, 0) + wasm_f64x2_extract_lane(s0, 1);
    double d1 = wasm_f64x2_extract_lane(s1, 0) + wasm_f64x2_extract_lane(s1, 1);
    double d2 = wasm_f64x2_extract_lane(s2, 0) + wasm_f64x2_extract_lane(s2, 1);
    double d3 = wasm_f64x2_extract_lane(s3, 0) + wasm_f64x2_extract_lane(s3, 1);
    for (; j < n; j++) {
      d0 += r0[j] * x[j];
      d1 += r1[j] * x[j];
      d2 += r2[j] * x[j];
      d3 += r3[j] * x[j];
    }
    y[i] = alpha * d0 + (beta == 0.0 ? 0.0 : beta * y[i]);
    y[i + 1] = alpha * d1 + (beta == 0.0 ? 0.0 : beta * y[i + 1]);
    y[i + 2] = alpha * d2 + (beta == 0.0 ? 0.0 : beta * y[i + 2]);
    y[i + 3] = alpha * d3 + (beta == 0.0 ? 0.0 : beta * y[i + 3]);
  }
  for (; i < m; i++) {
    const double* r = a + (long)i * ld;
    double d = 0.0;
    for (int j = 0; j < n; j++) d += r[j] * x[j];
    y[i] = alpha * d + (beta == 0.0 ? 0.0 : beta * y[i]);
  }
}

// y ← alpha·Aᵀ·x + beta·y for A m×n (row-major, leading dimension ld); x (m), y (n) contiguous. Streams
// the rows of A, four at a time into y (y is loaded and stored once per four rows of A, not per two).
EXPORT("dgemv_t")
void dgemv_t(const double* a, int ld, int m, int n, double alpha, const double* x, double beta, double* y) {
  if (beta == 0.0) {
    for (int j = 0; j < n; j++) y[j] = 0.0;
  } else if (beta != 1.0) {
    for (int j = 0; j < n; j++) y[j] *= beta;
  }
  int i = 0;
  for (; i + 4 <= m; i += 4) {
    const double* r0 = a + (long)i * ld;
    const double* r1 = r0 + ld;
    const double* r2 = r1 + ld;
    const double* r3 = r2 + ld;
    double f0 = alpha * x[i], f1 = alpha * x[i + 1], f2 = alpha * x[i + 2], f3 = alpha * x[i + 3];
    v128_t v0 = wasm_f64x2_splat(f0), v1 = wasm_f64x2_splat(f1), v2 = wasm_f64x2_splat(f2), v3 = wasm_f64x2_splat(f3);
    int j = 0;
    for (; j + 2 <= n; j += 2) {
      v128_t s01 = wasm_f64x2_add(wasm_f64x2_mul(v0, wasm_v128_load(r0 + j)), wasm_f64x2_mul(v1, wasm_v128_load(r1 + j)));
      v128_t s23 = wasm_f64x2_add(wasm_f64x2_mul(v2, wasm_v128_load(r2 + j)), wasm_f64x2_mul(v3, wasm_v128_load(r3 + j)));
      wasm_v128_store(y + j, wasm_f64x2_add(wasm_v128_load(y + j), wasm_f64x2_add(s01, s23)));
    }
    for (; j < n; j++) y[j] += (f0 * r0[j] + f1 * r1[j]) + (f2 * r2[j] + f3 * r3[j]);
  }
  for (; i < m; i++) {
    const double* r = a + (long)i * ld;
    double f = alpha * x[i];
    for (int j = 0; j < n; j++) y[j] += f * r[j];
  }
}
