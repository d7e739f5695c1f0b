/**
 * A small seeded pseudo-random generator (xoshiro128**, seeded through splitmix32) with uniform and
 * standard-normal draws, so randomized algorithms and tests are reproducible on every runtime.
 *
 * @module
 */
import type { FloatArray, Matrix64 } from "./matrix.ts";

/** A seeded stream of random numbers. */
export interface Rng {
  /** Uniform in [0, 1), 53 random bits. */
  next(): number;
  /** Uniform 32-bit unsigned integer. */
  nextU32(): number;
  /** Standard normal N(0, 1) (Box–Muller, both values used). */
  normal(): number;
}

/** Create a generator from an integer seed (any number; its low 32 bits and high bits are mixed in). */
export function createRng(seed = 0): Rng {
  let x = (seed >>> 0) ^ (Math.floor(seed / 4294967296) >>> 0) * 0x9e3779b9;
  const split = (): number => {
    // splitmix32: turns one seed into well-mixed state words.
    x = (x + 0x9e3779b9) | 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let s0 = split(), s1 = split(), s2 = split(), s3 = split();
  if ((s0 | s1 | s2 | s3) === 0) s0 = 1;
  const nextU32 = (): number => {
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    return r;
  };
  const next = (): number => ((nextU32() >>> 5) * 67108864 + (nextU32() >>> 6)) / 9007199254740992;
  let spare = NaN;
  const normal = (): number => {
    if (!Number.isNaN(spare)) {
      const v = spare;
      spare = NaN;
      return v;
    }
    let u = next();
    while (u === 0) u = next();
    const r = Math.sqrt(-2 * Math.log(u));
    const t = 2 * Math.PI * next();
    spare = r * Math.sin(t);
    return r * Math.cos(t);
  };
  return { next, nextU32, normal };
}

function rotl(v: number, k: number): number {
  return (v << k) | (v >>> (32 - k));
}

/** A rows×cols float64 matrix of independent N(0, 1) draws from `rng`. */
export function randomNormal(rows: number, cols: number, rng: Rng): Matrix64 {
  const data = new Float64Array(rows * cols);
  for (let i = 0; i < data.length; i++) data[i] = rng.normal();
  return { rows, cols, data };
}

/**
 * Fill `out` with cheap, deterministic pseudo-random values in [−scale, scale) from a 32-bit xorshift stream:
 * the same values on every runtime, for tests, fixtures and benchmarks (not for statistics; see
 * {@link createRng}).
 *
 * @example
 * ```ts
 * import { fillUniform } from "./random.ts";
 * const x = fillUniform(new Float32Array(4), 7); // four values in [−1, 1)
 * ```
 */
export function fillUniform<T extends FloatArray>(out: T, seed: number, scale = 1): T {
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return out;
}
