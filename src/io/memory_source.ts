/**
 * Bytes already in memory (a fetched `ArrayBuffer`, a test fixture) as a {@link ByteSource}.
 *
 * @module
 */
import { type ByteSource, checkRange } from "./byte_source.ts";

/**
 * Wrap in-memory bytes as a {@link ByteSource}. Reads return copies, so callers may keep or mutate them.
 *
 * @example
 * ```ts
 * import { openBytes } from "./memory_source.ts";
 * const src = openBytes(new Uint8Array([1, 2, 3]), "three.bin");
 * const bytes = await src.read(0, 2); // Uint8Array [1, 2]
 * ```
 */
export function openBytes(bytes: Uint8Array | ArrayBuffer, name = "bytes"): ByteSource {
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const size = data.byteLength;
  return {
    name,
    size,
    read(offset: number, length: number): Promise<Uint8Array> {
      try {
        checkRange(name, size, offset, length);
      } catch (e) {
        return Promise.reject(e);
      }
      return Promise.resolve(data.slice(offset, offset + length));
    },
    close(): Promise<void> {
      return Promise.resolve();
    },
  };
}
