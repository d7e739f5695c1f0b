/**
 * The SVD on degenerate but valid matrices: exactly rank-deficient, constant, zero, tiny (1e-30, 1e-300) and
 * huge (1e30, 1e300) norms, repeated singular values. Before the fix a constant 64×64 matrix failed with
 * "bidiagonal QR did not converge (n = 33)": the rounding residue of a rank-1 matrix decays by ε per
 * Householder step into subnormals, where 1/(alpha − beta) overflowed (NaN in the bidiagonal) and the
 * divide-and-conquer leaves, deflating against their own tiny norm, never converged.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import type { Matrix64 } from "../../src/linalg/matrix.ts";
import { orthonormalityError, reconstruct } from "../../src/linalg/qr.ts";
import { eigh } from "../../src/linalg/eigh.ts";
import { svd, svdPart } from "../../src/linalg/svd.ts";
import { BACKENDS, EPS, rowsAsColumns, withBackend, withSingularValues } from "./factor_helpers.ts";

/** Frobenius norm of x − y (y optional) without underflow or overflow: entries of 1e-300 square to zero. */
function norm(x: Float64Array, y?: Float64Array): number {
  let big = 0;
  for (let i = 0; i < x.length; i++) big = Math.max(big, Math.abs(x[i] - (y ? y[i] : 0)));
  if (big === 0) return 0;
  let s = 0;
  for (let i = 0; i < x.length; i++) s += ((x[i] - (y ? y[i] : 0)) / big) ** 2;
  return big * Math.sqrt(s);
}

/** Reconstruction, orthogonality, σ ≥ 0 descending, and the rank: σ beyond `rank` are ≤ tol·‖A‖. */
function checkDegenerate(a: Matrix64, label: string, rank?: number): void {
  const res = svd(a);
  const m = a.rows, n = a.cols, r = Math.min(m, n);
  const tol = 30 * Math.max(m, n) * EPS;
  const aNorm = norm(a.data);
  for (const x of [...res.u.data, ...res.s, ...res.vt.data]) {
    assert.ok(Number.isFinite(x), `${label}: non-finite`);
  }
  // the error scales with ‖A‖: compare in units of ‖A‖ so that 1e-300 and 1e300 are judged alike
  const err = norm(a.data, reconstruct(res.u, res.s, res.vt).data);
  assert.ok(err <= tol * aNorm, `${label}: ‖A − UΣVᵀ‖ = ${err}, ‖A‖ = ${aNorm}`);
  assert.ok(orthonormalityError(res.u) <= tol, `${label}: UᵀU ≠ I (${orthonormalityError(res.u)})`);
  assert.ok(orthonormalityError(rowsAsColumns(res.vt)) <= tol, `${label}: VVᵀ ≠ I`);
  for (let i = 0; i < r; i++) {
    assert.ok(res.s[i] >= 0 && (i === 0 || res.s[i] <= res.s[i - 1]), `${label}: σ not descending ≥ 0`);
  }
  if (rank !== undefined) {
    for (let i = rank; i < r; i++) assert.ok(res.s[i] <= tol * aNorm, `${label}: σ${i} = ${res.s[i]} not ~0`);
  }
  // the left-only path (SVD-LLM's) goes through the same iteration without forming V
  const part = svdPart(a, { left: Math.min(3, r) });
  for (let i = 0; i < r; i++) assert.ok(Math.abs(part.s[i] - res.s[i]) <= tol * aNorm);
}

function fill(m: number, n: number, f: (i: number, j: number) => number): Matrix64 {
  const data = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) data[i * n + j] = f(i, j);
  return { rows: m, cols: n, data };
}

// sizes on both sides of the divide-and-conquer (48) and blocked-bidiagonalisation (96) crossovers
const SIZES = [7, 33, 48, 64, 65, 100, 130];

for (const backend of BACKENDS) {
  test(`svd converges on constant, zero and rank-1 matrices of every size (${backend})`, async () => {
    await withBackend(backend, () => {
      for (const n of SIZES) {
        checkDegenerate(fill(n, n, () => 0.02), `constant ${n}×${n}`, 1);
        checkDegenerate(fill(n, n, () => Math.fround(0.0123)), `constant f32 ${n}×${n}`, 1);
        checkDegenerate(fill(n, n, (_, j) => 0.02 * (1 + (j % 7))), `scaled columns ${n}×${n}`, 1);
        checkDegenerate(fill(3 * n, n, () => 1), `tall constant ${3 * n}×${n}`, 1);
        checkDegenerate(fill(n, 2 * n, (i) => i), `wide rank-1 ${n}×${2 * n}`, 1);
        checkDegenerate(fill(n, n, () => 0), `zero ${n}×${n}`, 0);
      }
    });
  });

  test(`svd: property — any finite scale, rank and repeated σ (${backend})`, async () => {
    await withBackend(backend, () => {
      fc.assert(
        fc.property(
          fc.constantFrom(...SIZES),
          fc.integer({ min: 0, max: 4 }),
          fc.constantFrom(1e-300, 1e-30, 1e-8, 1, 1e30, 1e300),
          fc.boolean(),
          fc.integer({ min: 1, max: 1000 }),
          (n, rank, scale, repeated, seed) => {
            const sigma = Array.from({ length: rank }, (_, i) => scale * (repeated ? 1 : 2 ** -i));
            const a = rank === 0 ? fill(n, n, () => 0) : withSingularValues(n + 3, n, sigma, seed);
            checkDegenerate(a, `n=${n} rank=${rank} scale=${scale} repeated=${repeated}`, rank);
          },
        ),
        { numRuns: 40, seed: 7 },
      );
    });
  });
}

test("svd: a matrix whose entries span 1e-300 to 1e300 still factors (no overflow in the reflectors)", () => {
  const a = fill(50, 50, (i, j) => (i === j ? 10 ** (300 - 12 * i) : 0) + (i === 0 ? 1e-300 : 0));
  const res = svd(a);
  for (const x of res.s) assert.ok(Number.isFinite(x));
  assert.ok(Math.abs(res.s[0] - 1e300) <= 1e285);
});

test("svdPart: a label names the layer and file in the error that remains (non-finite input)", () => {
  const a = fill(4, 4, (i, j) => (i === 2 && j === 1 ? NaN : 1));
  assert.throws(
    () => svdPart(a, { left: 1, label: "model.layers.3.mlp.up_proj (model.safetensors)" }),
    (e: Error) =>
      e.name === "NumericError" &&
      e.message.startsWith(
        "model.layers.3.mlp.up_proj (model.safetensors): svd: input 4×4 has non-finite value NaN",
      ),
  );
});

test("eigh (the Cholesky fallback's) converges on huge, tiny, constant and zero symmetric matrices", () => {
  for (const n of [7, 33, 64, 130]) {
    for (const scale of [0, 1e-300, 1e-30, 1, 1e30, 1e300]) {
      const a = fill(n, n, (i, j) => scale * (i === j ? 1 : 0.5));
      const { values, vectors } = eigh(a);
      const tol = 30 * n * EPS;
      // A·V = V·Λ, in units of ‖A‖ so that every scale is judged alike
      const av = new Float64Array(n * n), vl = new Float64Array(n * n);
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let k = 0; k < n; k++) s += a.data[i * n + k] * vectors.data[k * n + j];
          av[i * n + j] = s;
          vl[i * n + j] = vectors.data[i * n + j] * values[j];
        }
      }
      assert.ok(norm(av, vl) <= tol * norm(a.data), `n=${n} scale=${scale}: A·V ≠ V·Λ`);
      assert.ok(orthonormalityError(vectors) <= tol, `n=${n} scale=${scale}: VᵀV ≠ I`);
      assert.ok(Math.abs(values[0] - scale * (n + 1) / 2) <= tol * scale * n, `n=${n} scale=${scale}: λ₁`);
    }
  }
});
