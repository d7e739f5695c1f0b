import { test } from "node:test";
import assert from "node:assert/strict";
import { gramAccumulate, gramColumnSplit } from "../../src/linalg/gram.ts";
import { closeLinalg, initLinalg } from "../../src/linalg/backend.ts";
import { matrix, matrix64 } from "../../src/linalg/matrix.ts";
import { fillUniform } from "../../src/linalg/random.ts";
import { GramObserver } from "../../src/calib/gram.ts";
import { BACKENDS, withBackend } from "./factor_helpers.ts";

const EPS32 = 2 ** -24;

/**
 * The float64 reference keep·G0 + scale·XᵀX and, per entry, the error bound of "float32-blocks": each run of
 * 256 tokens is a float32 dot product (error ≤ 256·ε₃₂·Σ|x_ti·x_tj| over the run, Higham's γ bound with
 * slack), the float64 additions are exact by comparison.
 */
function reference(x: Float32Array, t: number, n: number, scale: number, g0: Float64Array, keep: number) {
  const want = new Float64Array(n * n), bound = new Float64Array(n * n);
  for (let r = 0; r < t; r++) {
    for (let i = 0; i < n; i++) {
      const xi = x[r * n + i];
      for (let j = 0; j < n; j++) {
        const p = xi * x[r * n + j];
        want[i * n + j] += p;
        bound[i * n + j] += Math.abs(p);
      }
    }
  }
  for (let i = 0; i < n * n; i++) {
    want[i] = keep * g0[i] + scale * want[i];
    bound[i] = Math.abs(scale) * 256 * EPS32 * bound[i] +
      4 * 2 ** -52 * (Math.abs(want[i]) + Math.abs(keep * g0[i]));
  }
  return { want, bound };
}

/** A symmetric start G0 (the accumulator's prior value). */
function symmetricStart(n: number, seed: number): Float64Array {
  const g = fillUniform(new Float64Array(n * n), seed);
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) g[i * n + j] = g[j * n + i];
  return g;
}

function check(g: Float64Array, want: Float64Array, bound: Float64Array, n: number, what: string) {
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const k = i * n + j;
      const err = Math.abs(g[k] - want[k]);
      if (!(err <= bound[k])) {
        assert.fail(`${what}: G[${i}][${j}] = ${g[k]}, want ${want[k]} ± ${bound[k]} (error ${err})`);
      }
      // Exactly symmetric, whatever order the kernel summed in.
      if (j < i && g[k] !== g[j * n + i]) assert.fail(`${what}: G[${i}][${j}] ≠ G[${j}][${i}]`);
    }
  }
}

// Widths across the 4×8 tile and 64-row block edges; token counts across the 256-token float32 blocks and
// the 2048-token copy chunks.
const SHAPES: [number, number][] = [[1, 1], [7, 3], [300, 37], [256, 8], [513, 64], [2300, 45], [600, 130]];

for (const backend of BACKENDS) {
  test(`gramAccumulate float32-blocks (${backend}): keep·G + scale·XᵀX within the float32-block bound, exactly symmetric`, async () => {
    await withBackend(backend, () => {
      for (const [t, n] of SHAPES) {
        const x = fillUniform(new Float32Array(t * n), t + n);
        for (const [scale, keep] of [[1, 1], [0.25, 0.5], [-2, 0]]) {
          const g0 = symmetricStart(n, 3 * n);
          const g = matrix64(n, n, Float64Array.from(g0));
          gramAccumulate(g, matrix(t, n, x), scale, { precision: "float32-blocks", keep });
          const { want, bound } = reference(x, t, n, scale, g0, keep);
          check(g.data, want, bound, n, `${backend} ${t}×${n} scale ${scale} keep ${keep}`);
        }
      }
    });
  });
}

test("gramAccumulate float32-blocks: two threads give the same bits as one (columns split by area)", async () => {
  const t = 2100, n = 300; // above the thread threshold, across a 2048-token chunk
  const x = matrix(t, n, fillUniform(new Float32Array(t * n), 7));
  const g0 = symmetricStart(n, 8);
  const one = matrix64(n, n, Float64Array.from(g0));
  gramAccumulate(one, x, 0.5, { precision: "float32-blocks", keep: 0.75 });
  const info = await initLinalg({ threads: 2 });
  try {
    if (info.threads !== 2) {
      console.log(`skip: threads unavailable here: ${info.threadsNote}`);
      return;
    }
    const two = matrix64(n, n, Float64Array.from(g0));
    gramAccumulate(two, x, 0.5, { precision: "float32-blocks", keep: 0.75 });
    assert.deepEqual(two.data, one.data);
    const { want, bound } = reference(x.data, t, n, 0.5, g0, 0.75);
    check(two.data, want, bound, n, "2 threads");
  } finally {
    await closeLinalg();
  }
});

test("gramColumnSplit: contiguous ranges covering 0..n, whole tiles, near-equal triangle areas", () => {
  for (const n of [1, 8, 100, 688, 4096]) {
    for (const parts of [1, 2, 3, 4]) {
      const s = gramColumnSplit(n, parts);
      assert.equal(s[0][0], 0);
      assert.equal(s[s.length - 1][1], n);
      for (let i = 0; i < s.length; i++) {
        assert.ok(s[i][1] > s[i][0]);
        if (i > 0) assert.equal(s[i][0], s[i - 1][1]);
        if (i < s.length - 1) assert.equal(s[i][1] % 8, 0);
      }
      if (n >= 688) {
        const areas = s.map(([a, b]) => b * b - a * a);
        assert.ok(Math.max(...areas) / Math.min(...areas) < 1.1, `${n}/${parts}: areas ${areas}`);
      }
    }
  }
});

test("GramObserver (default float32-blocks): the running mean over batches matches the float64 mean", () => {
  const n = 70, sizes = [256, 100, 700, 1];
  const t = sizes.reduce((a, b) => a + b, 0);
  const x = fillUniform(new Float32Array(t * n), 11);
  const o = new GramObserver("l", n);
  let r = 0;
  for (const s of sizes) {
    o.addBatch(matrix(s, n, x.subarray(r * n, (r + s) * n)));
    r += s;
  }
  assert.equal(o.tokens, t);
  const { want, bound } = reference(x, t, n, 1 / t, new Float64Array(n * n), 0);
  // Each batch's rescale by keep adds a few float64 roundings per entry.
  for (let i = 0; i < bound.length; i++) bound[i] = 2 * bound[i] + 1e-15 * Math.abs(want[i]);
  check(o.gram().data, want, bound, n, "observer");
});
