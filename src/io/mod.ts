/**
 * The io room's public API: byte sources (file, URL, Blob, bytes), the tensor reader interface, safetensors
 * reading (single file and sharded) and streaming writing, dtype conversion and atomic writes.
 *
 * @module
 */
export { type ByteSource, checkRange, openFile } from "./byte_source.ts";
export { checkedReader, type DType, type TensorInfo, type TensorReader } from "./tensor_reader.ts";
export { fetchUrlText, openUrl, type OpenUrlOptions, requestWithPolicy } from "./url_source.ts";
export { checkRegularFile, MAX_TEXT_FILE_BYTES, parseJsonObject, readTextFile } from "./text_file.ts";
export { openBlob } from "./blob_source.ts";
export { openBytes } from "./memory_source.ts";
export { isByteSource, openSource, type SourceInput } from "./open_source.ts";
export {
  decodeInto,
  decodeToFloat32,
  DTYPE_SIZE,
  dtypeSize,
  encodeFromFloat32,
  f16BitsToNumber,
  isDType,
  numberToBf16Bits,
  numberToF16Bits,
  type WritableDType,
} from "./dtype.ts";
export {
  firstDuplicateKey,
  MAX_HEADER_BYTES,
  openSafetensors,
  readSafetensorsHeader,
  readTensorFloat32,
  type SafetensorsEntry,
  type SafetensorsHeader,
  type SafetensorsReader,
} from "./safetensors_reader.ts";
export {
  INDEX_FILE,
  isPlainShardName,
  openModelWeights,
  openSetWeights,
  openShardedSafetensors,
  pickWeights,
} from "./sharded.ts";
export {
  type FileSet,
  fileSetFromFiles,
  fileSetFromTar,
  isFileSet,
  isTarHeader,
  readSetText,
  tarBlob,
} from "./file_set.ts";
export {
  buildSafetensorsHeader,
  createSafetensorsWriter,
  type SafetensorsWriter,
  type SafetensorsWriterOptions,
  type TensorPlan,
  withSafetensorsWriter,
} from "./safetensors_writer.ts";
export { type AtomicWriteOptions, pendingTempPaths, writeFileAtomic } from "./atomic_write.ts";
export {
  GGUF_MAX_HEADER_BYTES,
  type GgufFile,
  type GgufNumberArray,
  type GgufValue,
  openGguf,
  type OpenGgufOptions,
} from "./gguf.ts";
