/**
 * The block written once: every forward interpreter of BLOCK_PROGRAM (full pass, in-place pass with a scratch,
 * observe-only pass, traced pass, pass from a linear on, cached decoding with full and latent caches) agrees
 * with the reference interpretation — evalBlockOp applied op by op into new matrices — over random small
 * shapes: GQA, odd widths, both RoPE layouts, sliding windows, biases, low-rank linears.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "../_fc.ts";
import { memoryReader, randomWeights, TINY } from "./_random_model.ts";
import {
  BLOCK_PROGRAM,
  opInputs,
  opsAffectedBy,
  opsNeededFor,
  type ValueName,
  valueWidth,
} from "../../src/model/block_def.ts";
import {
  attentionShape,
  type BlockValues,
  evalBlockOp,
  ropeHeads,
  rowPosition,
  runBlockProgram,
} from "../../src/model/block_eval.ts";
import {
  BLOCK_FIELD,
  BlockScratch,
  forwardBlock,
  forwardBlockCached,
  forwardBlockFrom,
  forwardBlockInPlace,
  type Linear,
  type LlamaBlock,
  loadBlock,
  newLayerCache,
  observeBlock,
  traceBlock,
} from "../../src/model/llama.ts";
import { LINEAR_NAMES, type LinearName } from "../../src/model/names.ts";
import type { LlamaSpec } from "../../src/model/spec.ts";
import type { Matrix } from "../../src/linalg/matrix.ts";
import { createRng } from "../../src/linalg/random.ts";
import { initLinalg } from "../../src/linalg/backend.ts";
import { residentPossible, runResident } from "../../src/model/block_resident.ts";
import { ShapeError } from "../../src/errors.ts";

function randomMatrix(rows: number, cols: number, seed: number, scale = 1): Matrix {
  const rng = createRng(seed), data = new Float32Array(rows * cols);
  for (let i = 0; i < data.length; i++) data[i] = scale * rng.normal();
  return { rows, cols, data };
}

/** A random rank-r factor pair in place of a dense linear (bias kept). */
function lowRank(l: Linear, r: number, seed: number): Linear {
  const w = (l as Linear & { kind: "dense" }).weight;
  return {
    kind: "lowrank",
    a: randomMatrix(w.rows, r, seed, 1 / Math.sqrt(r)),
    b: randomMatrix(r, w.cols, seed + 1, 1 / Math.sqrt(w.cols)),
    bias: l.bias,
  };
}

interface Case {
  spec: LlamaSpec;
  block: LlamaBlock;
  x: Matrix;
  batch: number;
  seq: number;
  seed: number;
}

/** Small random blocks: GQA groups, odd widths, head widths that take the wasm (÷4) and TS attention paths. */
const caseArb = fc.record({
  kvHeads: fc.integer({ min: 1, max: 2 }),
  group: fc.integer({ min: 1, max: 3 }),
  halfHd: fc.integer({ min: 1, max: 5 }),
  hidden: fc.integer({ min: 3, max: 13 }),
  inter: fc.integer({ min: 1, max: 11 }),
  interleaved: fc.boolean(),
  window: fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }),
  bias: fc.boolean(),
  batch: fc.integer({ min: 1, max: 3 }),
  seq: fc.integer({ min: 1, max: 9 }),
  lowrank: fc.array(fc.boolean(), { minLength: 7, maxLength: 7 }),
  seed: fc.nat({ max: 1000 }),
}).map(async (c): Promise<Case> => {
  const spec: LlamaSpec = {
    ...TINY,
    numLayers: 1,
    hiddenSize: c.hidden,
    intermediateSize: c.inter,
    numKvHeads: c.kvHeads,
    numHeads: c.kvHeads * c.group,
    headDim: 2 * c.halfHd,
    ropeStyle: c.interleaved ? "interleaved" : "halves",
    attentionBias: c.bias,
    ...(c.window ? { slidingWindow: c.window } : {}),
  };
  let block = await loadBlock(memoryReader(randomWeights(spec, c.seed + 1)), spec, 0);
  LINEAR_NAMES.forEach((l, i) => {
    if (c.lowrank[i]) {
      block = { ...block, [BLOCK_FIELD[l]]: lowRank(block[BLOCK_FIELD[l]], 1 + (i % 3), c.seed + i) };
    }
  });
  const x = randomMatrix(c.batch * c.seq, c.hidden, c.seed + 100);
  return { spec, block, x, batch: c.batch, seq: c.seq, seed: c.seed };
});

/** The reference: every op into a new matrix, every value kept. */
function reference({ spec, block, x, batch, seq }: Case): BlockValues {
  const env = { spec, block, batch, end: seq }, values: BlockValues = { x };
  for (const op of BLOCK_PROGRAM) values[op.out] = evalBlockOp(env, op, values);
  return values;
}

const copy = (m: Matrix): Matrix => ({ rows: m.rows, cols: m.cols, data: m.data.slice() });

function closeTo(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < got.length; i++) {
    assert.ok(
      Math.abs(got[i] - want[i]) <= tol * (1 + Math.abs(want[i])),
      `${what}[${i}]: ${got[i]} vs ${want[i]}`,
    );
  }
}

const scratch = new BlockScratch(); // one for every case: buffers grow and are reused across shapes

test("interpreters: full, in-place, observed, traced and from-a-linear passes equal the op-by-op reference exactly", async () => {
  await fc.assert(
    fc.asyncProperty(caseArb, async (pending) => {
      const c = await pending, { spec, block, x, batch, seq } = c, layout = { batch, seq };
      const ref = reference(c);
      for (const op of BLOCK_PROGRAM) {
        assert.equal(ref[op.out]!.cols, valueWidth(spec, op.out), op.out);
        assert.equal(ref[op.out]!.rows, x.rows, op.out);
      }
      const before = x.data.slice();
      const seenRef = new Map<LinearName, Float32Array>();
      const full = forwardBlock(spec, block, x, layout, (l, m) => seenRef.set(l, m.data.slice()));
      assert.deepEqual(full.data, ref.out!.data);
      for (const op of BLOCK_PROGRAM) {
        if (op.op === "linear") assert.deepEqual(seenRef.get(op.lin), ref[op.x]!.data);
      }

      const y = copy(x), seen = new Map<LinearName, Float32Array>();
      forwardBlockInPlace(spec, block, y, layout, (l, m) => seen.set(l, m.data.slice()), scratch);
      assert.deepEqual(y.data, ref.out!.data);
      assert.deepEqual(seen, seenRef);

      const observed = new Map<LinearName, Float32Array>();
      observeBlock(spec, block, x, layout, (l, m) => observed.set(l, m.data.slice()), scratch);
      assert.deepEqual(observed, seenRef);

      const trace = traceBlock(spec, block, x, layout);
      for (const [k, m] of Object.entries(trace)) assert.deepEqual(m.data, ref[k as ValueName]!.data, k);
      for (const [i, l] of LINEAR_NAMES.entries()) {
        assert.deepEqual(forwardBlockFrom(spec, block, x, layout, trace, l).data, ref.out!.data, l);
        // the block with linear l replaced: its own full pass, from the trace of the original
        const field = BLOCK_FIELD[l], old = block[field];
        const replaced = old.kind === "dense"
          ? lowRank(old, 2, c.seed + 50 + i)
          : { ...old, a: randomMatrix(old.a.rows, old.a.cols, i) };
        const modified = { ...block, [field]: replaced };
        assert.deepEqual(
          forwardBlockFrom(spec, modified, x, layout, trace, l).data,
          forwardBlock(spec, modified, x, layout).data,
          `${l} replaced`,
        );
      }
      assert.deepEqual(x.data, before, "x is never modified by the non-in-place passes");
    }),
    { numRuns: 40 },
  );
});

test("interpreters: cached decoding (prefill, then token by token) equals the full pass, with full and latent caches", async () => {
  await fc.assert(
    fc.asyncProperty(caseArb, fc.nat(), async (pending, cut) => {
      const c = await pending, { spec, block, seq } = c;
      const x: Matrix = { rows: seq, cols: c.x.cols, data: c.x.data.subarray(0, seq * c.x.cols) }; // one window
      const want = forwardBlock(spec, block, x, { batch: 1, seq });
      const prefill = cut % seq + 1, d = spec.hiddenSize;
      const outs: Record<string, Float32Array> = {};
      for (const mode of ["full", "latent"] as const) {
        const cache = newLayerCache(spec, seq, mode, block), got = new Float32Array(seq * d);
        for (let t0 = 0; t0 < seq; t0 = t0 < prefill ? prefill : t0 + 1) {
          const t1 = t0 < prefill ? prefill : t0 + 1;
          const rows = { rows: t1 - t0, cols: d, data: x.data.subarray(t0 * d, t1 * d) };
          got.set(forwardBlockCached(spec, block, rows, cache).data, t0 * d);
        }
        assert.equal(cache.length, seq);
        const kv = spec.numKvHeads * spec.headDim;
        if (mode === "latent" && block.k.kind === "lowrank") assert.equal(cache.kWidth, block.k.b.rows);
        else assert.equal(cache.kWidth, kv);
        closeTo(got, want.data, 2e-5, `${mode} cache`);
        outs[mode] = got;
        assert.throws(
          () => forwardBlockCached(spec, block, { rows: 1, cols: d, data: x.data.subarray(0, d) }, cache),
          ShapeError,
        );
      }
      closeTo(outs.latent, outs.full, 2e-5, "latent against full cache");
    }),
    { numRuns: 40 },
  );
});

test("runBlockProgram: results go over dead inputs it owns, never over a given or kept value", async () => {
  const c = await fc.sample(caseArb, { numRuns: 1, seed: 7 })[0];
  const env = { spec: c.spec, block: c.block, batch: c.batch, end: c.seq };
  // x owned: the residual adds write over it; qLin/kLin/g die in place under RoPE and SwiGLU
  const x = copy(c.x);
  const owned = runBlockProgram(env, BLOCK_PROGRAM, { x }, { owned: ["x"] });
  assert.equal(owned.out!.data, x.data);
  assert.equal(owned.qLin, undefined);
  assert.equal(owned.g, undefined);
  // nothing owned and g kept: x untouched, g and act both present and distinct
  const given = copy(c.x);
  const kept = runBlockProgram(env, BLOCK_PROGRAM, { x: given }, { keep: ["g", "out"] });
  assert.deepEqual(given.data, c.x.data);
  assert.notEqual(kept.act!.data, kept.g!.data);
  assert.deepEqual(kept.out!.data, owned.out!.data);
  // the helpers other interpreters share: positions of stacked windows (a cached step: the last rows),
  // head counts, attention layout
  assert.deepEqual([0, 1, 2, 3, 4, 5].map(rowPosition({ ...env, batch: 2, end: 5 }, 6)), [2, 3, 4, 2, 3, 4]);
  assert.deepEqual([0, 1].map(rowPosition({ ...env, batch: 1, end: 9 }, 2)), [7, 8]);
  const ropes = BLOCK_PROGRAM.filter((op) => op.op === "rope");
  assert.deepEqual(ropes.map((op) => ropeHeads(c.spec, op)), [c.spec.numHeads, c.spec.numKvHeads]);
  assert.equal(attentionShape(c.spec).slidingWindow, c.spec.slidingWindow);
  // a missing input is named
  assert.throws(() => runBlockProgram(env, opsAffectedBy("mlp.up_proj"), { x: c.x }), /reads n2/);
});

test("block_def: opsNeededFor is the backward slice, valueWidth each value's columns", () => {
  const linearInputs = BLOCK_PROGRAM.flatMap((op) => (op.op === "linear" ? [op.x] : []));
  const observe = opsNeededFor(linearInputs);
  assert.deepEqual(
    BLOCK_PROGRAM.filter((op) => !observe.includes(op)).map((op) => op.out),
    ["dOut", "out"],
  );
  assert.deepEqual(opsNeededFor(["out"]), [...BLOCK_PROGRAM]);
  assert.deepEqual(opsNeededFor(["x"]), []);
  assert.deepEqual(opsNeededFor(["n2"]).map((op) => op.out), BLOCK_PROGRAM.slice(0, 10).map((op) => op.out));
  // every op's inputs are computed before it (or are x): the program is straight-line
  const known = new Set<ValueName>(["x"]);
  for (const op of BLOCK_PROGRAM) {
    for (const v of opInputs(op)) assert.ok(known.has(v), `${op.out} reads ${v} before it exists`);
    known.add(op.out);
  }
  const spec = { ...TINY, hiddenSize: 5, intermediateSize: 7, numHeads: 6, numKvHeads: 2, headDim: 4 };
  assert.deepEqual(
    (["x", "q", "k", "v", "att", "g", "act", "out"] as const).map((v) => valueWidth(spec, v)),
    [5, 24, 8, 8, 24, 7, 7, 5],
  );
});

test("resident run (values kept in wasm memory): bit for bit the reference, on 1 and 2 threads, observed or not", async () => {
  // shapes large enough for the wasm products, head widths divisible by 4: the pipeline's path
  const big = fc.record({
    kvHeads: fc.integer({ min: 1, max: 2 }),
    group: fc.integer({ min: 1, max: 3 }),
    headDim: fc.constantFrom(4, 8, 12),
    hidden: fc.integer({ min: 8, max: 24 }),
    inter: fc.integer({ min: 8, max: 40 }),
    window: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
    bias: fc.boolean(),
    batch: fc.integer({ min: 1, max: 3 }),
    seq: fc.integer({ min: 32, max: 48 }),
    lowrank: fc.array(fc.boolean(), { minLength: 7, maxLength: 7 }),
    seed: fc.nat({ max: 1000 }),
  });
  const cases = fc.sample(big, { numRuns: 25, seed: 3 });
  try {
    for (const threads of [1, 2]) {
      assert.equal((await initLinalg({ threads })).threads, threads);
      const ws = new BlockScratch();
      for (const k of cases) {
        const spec: LlamaSpec = {
          ...TINY,
          numLayers: 1,
          hiddenSize: k.hidden,
          intermediateSize: k.inter,
          numKvHeads: k.kvHeads,
          numHeads: k.kvHeads * k.group,
          headDim: k.headDim,
          attentionBias: k.bias,
          ...(k.window ? { slidingWindow: k.window } : {}),
        };
        let block = await loadBlock(memoryReader(randomWeights(spec, k.seed + 1)), spec, 0);
        LINEAR_NAMES.forEach((l, i) => {
          if (k.lowrank[i]) {
            block = { ...block, [BLOCK_FIELD[l]]: lowRank(block[BLOCK_FIELD[l]], 4, k.seed + i) };
          }
        });
        const x = randomMatrix(k.batch * k.seq, k.hidden, k.seed), layout = { batch: k.batch, seq: k.seq };
        const env = { spec, block, batch: k.batch, end: k.seq };
        assert.ok(residentPossible(env, x.rows), JSON.stringify(k));
        const ref = reference({ spec, block, x, batch: k.batch, seq: k.seq, seed: k.seed });
        const seenRef = new Map<LinearName, Float32Array>();
        for (const op of BLOCK_PROGRAM) if (op.op === "linear") seenRef.set(op.lin, ref[op.x]!.data);
        const y = copy(x),
          seen = new Map<LinearName, Float32Array>(),
          obs = new Map<LinearName, Float32Array>();
        forwardBlockInPlace(spec, block, y, layout, (l, m) => seen.set(l, m.data.slice()), ws);
        assert.deepEqual(y.data, ref.out!.data, `threads ${threads} ${JSON.stringify(k)}`);
        assert.deepEqual(seen, seenRef);
        const z = copy(x);
        forwardBlockInPlace(spec, block, z, layout, undefined, ws);
        assert.deepEqual(z.data, ref.out!.data);
        observeBlock(spec, block, x, layout, (l, m) => obs.set(l, m.data.slice()), ws);
        assert.deepEqual(obs, seenRef);
        // kept intermediates come out too, x untouched when out is not kept
        const before = x.data.slice();
        const kept = runResident(env, BLOCK_PROGRAM, x, { keep: ["att", "g", "act"] });
        for (const v of ["att", "g", "act"] as const) assert.deepEqual(kept[v]!.data, ref[v]!.data, v);
        assert.deepEqual(x.data, before);
      }
    }
  } finally {
    await initLinalg({ threads: 1 });
  }
  // too small a product for the wasm GEMM, or an odd head width: not resident
  const env = (spec: LlamaSpec) => ({ spec, block: {} as LlamaBlock, batch: 1, end: 1 });
  assert.equal(residentPossible(env({ ...TINY, headDim: 6 }), 64), false);
  const tiny = await loadBlock(memoryReader(randomWeights(TINY, 2)), TINY, 0);
  assert.equal(residentPossible({ spec: TINY, block: tiny, batch: 1, end: 1 }, 1), false);
  assert.equal(residentPossible({ spec: TINY, block: tiny, batch: 1, end: 8 }, 8), true);
});
