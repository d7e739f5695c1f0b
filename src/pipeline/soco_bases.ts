/**
 * Where SoCo keeps the spectral bases of every block linear between their computation and the written
 * model: U and C (float32, r·(m+n) values per linear — about 1.3× the block's weights) either in memory, or
 * spilled to one temporary file and read back one block at a time, so that memory holds one block's bases
 * whatever the model's depth. σ and the shape stay in memory (r values per linear).
 *
 * The file is `spill.ts`'s (shared with FWSVD's factors): created in the system's temporary folder and
 * unlinked right after it is opened where the platform allows (POSIX), so nothing is left behind even when the
 * process is killed; otherwise it is removed on {@link BasisStore.close}. Without `node:fs` (browsers,
 * workerd) the store keeps the bases in memory.
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
import { openSpillStore } from "./spill.ts";

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

type Meta = Omit<SpectralBasis, "u" | "c">;

/** A store of bases (see the module doc). */
export async function openBasisStore(opts: BasisStoreOptions = {}): Promise<BasisStore> {
  const store = await openSpillStore({ what: "soco bases", spill: opts.spill ?? "auto", dir: opts.dir });
  const blocks: Meta[][] = [];
  let open = true;
  const check = (block: number) => {
    if (!open) throw new OptionError(`soco: the basis store is closed (block ${block})`);
    if (!blocks[block]) throw new OptionError(`soco: no bases stored for block ${block}`);
  };
  return {
    spilled: store.spilled,
    put(block, bases) {
      if (!open) return Promise.reject(new OptionError(`soco: the basis store is closed (block ${block})`));
      const metas = blocks[block] ??= [];
      for (const { u, c, ...meta } of bases) {
        store.put(`${block} ${metas.length} u`, u.data);
        store.put(`${block} ${metas.length} c`, c.data);
        metas.push(meta);
      }
      return Promise.resolve();
    },
    get(block) {
      check(block);
      return blocks[block].map((meta, j) => ({
        ...meta,
        u: { rows: meta.rows, cols: meta.rank, data: store.get(`${block} ${j} u`) as Float32Array },
        c: { rows: meta.rank, cols: meta.cols, data: store.get(`${block} ${j} c`) as Float32Array },
      }));
    },
    bytes: () => store.bytes(),
    close() {
      open = false;
      blocks.length = 0;
      return store.close();
    },
  };
}
