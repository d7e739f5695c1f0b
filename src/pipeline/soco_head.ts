/**
 * The head SoCo trains with, in one vocabulary-sized matrix instead of two: the embedding rows of the tokens the
 * calibration windows use, and lm_head with its rows reordered so that those tokens come first.
 *
 * Why: the training reads the embedding only at the windows' ids, but a full embedding is vocab × d floats
 * (131 MB at vocab 32000, d 1024), as much as lm_head. Renumbering the used ids 0 … K−1 and moving their lm_head
 * rows to the top changes no loss and no gradient — log-sum-exp and the KL sum over the whole vocabulary in any
 * order, and every target is a used id — so a K × d embedding serves instead.
 *
 * The tensors are read afresh from the reader (not through `loadHead`'s per-reader cache, which would keep the
 * full embedding alive and must not be reordered in place).
 *
 * @example
 * ```ts ignore
 * import { compactHead } from "./soco_head.ts";
 * const { head, remap } = await compactHead(reader, spec, windows);
 * await lossAndGrad({ spec, head, block }, windows.map(remap));
 * ```
 *
 * @module
 */
import { ShapeError } from "../errors.ts";
import type { TensorReader } from "../io/tensor_reader.ts";
import type { GradHead } from "../model/backward_ops.ts";
import { EMBED, FINAL_NORM, LM_HEAD } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import type { Matrix } from "../linalg/matrix.ts";
import type { SpillStore } from "./spill.ts";

/** A head over renumbered ids, and the renumbering. */
export interface CompactHead {
  /** embed: K × d (row k = the original embedding row of the k-th used id); lmHead: vocab × d, reordered. */
  head: GradHead<Float32Array>;
  /** Used ids, ascending (K): new id k is original id `used[k]`. */
  used: Int32Array;
  /** With lm_head in a store: let its copy in memory go (the next use reads it again); else a no-op. */
  dropLmHead: () => void;
  /** A window in original ids → the same window in new ids. */
  remap: (w: Int32Array) => Int32Array;
}

/** Options of {@link compactHead}. */
export interface CompactHeadOptions {
  /**
   * Keep lm_head in this store (e.g. a temporary file, `spill.ts`) instead of in memory, read back at its
   * first use after each {@link CompactHead.dropLmHead} (see {@link leasedRows}). A store that keeps arrays in
   * memory changes nothing.
   */
  store?: SpillStore;
  /** Called before each read of lm_head back from the store (e.g. to collect what the blocks left behind). */
  beforeRead?: () => void;
  /** Told that `bytes` of arrays became garbage (the full embedding, before lm_head is read): collect them. */
  dropped?: (bytes: number) => void;
}

/** The compact head for `windows` (original ids; each id must be < vocab). */
export async function compactHead(
  reader: TensorReader,
  spec: LlamaSpec,
  windows: readonly Int32Array[],
  opts: CompactHeadOptions = {},
): Promise<CompactHead> {
  const V = spec.vocabSize, d = spec.hiddenSize;
  const newId = new Int32Array(V).fill(-1);
  for (const w of windows) {
    for (const id of w) {
      if (!(id >= 0 && id < V)) {
        throw new ShapeError(`soco: token id ${id} of a calibration window is outside the vocabulary (${V})`);
      }
      newId[id] = 0;
    }
  }
  const usedList: number[] = [];
  for (let id = 0; id < V; id++) if (newId[id] === 0) newId[id] = usedList.push(id) - 1;
  const used = Int32Array.from(usedList), K = used.length;
  const read = async (name: string): Promise<Float32Array> => {
    const data = await reader.read(name);
    if (data.length !== V * d) {
      throw new ShapeError(`soco: ${name} in ${reader.name} has ${data.length} values, expected ${V}×${d}`);
    }
    return data as Float32Array;
  };
  // The embedding: gather the used rows, then let the full table go.
  const embed = new Float32Array(K * d); // K×d
  {
    const full = await read(EMBED);
    for (let k = 0; k < K; k++) embed.set(full.subarray(used[k] * d, (used[k] + 1) * d), k * d);
  }
  opts.dropped?.(4 * V * d); // the full embedding: not beside lm_head
  // lm_head (a fresh copy even when tied): row k ↔ row used[k], in place. used is ascending and used[k] ≥ k,
  // so the row at used[k] is still the original one when step k swaps it up (earlier steps touched only rows
  // j < k and used[j] < used[k]).
  const lm = await read(spec.tieWordEmbeddings ? EMBED : LM_HEAD); // V×d
  const tmp = new Float32Array(d);
  for (let k = 0; k < K; k++) {
    const u = used[k];
    if (u === k) continue;
    tmp.set(lm.subarray(k * d, (k + 1) * d));
    lm.copyWithin(k * d, u * d, (u + 1) * d);
    lm.set(tmp, u * d);
  }
  const norm = await reader.read(FINAL_NORM) as Float32Array; // d
  let lease: Lease = { matrix: { rows: V, cols: d, data: lm }, drop: () => {} };
  if (opts.store?.spilled) {
    opts.store.put(LM_HEAD, lm);
    lease = leasedRows(V, d, () => {
      opts.beforeRead?.();
      return opts.store!.get(LM_HEAD) as Float32Array;
    });
  }
  return {
    head: { embed: { rows: K, cols: d, data: embed }, norm, lmHead: lease.matrix },
    dropLmHead: lease.drop,
    used,
    remap: (w) => w.map((id) => newId[id]),
  };
}

/** A matrix read back when first used, and let go on demand (see {@link leasedRows}). */
export interface Lease {
  /** rows×cols; `data` is read (once) at its first access after a {@link Lease.drop}. */
  matrix: Matrix;
  /** Let the array go (the next collection frees it unless someone else holds it); the next access reads again. */
  drop(): void;
}

/**
 * A rows×cols matrix whose `data` is read (`read()`) when first asked for and kept until {@link Lease.drop}.
 * SoCo drops lm_head (vocab×d, 125 MiB at 32000×1024) before each block of the training, so it is resident
 * during the head's loss only, not beside the blocks' weights and bases, at the price of one read of it per
 * loss (from the system's file cache).
 */
export function leasedRows(rows: number, cols: number, read: () => Float32Array): Lease {
  let held: Float32Array | undefined;
  return {
    matrix: {
      rows,
      cols,
      get data(): Float32Array {
        if (!held) {
          const a = read();
          if (a.length !== rows * cols) {
            throw new ShapeError(`soco: a leased ${rows}×${cols} matrix read back ${a.length} values`);
          }
          held = a;
        }
        return held;
      },
    },
    drop() {
      held = undefined;
    },
  };
}
