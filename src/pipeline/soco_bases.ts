/**
 * Where SoCo keeps the spectral bases of every block linear between their computation and the written
 * model: U and C (float32, r·(m+n) values per linear — about 1.3× the block's weights) either in memory, or
 * spilled to one temporary file and read back one block at a time, so that memory holds one block's bases
 * whatever the model's depth. σ and the shape stay in memory (r values per linear).
 *
 * The file is created in the system's temporary folder and unlinked right after it is opened where the
 * platform allows (POSIX), so nothing is left behind even when the process is killed; otherwise it is removed
 * on {@link BasisStore.close}. Without `node:fs` (browsers, workerd) the store keeps the bases in memory.
 *
 * @example
 * ```ts
 * import { openBasisStore } from "./soco_bases.ts";
 * import { svdBasis } from "../methods/soco.ts";
 * import { matrix } from "../linalg/matrix.ts";
 * const store = await openBasisStore({ spill: true });
 * await store.put(0, [svdBasis("w", matrix(2, 3, new Float32Array([1, 2, 3, 4, 5, 6])))]);
 * const [b] = store.get(0); // read back from the file
 * b.c.rows; // 2
 * await store.close();
 * ```
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import type { SpectralBasis } from "../methods/soco.ts";

/** Block-indexed storage of spectral bases. */
export interface BasisStore {
  /** Whether U and C live in a temporary file (true) or in memory. */
  readonly spilled: boolean;
  /** Keep some of block `block`'s bases (appended to those already stored for it, in block order). */
  put(block: number, bases: readonly SpectralBasis[]): Promise<void>;
  /** Block `block`'s bases (read back from the file when spilled: a fresh copy each call). */
  get(block: number): SpectralBasis[];
  /** Bytes of U and C stored over all blocks. */
  bytes(): number;
  /** Release the file (idempotent). */
  close(): Promise<void>;
}

/** Options of {@link openBasisStore}. */
export interface BasisStoreOptions {
  /**
   * true: spill to a temporary file (an error without `node:fs`); false: keep in memory; "auto" (default):
   * spill when `node:fs` is available.
   */
  spill?: boolean | "auto";
  /** Folder of the temporary file (default the system's temporary folder). */
  dir?: string;
}

type Meta = Omit<SpectralBasis, "u" | "c"> & { offset: number };

/** A store of bases (see the module doc). */
export async function openBasisStore(opts: BasisStoreOptions = {}): Promise<BasisStore> {
  const spill = opts.spill ?? "auto";
  if (spill === false) return memoryStore();
  let fs: typeof import("node:fs") | undefined;
  try {
    fs = await import("node:fs");
  } catch (e) {
    if (spill === true) {
      throw new OptionError(
        `soco: cannot spill the bases to a file here (no node:fs: ${(e as Error).message})`,
      );
    }
    return memoryStore();
  }
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = fs.mkdtempSync(join(opts.dir ?? tmpdir(), "soco-bases-"));
  const path = join(dir, "bases.f32");
  const fd = fs.openSync(path, "w+");
  let removed = false;
  const remove = () => {
    if (removed) return;
    try {
      fs.rmSync(dir, { recursive: true, force: true });
      removed = true;
    } catch { /* Windows: an open file cannot be removed; close() retries */ }
  };
  remove(); // POSIX: the open descriptor keeps the data; the name is gone
  const blocks: Meta[][] = [];
  let end = 0, open = true;
  const check = (block: number) => {
    if (!open) throw new OptionError(`soco: the basis store is closed (block ${block})`);
    if (!blocks[block]) throw new OptionError(`soco: no bases stored for block ${block}`);
  };
  return {
    spilled: true,
    put(block, bases) {
      if (!open) return Promise.reject(new OptionError(`soco: the basis store is closed (block ${block})`));
      const metas: Meta[] = [];
      for (const b of bases) {
        const { u, c, ...meta } = b;
        metas.push({ ...meta, offset: end });
        for (const m of [u, c]) {
          const bytes = new Uint8Array(m.data.buffer, m.data.byteOffset, m.data.byteLength);
          let done = 0;
          while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done, end + done);
          end += bytes.length;
        }
      }
      (blocks[block] ??= []).push(...metas);
      return Promise.resolve();
    },
    get(block) {
      check(block);
      return blocks[block].map(({ offset, ...meta }) => {
        const u = new Float32Array(meta.rows * meta.rank), c = new Float32Array(meta.rank * meta.cols);
        let at = offset;
        for (const a of [u, c]) {
          const bytes = new Uint8Array(a.buffer);
          let done = 0;
          while (done < bytes.length) {
            const n = fs.readSync(fd, bytes, done, bytes.length - done, at + done);
            if (n <= 0) {
              throw new OptionError(`soco: the bases file ended early (block ${block}, ${meta.name})`);
            }
            done += n;
          }
          at += bytes.length;
        }
        return {
          ...meta,
          u: { rows: meta.rows, cols: meta.rank, data: u },
          c: { rows: meta.rank, cols: meta.cols, data: c },
        };
      });
    },
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

function memoryStore(): BasisStore {
  const blocks: SpectralBasis[][] = [];
  let bytes = 0, open = true;
  return {
    spilled: false,
    put(block, bases) {
      (blocks[block] ??= []).push(...bases);
      for (const b of bases) bytes += b.u.data.byteLength + b.c.data.byteLength;
      return Promise.resolve();
    },
    get(block) {
      if (!open) throw new OptionError(`soco: the basis store is closed (block ${block})`);
      if (!blocks[block]) throw new OptionError(`soco: no bases stored for block ${block}`);
      return blocks[block];
    },
    bytes: () => bytes,
    close() {
      open = false;
      blocks.length = 0;
      return Promise.resolve();
    },
  };
}
