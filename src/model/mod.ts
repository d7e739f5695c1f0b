/**
 * The model room's public API: the typed spec, tensor names, the block-wise LLaMA forward pass, RoPE, and
 * {@link loadModel} for Hugging Face folders and GGUF files.
 *
 * @module
 */
export {
  type LlamaSpec,
  SPEC_LIMITS,
  specFromGguf,
  specFromHfConfig,
  SUPPORTED_MODEL_TYPES,
} from "./spec.ts";
export {
  blockPrefix,
  EMBED,
  FINAL_NORM,
  ggufToHfName,
  hfToGgufName,
  inputNormName,
  LINEAR_NAMES,
  type LinearName,
  linearPrefix,
  LM_HEAD,
  postNormName,
  SVD_A,
  SVD_B,
} from "./names.ts";
export {
  applyLinear,
  BLOCK_FIELD,
  embed,
  finalLogits,
  forwardBlock,
  forwardBlockCached,
  forwardHidden,
  type LayerCache,
  type Layout,
  type Linear,
  linearIn,
  type LinearObserver,
  linearOut,
  type LlamaBlock,
  type LlamaHead,
  loadBlock,
  loadHead,
  loadLinear,
  logSumExp,
  type ModelWeights,
  newLayerCache,
  type ProgressEvent,
  rmsNorm,
  silu,
  tokenNll,
} from "./llama.ts";
export {
  applyRope,
  permuteQK,
  ropeFrequencies,
  type RopeScaling,
  type RopeTables,
  ropeTables,
} from "./rope.ts";
export {
  BLOCK_PROGRAM,
  type BlockOp,
  opInputs,
  opsAffectedBy,
  opsNeededFor,
  type ValueName,
  valueWidth,
} from "./block_def.ts";
export {
  type BlockEnv,
  BlockScratch,
  type BlockValues,
  evalBlockOp,
  type OverriddenValue,
  runBlockProgram,
  type RunOptions,
} from "./block_eval.ts";
export { ggufAsHfReader, type LoadedModel, loadModel, modelFromGguf } from "./load.ts";
export { type ModelFiles, type ResolvedModelFiles, resolveModelFiles } from "./load.ts";
export { checkLayerCount, checkLoadedModel } from "./load.ts";
export { loadModelUrl } from "./load_url.ts";
// Types the exported functions name, re-exported so this entry point documents them (deno doc --lint).
export type { FloatArray, Matrix } from "../linalg/matrix.ts";
export type { GgufFile, GgufNumberArray, GgufValue } from "../io/gguf.ts";
export type { FileSet } from "../io/file_set.ts";
export type { ByteSource } from "../io/byte_source.ts";
export type { DType, TensorInfo, TensorReader } from "../io/tensor_reader.ts";
export type { OpenUrlOptions } from "../io/url_source.ts";
export type { EncodeOptions, Tokenizer } from "../tokenize/tokenizer.ts";
