/**
 * The one interface every weight format is read through (safetensors, sharded safetensors, GGUF):
 * a list of tensor descriptions, and reads of one tensor at a time as float32.
 *
 * @module
 */

/** Storage types the readers understand. */
export type DType = "F32" | "F16" | "BF16" | "F64" | "I32" | "I64" | "U8";

/** Where one tensor lives and what it is. Shapes are row-major, outermost first (PyTorch order). */
export interface TensorInfo {
  /** Tensor name as stored (or canonical Hugging Face name after mapping). */
  readonly name: string;
  /** Storage type in the file. */
  readonly dtype: DType;
  /** Shape, outermost dimension first: a linear weight is [out, in]. */
  readonly shape: readonly number[];
  /** Byte length in the file. */
  readonly byteLength: number;
}

/** Read-only access to a model's tensors, one at a time, never the whole file. */
export interface TensorReader {
  /** The file, URL or directory read, for error messages. */
  readonly name: string;
  /** Free-form string metadata (safetensors `__metadata__`, GGUF key/values rendered as strings). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Every tensor, in storage order. */
  tensors(): readonly TensorInfo[];
  /** True if a tensor of that name exists. */
  has(name: string): boolean;
  /** Description of one tensor; throws a FormatError naming the tensor if absent. */
  info(name: string): TensorInfo;
  /** Read one tensor, converted to float32 (F16/BF16 widened). Allocates only that tensor. */
  read(name: string): Promise<Float32Array>;
  /** Release file handles / connections. */
  close(): Promise<void>;
}
