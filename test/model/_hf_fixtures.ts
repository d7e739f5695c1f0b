/**
 * Shared by the tests on test/fixtures/models/: the reference.json layout written by tools/make_hf_fixtures.py,
 * tolerances, and the logit comparison.
 *
 * @module
 */
import assert from "node:assert/strict";
import { finalLogits, forwardHidden, loadHead, type ModelWeights } from "../../src/model/llama.ts";

/** Folder holding one sub-folder per fixture. */
export const ROOT = new URL("../fixtures/models/", import.meta.url).pathname;

/** Logit tolerance (absolute): float32 forward against the float64 reference, logits of magnitude ≲ 10. */
export const LOGIT_TOL = 1e-4;
/** Mean-NLL tolerance. */
export const NLL_TOL = 1e-5;
/** A spec mutation must move some logit by at least this much to count as detected. */
export const MUTATION_MIN = 1e-2;

/** One reference sequence. */
export interface RefSequence {
  input_ids: number[];
  text: string;
  /** Positions whose full logits are kept (the first four and the last). */
  logits_positions: number[];
  logits: number[][];
  nll: number[];
  mean_nll: number;
  greedy_next: number[];
}

/** A fixture's reference.json. */
export interface Reference {
  model: string;
  class: string;
  sequences: RefSequence[];
  windowed: { window: number; input_ids: number[]; predicted: number; mean_nll: number };
}

/** max |a[i] − b[i]| (Infinity if any is NaN). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "lengths");
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return Number.isNaN(m) ? Infinity : m;
}

/** Logits (seq×vocab, flattened) of every position of every sequence, run as one batch. */
export async function allLogits(model: ModelWeights, seqs: readonly Int32Array[]): Promise<Float32Array[]> {
  const h = await forwardHidden(model, seqs);
  const logits = finalLogits(model.spec, await loadHead(model.reader, model.spec), h);
  const per = logits.data.length / seqs.length;
  return seqs.map((_, b) => logits.data.slice(b * per, (b + 1) * per));
}

/** Largest logit deviation of `model` from the reference over the positions it keeps. */
export async function logitError(model: ModelWeights, ref: Reference): Promise<number> {
  const got = await allLogits(model, ref.sequences.map((s) => Int32Array.from(s.input_ids)));
  let err = 0;
  for (const [b, s] of ref.sequences.entries()) {
    const V = s.logits[0].length;
    s.logits_positions.forEach((t, i) => {
      err = Math.max(err, maxAbsDiff(got[b].subarray(t * V, (t + 1) * V), s.logits[i]));
    });
  }
  return err;
}
