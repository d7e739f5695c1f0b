/**
 * Random-access byte sources: the one abstraction every format reader reads through.
 * A local file is opened here; URLs (HTTP Range) and browser Blobs live in their own files.
 *
 * @module
 */
import { FormatError } from "../errors.ts";

/** Random-access, read-only bytes of known size. Readers never ask for more than they need. */
export interface ByteSource {
  /** Path, URL or blob name, used in every error message. */
  readonly name: string;
  /** Total size in bytes. */
  readonly size: number;
  /** Read exactly `length` bytes starting at `offset`; throws a {@link FormatError} past the end. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Release the underlying handle. Safe to call twice. */
  close(): Promise<void>;
}

/** Throw a FormatError unless [offset, offset+length) lies inside a source of `size` bytes. */
export function checkRange(name: string, size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new FormatError(name, `invalid read range offset=${offset} length=${length}`);
  }
  if (offset + length > size) {
    throw new FormatError(
      name,
      `read of ${length} bytes at offset ${offset} runs past the end of the data (${size} bytes): file truncated?`,
    );
  }
}

/**
 * Open a local file as a {@link ByteSource} (works in Deno, Bun and Node through `node:fs/promises`).
 *
 * @example
 * ```ts
 * import { openFile } from "./byte_source.ts";
 * const src = await openFile("models/stories260K/stories260K.gguf");
 * const magic = await src.read(0, 4);
 * await src.close();
 * ```
 */
export async function openFile(path: string): Promise<ByteSource> {
  const { open, stat } = await import("node:fs/promises");
  // stat before open: opening a FIFO for reading blocks until a writer comes, which may be never
  const before = await stat(path).catch((e: Error) => {
    throw new FormatError(path, `cannot open file: ${e.message}`);
  });
  if (before.isDirectory()) throw new FormatError(path, "cannot read: it is a folder, not a file");
  if (!before.isFile()) {
    throw new FormatError(
      path,
      "cannot read: not a regular file (a FIFO, socket or device), expected a file",
    );
  }
  const handle = await open(path, "r").catch((e: Error) => {
    throw new FormatError(path, `cannot open file: ${e.message}`);
  });
  const st = await handle.stat();
  if (!st.isFile()) {
    await handle.close();
    throw new FormatError(path, "cannot read: not a regular file");
  }
  const size = st.size;
  let closed = false;
  return {
    name: path,
    size,
    async read(offset: number, length: number): Promise<Uint8Array> {
      checkRange(path, size, offset, length);
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(out, done, length - done, offset + done).catch((e: Error) => {
          // EIO and the like: name the file, which the errno alone does not
          throw new FormatError(path, `read of ${length} bytes at offset ${offset} failed: ${e.message}`);
        });
        if (bytesRead === 0) throw new FormatError(path, `unexpected end of file at offset ${offset + done}`);
        done += bytesRead;
      }
      return out;
    },
    async close(): Promise<void> {
      if (!closed) {
        closed = true;
        await handle.close();
      }
    },
  };
}
