/**
 * The one interface every weight format is read through (safetensors, sharded safetensors, GGUF):
 * a list of tensor descriptions, and reads of one tensor at a time as float32.
 *
 * @module
 */
import { NumericError } from "../errors.ts";

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

const FINITE_CHECKED = Symbol.for("@svd/llm/finite-checked");

/**
 * `reader` with every {@link TensorReader.read} checked for NaN and ±Inf: a non-finite value throws a
 * {@link NumericError} naming the tensor, the file and the element (row and column of a matrix), instead of
 * letting it spread through a forward pass into a NaN perplexity or a NaN model. Idempotent: a reader already
 * checked is returned as it is.
 *
 * @example
 * ```ts ignore
 * import { checkedReader } from "./tensor_reader.ts";
 * const reader = checkedReader(await openSafetensors("model.safetensors"));
 * await reader.read("model.norm.weight"); // NumericError if it holds a NaN
 * ```
 */
export function checkedReader(reader: TensorReader): TensorReader {
  if ((reader as unknown as Record<symbol, unknown>)[FINITE_CHECKED]) return reader;
  return {
    [FINITE_CHECKED]: true,
    get name() {
      return reader.name;
    },
    get metadata() {
      return reader.metadata;
    },
    tensors: () => reader.tensors(),
    has: (name) => reader.has(name),
    info: (name) => reader.info(name),
    async read(name: string): Promise<Float32Array> {
      const data = await reader.read(name);
      assertFiniteTensor(data, name, reader);
      return data;
    },
    close: () => reader.close(),
  } as TensorReader;
}

/** Throw a {@link NumericError} naming tensor `name` of `reader` if `data` holds a NaN or an infinity. */
function assertFiniteTensor(data: Float32Array, name: string, reader: TensorReader): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v - v !== 0) { // NaN and ±Inf only (one subtraction: this loop runs over every weight)
      const shape = reader.info(name).shape;
      const cols = shape.length >= 2 ? shape[shape.length - 1] : 0;
      const where = cols ? `element ${i} (row ${Math.floor(i / cols)}, column ${i % cols})` : `element ${i}`;
      throw new NumericError(
        `read ${name} from ${reader.name}: non-finite value ${v} at ${where} of shape [${shape.join(", ")}]`,
      );
    }
  }
}
