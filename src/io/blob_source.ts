/**
 * Browser `Blob` / `File` as a {@link ByteSource}: each read slices the blob, so a multi-gigabyte file picked in
 * a browser is never loaded whole.
 *
 * @module
 */
import { type ByteSource, checkRange } from "./byte_source.ts";
import { FormatError } from "../errors.ts";

/**
 * Wrap a `Blob` (or `File`) as a {@link ByteSource}. `name` defaults to the file's name, else `"blob"`.
 *
 * @example
 * ```ts
 * import { openBlob } from "./blob_source.ts";
 * const src = openBlob(new Blob([new Uint8Array([1, 2, 3])]), "three.bin");
 * const bytes = await src.read(1, 2); // Uint8Array [2, 3]
 * ```
 */
export function openBlob(blob: Blob, name?: string): ByteSource {
  const label = name ??
    (typeof File !== "undefined" && blob instanceof File && blob.name ? blob.name : "blob");
  const size = blob.size;
  return {
    name: label,
    size,
    async read(offset: number, length: number): Promise<Uint8Array> {
      checkRange(label, size, offset, length);
      if (length === 0) return new Uint8Array(0);
      let buf: ArrayBuffer;
      try {
        buf = await blob.slice(offset, offset + length).arrayBuffer();
      } catch (e) {
        throw new FormatError(
          label,
          `cannot read ${length} bytes at offset ${offset}: ${(e as Error).message}`,
        );
      }
      if (buf.byteLength !== length) {
        throw new FormatError(
          label,
          `read of ${length} bytes at offset ${offset} returned ${buf.byteLength} bytes (blob changed?)`,
        );
      }
      return new Uint8Array(buf);
    },
    close(): Promise<void> {
      return Promise.resolve();
    },
  };
}
