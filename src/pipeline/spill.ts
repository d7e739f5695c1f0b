/**
 * A keyed store of typed arrays that a whole-model pass produces for every block and the block loop reads
 * back one block at a time (SoCo's bases, FWSVD's K-FAC factors and checkpoints): either spilled to one
 * temporary file, so that memory holds what is being read whatever the model's depth, or kept in memory.
 *
 * The file is created in the system's temporary folder and unlinked right after it is opened where the
 * platform allows (POSIX), so nothing is left behind even when the process is killed; otherwise it is removed
 * on {@link SpillStore.close}. Without `node:fs` (browsers, workerd) the store keeps the arrays in memory.
 * Arrays are stored with their element type (Float32Array or Float64Array): what goes in comes back bit for bit.
 *
 * @example
 * ```ts
 * import { openSpillStore } from "./spill.ts";
 * const store = await openSpillStore({ what: "example", spill: true });
 * store.put("block 0", new Float64Array([1, 2, 3]));
 * store.get("block 0"); // Float64Array [1, 2, 3], read back from the file
 * await store.close();
 * ```
 *
 * @module
 */
import { OptionError } from "../errors.ts";

/** The element types a {@link SpillStore} keeps. */
export type SpillArray = Float32Array | Float64Array;

/** Key → typed array, in a temporary file or in memory. */
export interface SpillStore {
  /** Whether the arrays live in a temporary file (true) or in memory. */
  readonly spilled: boolean;
  /** Keep `data` under `key` (a key is written once; in memory the array itself is kept, not a copy). */
  put(key: string, data: SpillArray): void;
  /** The array under `key` (read back from the file when spilled: a fresh copy each call). */
  get(key: string): SpillArray;
  /** Whether `key` was put. */
  has(key: string): boolean;
  /** Bytes stored. */
  bytes(): number;
  /** Release the file, or the arrays (idempotent). */
  close(): Promise<void>;
}

/** Options of {@link openSpillStore}. */
export interface SpillOptions {
  /** What is stored, for errors and the temporary folder's name (e.g. "soco bases"). */
  what: string;
  /**
   * true: spill to a temporary file (an error without `node:fs`); false: keep in memory; "auto" (default):
   * spill when `node:fs` is available.
   */
  spill?: boolean | "auto";
  /** Folder of the temporary file (default the system's temporary folder). */
  dir?: string;
}

interface Entry {
  offset: number;
  length: number;
  f64: boolean;
}

/** A store of arrays (see the module doc). */
export async function openSpillStore(opts: SpillOptions): Promise<SpillStore> {
  const spill = opts.spill ?? "auto", what = opts.what;
  if (spill === false) return memoryStore(what);
  let fs: typeof import("node:fs") | undefined;
  try {
    fs = await import("node:fs");
  } catch (e) {
    if (spill === true) {
      throw new OptionError(`${what}: cannot spill to a file here (no node:fs: ${(e as Error).message})`);
    }
    return memoryStore(what);
  }
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = fs.mkdtempSync(join(opts.dir ?? tmpdir(), `${what.replace(/[^a-z0-9]+/gi, "-")}-`));
  const fd = fs.openSync(join(dir, "spill.bin"), "w+");
  let removed = false;
  const remove = () => {
    if (removed) return;
    try {
      fs.rmSync(dir, { recursive: true, force: true });
      removed = true;
    } catch { /* Windows: an open file cannot be removed; close() retries */ }
  };
  remove(); // POSIX: the open descriptor keeps the data; the name is gone
  const entries = new Map<string, Entry>();
  let end = 0, open = true;
  const live = (key: string) => {
    if (!open) throw new OptionError(`${what}: the spill store is closed (reading ${key})`);
  };
  return {
    spilled: true,
    put(key, data) {
      live(key);
      if (entries.has(key)) throw new OptionError(`${what}: ${key} was already stored`);
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      let done = 0;
      while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done, end + done);
      entries.set(key, { offset: end, length: data.length, f64: data instanceof Float64Array });
      end += bytes.length;
    },
    get(key) {
      live(key);
      const e = entries.get(key);
      if (!e) throw new OptionError(`${what}: nothing stored under ${key}`);
      const out = e.f64 ? new Float64Array(e.length) : new Float32Array(e.length);
      const bytes = new Uint8Array(out.buffer);
      let done = 0;
      while (done < bytes.length) {
        const n = fs.readSync(fd, bytes, done, bytes.length - done, e.offset + done);
        if (n <= 0) throw new OptionError(`${what}: the spill file ended early (reading ${key})`);
        done += n;
      }
      return out;
    },
    has: (key) => entries.has(key),
    bytes: () => end,
    close() {
      if (open) {
        open = false;
        fs.closeSync(fd);
      }
      remove();
      return Promise.resolve();
    },
  };
}

function memoryStore(what: string): SpillStore {
  const arrays = new Map<string, SpillArray>();
  let bytes = 0, open = true;
  const live = (key: string) => {
    if (!open) throw new OptionError(`${what}: the spill store is closed (reading ${key})`);
  };
  return {
    spilled: false,
    put(key, data) {
      live(key);
      if (arrays.has(key)) throw new OptionError(`${what}: ${key} was already stored`);
      arrays.set(key, data);
      bytes += data.byteLength;
    },
    get(key) {
      live(key);
      const a = arrays.get(key);
      if (!a) throw new OptionError(`${what}: nothing stored under ${key}`);
      return a;
    },
    has: (key) => arrays.has(key),
    bytes: () => bytes,
    close() {
      open = false;
      arrays.clear();
      return Promise.resolve();
    },
  };
}
