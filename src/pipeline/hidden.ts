/**
 * Calibration hidden states: the residual stream of every calibration window at one block boundary, and a
 * batched run of one block over them (batches bound the attention and MLP temporaries).
 *
 * @module
 */
import type { Matrix } from "../linalg/matrix.ts";
import {
  BlockScratch,
  embed,
  forwardBlockInPlace,
  type LinearObserver,
  type LlamaBlock,
  type LlamaHead,
  observeBlock,
} from "../model/llama.ts";
import type { LlamaSpec } from "../model/spec.ts";

export { BlockScratch };
export type { Linear, LinearObserver, LlamaBlock, LlamaHead } from "../model/llama.ts";

/** The residual stream of `samples` windows of `seq` tokens: x is (samples·seq)×hidden. */
export interface HiddenStates {
  /** (samples·seq)×hidden. */
  x: Matrix;
  /** Windows. */
  samples: number;
  /** Tokens per window. */
  seq: number;
}

/** Embed calibration windows (equal lengths) into the residual stream entering block 0. */
export function embedWindows(
  spec: LlamaSpec,
  head: LlamaHead | Matrix,
  windows: readonly Int32Array[],
): HiddenStates {
  return { x: embed(head, spec, windows), samples: windows.length, seq: windows[0]?.length ?? 0 };
}

/**
 * Where {@link runBlock} puts the block's output: a new stream (default), over the input stream (each
 * batch's output replaces its own rows, which no later batch reads), or nowhere (a pass run only for its
 * observer, which then stops after the last linear's input: no down_proj product).
 */
export type BlockOutput = "new" | "inplace" | "discard";

/**
 * Run `block` over all windows, `batch` windows at a time, returning the block's output stream (the input
 * object itself for `"inplace"`, with its values replaced). `observe` sees every linear's input for every
 * batch, valid during its call only (the batches share buffers). `scratch` holds the temporaries: pass
 * one to successive calls (a pipeline calling this batch by batch) so that nothing is allocated per batch.
 */
export function runBlock(
  spec: LlamaSpec,
  block: LlamaBlock,
  h: HiddenStates,
  batch: number,
  observe?: LinearObserver,
  output: BlockOutput = "new",
  scratch: BlockScratch = new BlockScratch(),
): HiddenStates {
  const d = h.x.cols, seq = h.seq;
  const out = output === "new"
    ? new Float32Array(h.x.data.length)
    : output === "inplace"
    ? h.x.data
    : undefined;
  for (let s0 = 0; s0 < h.samples; s0 += batch) {
    const nb = Math.min(batch, h.samples - s0);
    const rows = nb * seq, from = s0 * seq * d, layout = { batch: nb, seq };
    const x = { rows, cols: d, data: h.x.data.subarray(from, from + rows * d) };
    if (!out) {
      if (observe) observeBlock(spec, block, x, layout, observe, scratch); // output not wanted
      continue;
    }
    const y = { rows, cols: d, data: out.subarray(from, from + rows * d) };
    if (y.data !== x.data && out !== h.x.data) y.data.set(x.data);
    forwardBlockInPlace(spec, block, y, layout, observe, scratch);
  }
  if (output === "inplace") return h;
  return { x: { rows: h.x.rows, cols: d, data: out ?? new Float32Array(0) }, samples: h.samples, seq };
}
