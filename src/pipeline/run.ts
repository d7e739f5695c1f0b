/**
 * The fixed choices of one `compress` run, derived once from the options and the model (linears, calibration
 * mode, batch, GGUF translation), with its hooks (memory policy, phase clock, progress). Every stage of the
 * driver reads them from here instead of re-deriving them from the options.
 *
 * @module
 */
import { checkedReader, type TensorReader } from "../io/tensor_reader.ts";
import type { LayerShape } from "../methods/asvd_sensitivity.ts";
import { KV_LINEARS } from "../methods/kvcache.ts";
import { linearShape } from "../model/linear_shape.ts";
import { checkLayerCount } from "../model/load.ts";
import { LINEAR_NAMES, type LinearName, linearPrefix } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import { defaultMemoryPolicy, type MemoryPolicy } from "./memory_policy.ts";
import { BATCH_TOKENS, type CompressOptions, type CompressProgress, type ModelInput } from "./options.ts";
import { createPhaseClock, type PhaseClock } from "./phases.ts";
import type { AllocationMode } from "./sensitivity.ts";
import { socoBudget } from "./soco_pass.ts";
import type { ModelOrigin } from "./source.ts";
import { checkCalibrationSize } from "./validate.ts";

/** The fixed choices of one run, derived once from the options and the model, and its hooks. */
export interface Run {
  /** The options as given. */
  opts: CompressOptions;
  /** Architecture. */
  spec: LlamaSpec;
  /** Weights, checked for non-finite values as read. */
  reader: TensorReader;
  /** Linears compressed. */
  linears: readonly LinearName[];
  /** SVD-LLM update. */
  update: boolean;
  /** Sequential calibration. */
  sequential: boolean;
  /** Rank allocation. */
  allocation: AllocationMode | "learned";
  /** Windows per forward batch. */
  batch: number;
  /** The input is a GGUF file (its names and layout are translated). */
  gguf: boolean;
  /** Float32 bytes of one block's compressed linears. */
  blockBytes: number;
  /** Memory hooks. */
  memory: MemoryPolicy;
  /** Phase clock. */
  clock: PhaseClock;
  /** Progress. */
  emit: (e: CompressProgress) => void;
}

/**
 * The run of `opts` on `model`: its weights wrapped to be checked as read, its layer count and calibration
 * size checked, and SoCo's budget refused when unreachable, all before any expensive work.
 */
export async function startRun(model: ModelInput, opts: CompressOptions, origin: ModelOrigin): Promise<Run> {
  const spec = model.spec;
  // Every weight read is checked for NaN/Inf, so a bad weight is named where it is read (a no-op wrap for a
  // model from loadModel, already checked).
  const reader = checkedReader(model.reader);
  checkLayerCount(reader, spec);
  checkCalibrationSize(opts, spec);
  if (opts.method === "soco") socoBudget(spec, opts.ratio); // an unreachable budget is refused before any work
  const linears = opts.kvCache ? KV_LINEARS : opts.linears ?? LINEAR_NAMES;
  const seqlen = opts.calibration?.seqlen ?? Math.min(256, spec.maxPositions);
  const blockBytes = linears.reduce((t, l) => t + 4 * linearShape(spec, l)[0] * linearShape(spec, l)[1], 0);
  const path = origin.inputPath;
  return {
    opts,
    spec,
    reader,
    linears,
    update: opts.update ?? false,
    sequential: opts.sequential ?? true,
    allocation: opts.method === "soco" ? "learned" : opts.allocation ?? "uniform",
    batch: opts.batchSize ?? Math.max(1, Math.floor(BATCH_TOKENS / seqlen)),
    gguf: origin.gguf !== undefined ||
      (path !== undefined ? /\.gguf$/i.test(path) : "general.architecture" in reader.metadata),
    blockBytes,
    memory: await defaultMemoryPolicy(blockBytes),
    clock: createPhaseClock(),
    emit: (e) => opts.onProgress?.(e),
  };
}

/** Every compressed linear's prefix and shape, block by block. */
export function layerShapes(spec: LlamaSpec, linears: readonly LinearName[]): LayerShape[] {
  const shapes: LayerShape[] = [];
  for (let i = 0; i < spec.numLayers; i++) {
    for (const name of linears) {
      const [rows, cols] = linearShape(spec, name);
      shapes.push({ name: linearPrefix(i, name), rows, cols });
    }
  }
  return shapes;
}
