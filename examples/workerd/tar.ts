/**
 * A POSIX ustar archive written as a stream: one 512-byte header per file, its bytes, zero padding to 512,
 * and two zero blocks at the end. Why tar: one response body that `tar -x` (or {@link untar}) unpacks into
 * the compressed folder as it is, sizes known up front from the finished output, and the end marker tells a
 * complete archive from a cut one.
 *
 * @example
 * ```ts
 * import { tarStream, untar } from "./tar.ts";
 * const files = new Map([["a.txt", [new TextEncoder().encode("hi")]]]);
 * const bytes = new Uint8Array(await new Response(tarStream(files)).arrayBuffer());
 * console.log(new TextDecoder().decode(untar(bytes).get("a.txt"))); // "hi"
 * ```
 *
 * @module
 */

const BLOCK = 512;

/** The 512-byte ustar header of a regular file `name` of `size` bytes. */
export function tarHeader(name: string, size: number): Uint8Array {
  const enc = new TextEncoder();
  const nameBytes = enc.encode(name);
  if (nameBytes.length === 0 || nameBytes.length > 100) {
    throw new RangeError(`tar: file name ${JSON.stringify(name)} must be 1 to 100 bytes`);
  }
  if (!Number.isSafeInteger(size) || size < 0 || size >= 8 ** 11) {
    throw new RangeError(`tar: size of ${name} must be a whole number below 8 GiB, got ${size}`);
  }
  const h = new Uint8Array(BLOCK);
  const put = (at: number, s: string) => h.set(enc.encode(s), at);
  const octal = (v: number, width: number) => v.toString(8).padStart(width - 1, "0") + "\0";
  h.set(nameBytes, 0);
  put(100, octal(0o644, 8)); // mode
  put(108, octal(0, 8)); // uid
  put(116, octal(0, 8)); // gid
  put(124, octal(size, 12));
  put(136, octal(0, 12)); // mtime: reproducible output
  put(148, "        "); // checksum field counts as spaces while summing
  h[156] = 0x30; // "0": regular file
  put(257, "ustar\0");
  put(263, "00");
  let sum = 0;
  for (const b of h) sum += b;
  put(148, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

/**
 * The archive of `files` (name → parts in order) as a byte stream. Each part is handed out once and its
 * reference dropped from the map's arrays, so the caller's memory can shrink while the body is sent.
 */
export function tarStream(files: Map<string, Uint8Array[]>): ReadableStream<Uint8Array> {
  const queue: (() => Uint8Array)[] = [];
  for (const [name, parts] of files) {
    const size = parts.reduce((s, p) => s + p.length, 0);
    queue.push(() => tarHeader(name, size));
    for (let i = 0; i < parts.length; i++) {
      queue.push(() => {
        const p = parts[i];
        parts[i] = new Uint8Array(0);
        return p;
      });
    }
    if (size % BLOCK) queue.push(() => new Uint8Array(BLOCK - (size % BLOCK)));
  }
  queue.push(() => new Uint8Array(2 * BLOCK));
  let next = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (next < queue.length) controller.enqueue(queue[next++]());
      else controller.close();
    },
  });
}

/**
 * Read a ustar archive (regular files only) into name → bytes. Throws a RangeError for a cut archive (no end
 * marker) or a bad header checksum: a partial result never looks complete.
 */
export function untar(bytes: Uint8Array): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const dec = new TextDecoder();
  const field = (h: Uint8Array, at: number, len: number) =>
    dec.decode(h.subarray(at, at + len)).replace(/\0.*$/s, "");
  let pos = 0;
  while (pos + BLOCK <= bytes.length) {
    const h = bytes.subarray(pos, pos + BLOCK);
    if (h.every((b) => b === 0)) return out;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
    if (parseInt(field(h, 148, 8).trim(), 8) !== sum) {
      throw new RangeError(`untar: bad header checksum at byte ${pos}`);
    }
    const name = field(h, 0, 100);
    const size = parseInt(field(h, 124, 12).trim(), 8);
    if (pos + BLOCK + size > bytes.length) throw new RangeError(`untar: ${name} is cut short`);
    out.set(name, bytes.slice(pos + BLOCK, pos + BLOCK + size));
    pos += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
  }
  throw new RangeError(`untar: no end-of-archive marker after ${bytes.length} bytes (archive cut short)`);
}
