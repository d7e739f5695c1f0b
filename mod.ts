/**
 * @svd/llm — compress large language models by low-rank (SVD) factorisation of their weight matrices.
 *
 * Three methods, from the weakest to the strongest at the same ratio: plain truncated SVD, ASVD
 * (activation-aware channel scaling) and SVD-LLM (truncation-aware whitening by the Cholesky factor of the
 * inputs' Gram matrix, optionally with the closed-form update of A). A model is read tensor by tensor and
 * compressed block by block, so memory stays near one transformer block.
 *
 * Whole models (a Hugging Face LLaMA/Qwen2/Mistral folder or a GGUF file):
 *
 * ```ts
 * import { compress, loadModel, perplexity } from "./mod.ts";
 * import { readFile, mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const text = await readFile("data/tinystories-valid.part1.txt", "utf8");
 * const out = join(await mkdtemp(join(tmpdir(), "svd-llm-")), "stories-svdllm");
 * const report = await compress("models/stories260K/stories260K.gguf", out, {
 *   method: "svdllm",
 *   ratio: { removed: 0.2 }, // SVD-LLM's convention; ASVD's is { kept: 0.8 }
 *   calibration: { text, samples: 16, seqlen: 128 },
 * });
 * console.log(report.params.model.removed); // fraction of the whole model's parameters removed
 *
 * const model = await loadModel(out); // the compressed model reloads and evaluates
 * const { ppl } = await perplexity(model, model.tokenizer.encode(text, { bos: true }), { window: 512 });
 * console.log(ppl);
 * await model.close();
 * await rm(out, { recursive: true });
 * ```
 *
 * One layer at a time, GPTQ style (observe the inputs, then compress):
 *
 * ```ts
 * import { matrix, svdllm } from "./mod.ts";
 * const w = matrix(4, 3, Float32Array.from({ length: 12 }, (_, i) => Math.sin(i))); // out×in
 * const layer = svdllm(w);
 * layer.addBatch(matrix(8, 3, Float32Array.from({ length: 24 }, (_, i) => Math.cos(i)))); // tokens×in
 * const { a, b, report } = layer.compress({ ratio: { removed: 0.2 } }); // w ≈ a·b
 * ```
 *
 * @module
 */

// Whole-model pipeline.
export {
  compress,
  type CompressMethod,
  compressModel,
  type CompressOptions,
  type CompressOutput,
  type CompressPhases,
  type CompressProgress,
  type CompressReport,
  type LayerReport,
  type ModelOrigin,
  type ModelSource,
} from "./src/pipeline/compress.ts";
export { merge, type MergeOptions, type MergeReport } from "./src/pipeline/merge.ts";
export {
  compressSoco,
  compressSocoModel,
  type SocoOptions,
  type SocoPipelineProgress,
  type SocoReport,
} from "./src/pipeline/soco.ts";
export type {
  BudgetLinear,
  FactorSource,
  SocoPassProgress,
  SocoPassResult,
  SocoRunOptions,
  SocoStart,
} from "./src/pipeline/soco_pass.ts";
export { type InspectedLinear, inspectModel, type InspectReport } from "./src/pipeline/inspect.ts";
export {
  type ByteSink,
  type MemorySink,
  memorySink,
  type OutputSink,
  streamSink,
} from "./src/pipeline/sink.ts";
export { readSvdLlmConfig, type RecordedLayer, type SvdLlmConfig } from "./src/pipeline/svd_llm_config.ts";
export { openModelSource } from "./src/pipeline/source.ts";
export {
  compareMethods,
  type CompareOptions,
  type MethodChoice,
  type MethodComparison,
} from "./src/eval/compare.ts";
export { linearShape } from "./src/model/linear_shape.ts";
export {
  factoredReader,
  type FisherInfo,
  fisherInformation,
  fwsvdFactors,
  type FwsvdModel,
  fwsvdModel,
  type FwsvdOptions,
} from "./src/pipeline/fwsvd.ts";
export {
  type ExportDtype,
  type ExportInput,
  exportOnnx,
  type ExportOnnxOptions,
  type ExportOnnxReport,
} from "./src/export/onnx.ts";
export type { AllocationMode } from "./src/pipeline/sensitivity.ts";
export {
  type SensitivityOptions,
  type SensitivityResult,
  sensitivitySweep,
} from "./src/pipeline/sensitivity.ts";

// Per-layer methods.
export { asvd, type LayerCompressor, svdLayer, svdllm, type Target } from "./src/methods/layer.ts";
export { compressSvd } from "./src/methods/svd.ts";
export { addFisherBatch, compressFwsvd, type FisherSide } from "./src/methods/fwsvd.ts";
export {
  compressFwsvdKfac,
  type FwsvdWeighting,
  KFAC_DAMPING,
  type KfacFactors,
  type KfacOptions,
} from "./src/methods/fwsvd.ts";
export { type AsvdOptions, type AsvdStats, compressAsvd } from "./src/methods/asvd.ts";
export { compressSvdLlm, type SvdLlmOptions, type SvdLlmStats, updateA } from "./src/methods/svdllm.ts";
export type { Factors, MethodReport } from "./src/methods/factors.ts";
export { describeRatio, keptFraction, rankFor, type Ratio } from "./src/methods/ratio.ts";
export {
  type SocoBasisKind,
  type SpectralBasis,
  spectralFactors,
  svdBasis,
  whitenedBasis,
} from "./src/methods/soco.ts";
export {
  type SocoObjective,
  type SocoProgress,
  type SocoStage,
  type SocoState,
  type SocoTrainOptions,
  type SocoTrainResult,
  trainSpectrum,
} from "./src/methods/soco_train.ts";
export { AbsMeanObserver } from "./src/calib/abs_mean.ts";
export { GramObserver } from "./src/calib/gram.ts";

// Models and evaluation.
export { type LoadedModel, loadModel, type ModelFiles, type ResolvedModelFiles } from "./src/model/load.ts";
export { type FileSet, fileSetFromFiles, fileSetFromTar, tarBlob } from "./src/io/file_set.ts";
export type { LlamaSpec } from "./src/model/spec.ts";
export {
  blockBackward,
  blockForward,
  type GradModel,
  type LinearGradHook,
  type LossAndGrad,
  lossAndGrad,
  type LossAndGradOptions,
} from "./src/model/backward.ts";
export {
  perplexity,
  type PerplexityOptions,
  type PerplexityResult,
  windowNll,
  type WindowNllOptions,
} from "./src/eval/perplexity.ts";
export { klDivergence } from "./src/eval/kl.ts";
export { generate, type GenerateOptions } from "./src/eval/generate.ts";
export type { Tokenizer } from "./src/tokenize/tokenizer.ts";

// Numerics and I/O (also available in full from the "./linalg" and "./io" entry points).
export { initLinalg, linalgInfo } from "./src/linalg/backend.ts";
export { type Matrix, matrix, type Matrix64, matrix64 } from "./src/linalg/matrix.ts";
export { matmul } from "./src/linalg/gemm.ts";
export { svd } from "./src/linalg/svd.ts";
export { svdTruncated } from "./src/linalg/svd_truncated.ts";
export { openSafetensors } from "./src/io/safetensors_reader.ts";
export { openGguf } from "./src/io/gguf.ts";
export type { TensorInfo, TensorReader } from "./src/io/tensor_reader.ts";
export type { ByteSource } from "./src/io/byte_source.ts";
export { createSafetensorsWriter } from "./src/io/safetensors_writer.ts";
export { FormatError, NumericError, OptionError, ShapeError } from "./src/errors.ts";

// Types the public functions above take or return.
export type { CalibrationOptions, ModelInput } from "./src/pipeline/compress.ts";
export type { FisherOptions, FwsvdCalibration, FwsvdLayer } from "./src/pipeline/fwsvd.ts";
export type { FwsvdFactorOptions } from "./src/pipeline/fwsvd.ts";
export type { KfacStore } from "./src/pipeline/fwsvd.ts";
export type {
  BlockBackwardOptions,
  BlockGrads,
  BlockValues,
  GradBlock,
  ValueName,
} from "./src/model/backward.ts";
export type { GradHead, GradLinear, LinearGrads } from "./src/model/backward_ops.ts";
export type { Layout } from "./src/model/llama.ts";
export type { CholeskyOptions, CholeskyResult } from "./src/linalg/cholesky.ts";
export { ResidentCholesky } from "./src/linalg/cholesky_resident.ts";
export type { DType } from "./src/io/tensor_reader.ts";
export type { EncodeOptions } from "./src/tokenize/tokenizer.ts";
export type { FloatArray } from "./src/linalg/matrix.ts";
export type { GgufFile, GgufNumberArray, GgufValue, OpenGgufOptions } from "./src/io/gguf.ts";
export type { KlOptions, KlResult } from "./src/eval/kl.ts";
export type { KvCacheLayer, KvCacheReport } from "./src/methods/kvcache.ts";
export type { BackendChoice, LinalgGpuInfo, LinalgInfo, LinalgOptions } from "./src/linalg/backend.ts";
export type { LinearName } from "./src/model/names.ts";
export type { MatmulOptions } from "./src/linalg/gemm.ts";
export type { ModelWeights, ProgressEvent } from "./src/model/llama.ts";
export type { Observer } from "./src/calib/observer.ts";
export type { OpenUrlOptions } from "./src/io/url_source.ts";
export type { LayerParams, ParamSummary, RankOptions } from "./src/methods/ratio.ts";
export type { RopeScaling } from "./src/model/rope.ts";
export type { SafetensorsEntry, SafetensorsReader } from "./src/io/safetensors_reader.ts";
export type {
  SafetensorsStreamWriter,
  SafetensorsWriter,
  SafetensorsWriterOptions,
  TensorPlan,
} from "./src/io/safetensors_writer.ts";
export type { SideFiles } from "./src/pipeline/output.ts";
export type { SourceInput } from "./src/io/open_source.ts";
export type { SvdResult } from "./src/linalg/svd.ts";
export type { SvdTruncatedOptions } from "./src/linalg/svd_truncated.ts";
export type { UpdateResult, UpdateStats } from "./src/methods/svdllm.ts";
export type { WritableDType } from "./src/io/dtype.ts";
export type { SensitivityTable } from "./src/methods/asvd_sensitivity.ts";
export { LINEAR_NAMES } from "./src/model/names.ts";
