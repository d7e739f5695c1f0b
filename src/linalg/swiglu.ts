/**
 * SwiGLU's elementwise step, silu(g) ⊙ u, with silu(x) = x·σ(x): the wasm kernel (vectorised exp) when
 * present, else Math.exp.
 *
 * @example
 * ```ts
 * import { siluMulInto } from "./swiglu.ts";
 * const g = new Float32Array([0, 1]), u = new Float32Array([2, 2]);
 * siluMulInto(g, u); // g = [0, 1.4621…]
 * ```
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import { modelKernels } from "./model_kernels.ts";

/** SiLU x·σ(x). */
export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/**
 * out ← silu(g) ⊙ u elementwise (all of one length); `out` may be g or u itself (default: g, in place).
 * Returns out.
 */
export function siluMulInto(g: Float32Array, u: Float32Array, out: Float32Array = g): Float32Array {
  if (u.length !== g.length || out.length !== g.length) {
    throw new ShapeError(
      `siluMulInto: lengths ${g.length} (gate), ${u.length} (up), ${out.length} (out) differ`,
    );
  }
  const rt = modelKernels();
  if (!rt) {
    for (let i = 0; i < g.length; i++) out[i] = silu(g[i]) * u[i];
    return out;
  }
  rt.scoped((s) => {
    const pg = s.putF32(g), pu = s.putF32(u);
    rt.fn("ssilu_mul")(pg, pu, g.length);
    out.set(rt.f32(pg, g.length));
  });
  return out;
}
