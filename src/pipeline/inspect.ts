/**
 * `inspectModel`: every block linear of a dense or compressed model with its stored rank, the singular values
 * of its (effective) weight, and what its compression recorded (config.json's `svd_llm.layers`).
 *
 * @example
 * ```ts
 * import { inspectModel } from "./inspect.ts";
 * const r = await inspectModel("models/stories260K/stories260K.gguf");
 * console.log(r.linears.length, r.linears[0].name, r.compression); // 35 "0.self_attn.q_proj" undefined
 * ```
 *
 * @module
 */
import { matmul } from "../linalg/gemm.ts";
import { svd } from "../linalg/svd.ts";
import { BLOCK_FIELD, type Linear, loadBlock, type ProgressEvent } from "../model/llama.ts";
import { loadModel } from "../model/load.ts";
import { LINEAR_NAMES, linearPrefix } from "../model/names.ts";
import { readSvdLlmConfig, type RecordedLayer, type SvdLlmConfig } from "./svd_llm_config.ts";

/** One linear as {@link inspectModel} sees it. */
export interface InspectedLinear {
  /** `<block>.<linear>`, e.g. `0.self_attn.q_proj`. */
  name: string;
  /** Output features. */
  rows: number;
  /** Input features. */
  cols: number;
  /** Stored rank (low-rank) or null (dense). */
  rank: number | null;
  /** Singular values of the (effective) weight, descending. */
  sigma: Float64Array;
  /** What the compression measured for this linear (config.json `svd_llm.layers`), when recorded. */
  recorded?: RecordedLayer;
}

/** What {@link inspectModel} found. */
export interface InspectReport {
  /** Model name. */
  name: string;
  /** The `svd_llm` section of config.json, when the model was compressed by this library. */
  compression?: SvdLlmConfig;
  /** Every block linear. */
  linears: InspectedLinear[];
}

function effectiveWeight(lin: Linear) {
  return lin.kind === "dense" ? lin.weight : matmul(lin.a, lin.b);
}

/** Read the model at `path` (as `loadModel` takes it) block by block and compute each linear's spectrum. */
export async function inspectModel(
  path: string | URL,
  opts: { onProgress?: (e: ProgressEvent) => void } = {},
): Promise<InspectReport> {
  const model = await loadModel(path);
  try {
    const compression = readSvdLlmConfig(model.config);
    const recorded = compression?.layers ?? {};
    const linears: InspectedLinear[] = [];
    const n = model.spec.numLayers;
    for (let i = 0; i < n; i++) {
      const block = await loadBlock(model.reader, model.spec, i);
      for (const name of LINEAR_NAMES) {
        const lin = block[BLOCK_FIELD[name]];
        const w = effectiveWeight(lin);
        linears.push({
          name: `${i}.${name}`,
          rows: w.rows,
          cols: w.cols,
          rank: lin.kind === "lowrank" ? lin.a.cols : null,
          sigma: svd(w).s,
          recorded: recorded[linearPrefix(i, name)],
        });
      }
      opts.onProgress?.({ stage: "inspect", done: i + 1, total: n });
    }
    return { name: model.name, compression, linears };
  } finally {
    await model.close();
  }
}
