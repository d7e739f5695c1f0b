/**
 * What a `compress` run records: the `svd_llm` section of the output's config.json (see `svd_llm_config.ts`)
 * and the parameter count outside the compressed linears, for the report's summary.
 *
 * @module
 */
import type { TensorReader } from "../io/tensor_reader.ts";
import type { LayerShape } from "../methods/asvd_sensitivity.ts";
import type { ParamSummary } from "../methods/ratio.ts";
import type { LayerReport } from "./block_step.ts";
import type { RunFisher } from "./model_pass.ts";
import type { CompressReport, ModelInput } from "./options.ts";
import type { Run } from "./run.ts";
import type { SocoPassResult } from "./soco_pass.ts";
import { PIPELINE_VERSION, type SvdLlmConfig } from "./svd_llm_config.ts";

/** The `svd_llm` section of the output's config.json. */
export function svdLlmSection(
  model: ModelInput,
  run: Run,
  r: {
    calibration?: CompressReport["calibration"];
    ranks: Record<string, number | null>;
    params: ParamSummary;
    layers: LayerReport[];
    fisher?: RunFisher;
    soco?: SocoPassResult;
  },
): SvdLlmConfig {
  const { opts } = run;
  return {
    version: PIPELINE_VERSION,
    method: opts.method,
    ratio: "removed" in opts.ratio
      ? { convention: "removed", value: opts.ratio.removed }
      : { convention: "kept", value: opts.ratio.kept },
    allocation: run.allocation,
    sequential: run.sequential,
    update: run.update,
    alpha: opts.method === "asvd" ? (opts.alpha ?? 0.5) : undefined,
    calibration: r.calibration,
    fisher: r.fisher && {
      side: r.fisher.side,
      batches: r.fisher.batches,
      batch_windows: opts.fisherBatch ?? 1,
      mean_loss: r.fisher.meanLoss,
    },
    soco: r.soco && {
      basis: r.soco.basis,
      steps: r.soco.settings.steps,
      lr: r.soco.settings.lr,
      batch: r.soco.settings.batch,
      kl_weight: r.soco.settings.klWeight,
      nll_weight: r.soco.settings.nllWeight,
      recoveries: r.soco.recoveries,
      budget: r.soco.budget.target,
      kept: r.soco.budget.kept,
    },
    ranks: r.ranks,
    achieved: { linears_removed: r.params.linears.removed, model_removed: r.params.model.removed },
    // What each factorisation measured, for `inspect` (absent entries: not measured by the method).
    layers: Object.fromEntries(r.layers.map((l) => [l.name, {
      energy_kept: l.energyKept,
      relative_loss: l.relativeLoss,
      shift: l.shift,
      update_shift: l.updateShift,
    }])),
    source: model.name,
    date: new Date().toISOString(),
  };
}

/** Count of every value not in a listed linear (embeddings, norms, lm_head, dense linears left out). */
export function otherParams(reader: TensorReader, shapes: LayerShape[], gguf: boolean): number {
  const listed = new Set(shapes.map((s) => `${s.name}.weight`));
  let n = 0;
  for (const t of reader.tensors()) {
    if (gguf && !/^(model\.|lm_head\.)/.test(t.name)) continue;
    if (!listed.has(t.name)) n += t.shape.reduce((a, b) => a * b, 1);
  }
  return n;
}
