/**
 * Streaming safetensors writer: the header is computed from a plan (names, dtypes, shapes) and written first,
 * then tensors are streamed to disk one at a time **in plan order**, so a whole model never sits in memory.
 * Output goes to `<path>.tmp-<random>` and is renamed onto `path` by `close()` after an fsync: the destination
 * is either absent, the old file, or the complete new file.
 *
 * @module
 */
import { DTYPE_SIZE, encodeFromFloat32, LITTLE_ENDIAN, type WritableDType } from "./dtype.ts";
import { commitTempFile, refuseExisting, releaseTempPath, tempPathFor } from "./atomic_write.ts";
import { OptionError, ShapeError } from "../errors.ts";

/** One tensor to be written. */
export interface TensorPlan {
  /** Tensor name, unique in the file. */
  name: string;
  /** Storage type; values are rounded to nearest (ties to even) for F16 and BF16. */
  dtype: WritableDType;
  /** Shape, outermost first (a linear weight is [out, in]); `[]` is a scalar. */
  shape: number[];
}

/** Options of {@link createSafetensorsWriter}. */
export interface SafetensorsWriterOptions {
  /** String metadata stored as `__metadata__`. */
  metadata?: Record<string, string>;
  /** Replace an existing destination at close (default false: refuse). */
  overwrite?: boolean;
  /** Files being read to produce this one: writing onto any of them is always refused (compared by real path). */
  inputs?: string[];
}

/** A safetensors file being written; see {@link createSafetensorsWriter}. */
export interface SafetensorsWriter {
  /** Destination path. */
  readonly path: string;
  /** Temporary file written until `close()`. */
  readonly tempPath: string;
  /** Names not yet written, in the order they must come. */
  pending(): readonly string[];
  /**
   * Write the next tensor of the plan; `data` is row-major with exactly shape-product values. Any error
   * (wrong name or order, wrong length, disk full) aborts the writer: the temporary file is removed.
   */
  write(name: string, data: Float32Array): Promise<void>;
  /** Check every tensor was written, fsync, and move the file onto `path`. */
  close(): Promise<void>;
  /** Stop and remove the temporary file; the destination is untouched. Safe to call twice. */
  abort(): Promise<void>;
}

const WRITE_CHUNK_ELEMENTS = 1 << 20;

/** Elements of a shape, validating it. */
function countOf(name: string, shape: unknown): number {
  if (!Array.isArray(shape)) {
    throw new ShapeError(`safetensors writer: tensor ${JSON.stringify(name)}: shape is not an array`);
  }
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new ShapeError(
        `safetensors writer: tensor ${JSON.stringify(name)}: shape ${
          JSON.stringify(shape)
        } must hold non-negative integers`,
      );
    }
    n *= d;
  }
  if (!Number.isSafeInteger(n * 4)) {
    throw new ShapeError(`safetensors writer: tensor ${JSON.stringify(name)} is too large`);
  }
  return n;
}

/** Build the header bytes for a plan, padded with spaces so the data section starts on an 8-byte boundary. */
export function buildSafetensorsHeader(
  plan: readonly TensorPlan[],
  metadata?: Record<string, string>,
): { header: Uint8Array; counts: number[]; dataBytes: number } {
  const seen = new Set<string>();
  const parts: string[] = [];
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") {
        throw new OptionError(
          `safetensors writer: metadata ${JSON.stringify(k)} must be a string, got ${typeof v}`,
        );
      }
    }
    parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  const counts: number[] = [];
  let offset = 0;
  for (const t of plan) {
    if (typeof t.name !== "string" || t.name === "" || t.name === "__metadata__") {
      throw new OptionError(`safetensors writer: invalid tensor name ${JSON.stringify(t.name)}`);
    }
    if (seen.has(t.name)) {
      throw new OptionError(`safetensors writer: tensor ${JSON.stringify(t.name)} planned twice`);
    }
    seen.add(t.name);
    if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16") {
      throw new OptionError(
        `safetensors writer: tensor ${JSON.stringify(t.name)}: dtype ${
          JSON.stringify(t.dtype)
        } not writable (F32, F16, BF16)`,
      );
    }
    const n = countOf(t.name, t.shape);
    const bytes = n * DTYPE_SIZE[t.dtype];
    counts.push(n);
    // Key order = plan order = data order; built by hand because JS objects reorder integer-like keys.
    parts.push(
      `${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":${
        JSON.stringify(t.shape)
      },"data_offsets":[${offset},${offset + bytes}]}`,
    );
    offset += bytes;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(json, 8);
  return { header, counts, dataBytes: offset };
}

/** Refuse a destination that is (by real path, or same device and inode) one of the inputs. */
async function refuseInputs(path: string, inputs: readonly string[]): Promise<void> {
  if (inputs.length === 0) return;
  const fs = await import("node:fs/promises");
  const { basename, dirname, join } = await import("node:path");
  const real = async (p: string): Promise<string | undefined> => {
    try {
      return await fs.realpath(p);
    } catch {
      // a destination that does not exist yet: resolve its folder
      try {
        return join(await fs.realpath(dirname(p)), basename(p));
      } catch {
        return undefined;
      }
    }
  };
  const ident = async (p: string): Promise<string | undefined> => {
    try {
      const s = await fs.stat(p);
      return `${s.dev}:${s.ino}`;
    } catch {
      return undefined;
    }
  };
  const destReal = await real(path);
  const destId = await ident(path);
  for (const input of inputs) {
    const same = (destReal !== undefined && destReal === await real(input)) ||
      (destId !== undefined && destId !== "0:0" && destId === await ident(input));
    if (same) {
      throw new OptionError(`safetensors writer: refusing to write ${path}: it is the input file ${input}`);
    }
  }
}

/** Where a streamed safetensors file goes: bytes appended in order, then closed (or aborted). */
export interface ByteSink {
  /** Append `bytes` (the caller may reuse the buffer once this resolves). */
  write(bytes: Uint8Array): Promise<void>;
  /** Everything was written: make it final. */
  close(): Promise<void>;
  /** Give up: nothing written may look complete. Safe to call twice, and after a failed `close`. */
  abort(): Promise<void>;
}

/** A safetensors file being streamed to a {@link ByteSink}; see {@link createSafetensorsStreamWriter}. */
export interface SafetensorsStreamWriter {
  /** Names not yet written, in the order they must come. */
  pending(): readonly string[];
  /**
   * Write the next tensor of the plan; `data` is row-major with exactly shape-product values. Any error
   * (wrong name or order, wrong length, disk full) aborts the writer and its sink.
   */
  write(name: string, data: Float32Array): Promise<void>;
  /** Check every tensor was written and close the sink. */
  close(): Promise<void>;
  /** Stop and abort the sink. Safe to call twice. */
  abort(): Promise<void>;
}

/**
 * Stream a safetensors file with the tensors of `plan` into `sink`: the header first (offsets precomputed from
 * the plan), then each `write` appends one tensor, **in plan order**. `name` is used in error messages.
 *
 * @example
 * ```ts
 * import { createSafetensorsStreamWriter } from "./safetensors_writer.ts";
 * const parts: Uint8Array[] = [];
 * const w = await createSafetensorsStreamWriter({
 *   write: async (b) => void parts.push(b.slice()),
 *   close: async () => {},
 *   abort: async () => void (parts.length = 0),
 * }, [{ name: "w", dtype: "F32", shape: [2] }]);
 * await w.write("w", new Float32Array([1, 2]));
 * await w.close();
 * console.log(parts.length); // 2: the header, then the tensor
 * ```
 */
export async function createSafetensorsStreamWriter(
  sink: ByteSink,
  plan: readonly TensorPlan[],
  opts: { metadata?: Record<string, string>; name?: string } = {},
): Promise<SafetensorsStreamWriter> {
  const { header, counts } = buildSafetensorsHeader(plan, opts.metadata);
  const path = opts.name ?? "(stream)";
  let next = 0;
  let state: "open" | "closed" | "aborted" = "open";
  let busy = false;

  async function abort(): Promise<void> {
    if (state !== "open") return;
    state = "aborted";
    await sink.abort();
  }

  /** Run `fn`; on any error abort the writer (and the sink) and rethrow. */
  async function guarded(what: string, fn: () => Promise<void>): Promise<void> {
    if (state !== "open") {
      throw new OptionError(`safetensors writer ${path}: ${what}: writer is already ${state}`);
    }
    if (busy) {
      const e = new OptionError(
        `safetensors writer ${path}: ${what}: another write is still running (await each write)`,
      );
      await abort();
      throw e;
    }
    busy = true;
    try {
      await fn();
    } catch (e) {
      await abort().catch(() => {});
      throw e;
    } finally {
      busy = false;
    }
  }

  try {
    await sink.write(header);
  } catch (e) {
    state = "aborted";
    await sink.abort().catch(() => {});
    throw e;
  }

  return {
    pending: () => plan.slice(next).map((t) => t.name),
    write(name: string, data: Float32Array): Promise<void> {
      return guarded(`write ${JSON.stringify(name)}`, async () => {
        const t = plan[next];
        if (!t || t.name !== name) {
          const known = plan.some((p) => p.name === name);
          throw new OptionError(
            `safetensors writer ${path}: tensor ${JSON.stringify(name)} ${
              !known
                ? "is not in the plan"
                : t
                ? `written out of order: expected ${JSON.stringify(t.name)} next`
                : "written twice"
            }`,
          );
        }
        if (!(data instanceof Float32Array)) {
          throw new ShapeError(
            `safetensors writer ${path}: tensor ${JSON.stringify(name)}: data must be a Float32Array`,
          );
        }
        if (data.length !== counts[next]) {
          throw new ShapeError(
            `safetensors writer ${path}: tensor ${JSON.stringify(name)} of shape ${
              JSON.stringify(t.shape)
            } needs ${counts[next]} values, got ${data.length}`,
          );
        }
        if (t.dtype === "F32" && LITTLE_ENDIAN) {
          // in parts of at most 1 GiB: file writes are limited to 2 GiB each
          const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
          for (let i = 0; i < bytes.byteLength; i += 1 << 30) {
            await sink.write(bytes.subarray(i, Math.min(bytes.byteLength, i + (1 << 30))));
          }
        } else {
          // Convert in chunks so a tensor is never duplicated whole in memory.
          const size = DTYPE_SIZE[t.dtype];
          const buf = new Uint8Array(Math.min(data.length, WRITE_CHUNK_ELEMENTS) * size);
          for (let i = 0; i < data.length; i += WRITE_CHUNK_ELEMENTS) {
            const part = data.subarray(i, Math.min(data.length, i + WRITE_CHUNK_ELEMENTS));
            await sink.write(encodeFromFloat32(t.dtype, part, buf));
          }
        }
        next++;
      });
    },
    close(): Promise<void> {
      return guarded("close", async () => {
        if (next < plan.length) {
          const missing = plan.slice(next).map((t) => JSON.stringify(t.name));
          throw new OptionError(
            `safetensors writer ${path}: close before every tensor was written; missing ${
              missing.slice(0, 5).join(", ")
            }${missing.length > 5 ? ` and ${missing.length - 5} more` : ""}`,
          );
        }
        await sink.close();
        state = "closed";
      });
    },
    abort,
  };
}

/** The parts of a `node:fs/promises` FileHandle that {@link fileByteSink} uses. */
export interface WritableHandle {
  /** Positional write. */
  write(
    buffer: Uint8Array,
    offset: number,
    length: number,
    position: number,
  ): Promise<{ bytesWritten: number }>;
  /** Flush to disk. */
  sync(): Promise<void>;
  /** Close. */
  close(): Promise<void>;
}

/**
 * A {@link ByteSink} appending to the open file `handle` at `path` (positional writes from 0). Errors name the
 * path (a bare "No space left on device" names nothing). `close` fsyncs and closes; `abort` closes.
 */
export function fileByteSink(
  handle: WritableHandle,
  path: string,
  done: { close(): Promise<void>; abort(): Promise<void> },
): ByteSink {
  let position = 0;
  let open = true;
  const named = (what: string, e: unknown): Error => {
    const err = e as { code?: string; message?: string };
    const why = err.code === "ENOSPC" ? "no space left on device" : err.message ?? String(e);
    return Object.assign(new Error(`${what} ${path}: ${why}`), { code: err.code });
  };
  return {
    async write(bytes: Uint8Array): Promise<void> {
      let n = 0;
      while (n < bytes.byteLength) {
        let written: number;
        try {
          ({ bytesWritten: written } = await handle.write(bytes, n, bytes.byteLength - n, position));
        } catch (e) {
          throw named("write", e);
        }
        n += written;
        position += written;
      }
    },
    async close(): Promise<void> {
      try {
        await handle.sync();
        open = false;
        await handle.close();
      } catch (e) {
        throw named("close", e);
      }
      await done.close();
    },
    async abort(): Promise<void> {
      if (open) {
        open = false;
        await handle.close().catch(() => {});
      }
      await done.abort();
    },
  };
}

/**
 * Start writing a safetensors file at `path` with the tensors of `plan`. Tensors must then be written **in plan
 * order**: the header (offsets precomputed from the plan) is already on disk, and each `write` appends one
 * tensor. Refuses an existing `path` unless `overwrite: true`, and always refuses a `path` that is one of
 * `opts.inputs`.
 *
 * @example
 * ```ts ignore
 * import { createSafetensorsWriter } from "./safetensors_writer.ts";
 * const w = await createSafetensorsWriter("out.safetensors", [
 *   { name: "a", dtype: "F32", shape: [2, 3] },
 *   { name: "b", dtype: "BF16", shape: [4] },
 * ]);
 * try {
 *   await w.write("a", new Float32Array(6));
 *   await w.write("b", new Float32Array([1, 2, 3, 4]));
 *   await w.close();
 * } finally {
 *   await w.abort(); // no-op after a successful close
 * }
 * ```
 */
export async function createSafetensorsWriter(
  path: string,
  plan: readonly TensorPlan[],
  opts: SafetensorsWriterOptions = {},
): Promise<SafetensorsWriter> {
  const fs = await import("node:fs/promises");
  buildSafetensorsHeader(plan, opts.metadata); // a bad plan is refused before any file exists
  await refuseInputs(path, opts.inputs ?? []);
  await refuseExisting(path, opts.overwrite, "safetensors writer");
  const tempPath = tempPathFor(path);
  const handle = await fs.open(tempPath, "wx").catch((e) => {
    releaseTempPath(tempPath);
    throw e;
  });
  let settled = false;
  const sink = fileByteSink(handle, path, {
    close: async () => {
      settled = true; // commitTempFile removes the temporary file itself on failure
      await commitTempFile(tempPath, path, opts.overwrite);
    },
    abort: async () => {
      if (settled) return;
      settled = true;
      await fs.rm(tempPath, { force: true });
      releaseTempPath(tempPath);
    },
  });
  const w = await createSafetensorsStreamWriter(sink, plan, { metadata: opts.metadata, name: path });
  return { path, tempPath, pending: w.pending, write: w.write, close: w.close, abort: w.abort };
}

/**
 * Write a safetensors file with `fill` producing the tensors: closes on success, aborts (no destination, no
 * temporary file) if `fill` throws.
 *
 * @example
 * ```ts ignore
 * import { withSafetensorsWriter } from "./safetensors_writer.ts";
 * await withSafetensorsWriter("out.safetensors", [{ name: "w", dtype: "F16", shape: [2] }], async (w) => {
 *   await w.write("w", new Float32Array([0.5, -1]));
 * });
 * ```
 */
export async function withSafetensorsWriter(
  path: string,
  plan: readonly TensorPlan[],
  fill: (writer: SafetensorsWriter) => Promise<void>,
  opts: SafetensorsWriterOptions = {},
): Promise<void> {
  const w = await createSafetensorsWriter(path, plan, opts);
  try {
    await fill(w);
    await w.close();
  } finally {
    await w.abort();
  }
}
