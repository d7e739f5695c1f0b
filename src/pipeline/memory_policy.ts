/**
 * When a compression run collects garbage and hands memory back to the system: a policy object with one hook
 * per point in the run where memory changes hands (a factored linear, a forward pass, a written block, a
 * copied tensor), called by the driver itself, never by progress reporting (so reporting more often changes
 * nothing). It also samples the peak resident set at those points.
 *
 * Collections are paced: a forced collection costs 10–60 ms whatever the heap (V8 marks the whole heap), so
 * collecting at every boundary of a small model (a linear of 1 MB, a batch of 14 MB) spent a quarter of the
 * run in the collector. A collection waits until {@link COLLECT_BYTES} have been dropped: a large model's
 * linears and passes are each above it, so they are still collected at once (its peak is unchanged), and a
 * small model's resident set stays within that much of what is alive. Trimming (see `findMemoryTrimmer`)
 * happens only for blocks of {@link TRIM_MIN_BLOCK_BYTES} or more, where the allocation pattern changes.
 *
 * @example
 * ```ts
 * import { createMemoryPolicy } from "./memory_policy.ts";
 * const memory = createMemoryPolicy({ collect: null, trim: null, blockBytes: 0 });
 * memory.afterLinear(64, 64); // nothing to collect with: a no-op besides the peak sample
 * memory.stop();
 * ```
 *
 * @module
 */
import { createPeakMemory, findGarbageCollector, findMemoryTrimmer } from "./memory.ts";

/** Collect garbage once about this many bytes of dropped arrays have piled up since the last collection. */
export const COLLECT_BYTES = 16 << 20;

/**
 * Heap pages are handed back after factoring a linear of at least this many values (4 MiB in float32): the
 * temporaries of smaller ones are not worth the page faults of reusing trimmed memory.
 */
export const TRIM_MIN_VALUES = 1 << 20;

/**
 * Float32 bytes of a block's linears below which a run never trims: on smaller blocks every pass and
 * factorisation pays the page faults of reusing trimmed memory (tinylm-brown, 2.9 MB blocks: 7–10 % of the
 * run) for no lower peak.
 */
export const TRIM_MIN_BLOCK_BYTES = 8 << 20;

/** The memory hooks of a compression run. */
export interface MemoryPolicy {
  /** A linear of rows×cols was factored: its float64 temporaries (W·L, its QR and SVD) are garbage. */
  afterLinear(rows: number, cols: number): void;
  /**
   * A forward pass over the calibration stream ended, leaving `scratchBytes` of temporaries; `observed`: it
   * fed observers (the allocation pattern changes next: hand pages back).
   */
  afterPass(scratchBytes: number, observed: boolean): void;
  /** A block was written: its weights and factors (`bytes`) are garbage. */
  afterBlock(bytes: number): void;
  /** `bytes` of arrays were dropped elsewhere (a copied tensor, a candidate of a sweep). */
  dropped(bytes: number): void;
  /** A stage boundary (embedding done, sweep done): collect and trim now. */
  boundary(): void;
  /** Sample the resident set now. */
  sample(): void;
  /** Highest resident set size seen, bytes (0 where the runtime does not tell). */
  peak(): number;
  /** Stop the peak sampler's timer. */
  stop(): void;
}

/** What {@link createMemoryPolicy} works with. */
export interface MemoryPolicyOptions {
  /** A full collection, or null (none available: the hooks only sample). */
  collect: (() => void) | null;
  /** A trimmer handing free pages back, or null. */
  trim: (() => void) | null;
  /** Float32 bytes of one block's linears (trimming is skipped below {@link TRIM_MIN_BLOCK_BYTES}). */
  blockBytes: number;
}

/** The policy of a run with these tools; see {@link defaultMemoryPolicy} for the runtime's own. */
export function createMemoryPolicy(opts: MemoryPolicyOptions): MemoryPolicy {
  const peak = createPeakMemory();
  const trim = opts.blockBytes >= TRIM_MIN_BLOCK_BYTES ? opts.trim : null;
  let pending = 0;
  const drop = (bytes: number) => {
    if (!opts.collect) return;
    pending += bytes;
    if (pending < COLLECT_BYTES) return;
    opts.collect();
    pending = 0;
  };
  return {
    afterLinear(rows, cols) {
      peak.sample();
      drop(32 * rows * cols); // float64 W·L, its QR and SVD, the blocks
      if (rows * cols >= TRIM_MIN_VALUES) trim?.();
    },
    afterPass(scratchBytes, observed) {
      drop(scratchBytes);
      peak.sample();
      if (observed) trim?.();
    },
    afterBlock(bytes) {
      peak.sample();
      drop(bytes);
      trim?.();
    },
    dropped: drop,
    boundary() {
      peak.sample();
      drop(COLLECT_BYTES);
      trim?.();
    },
    sample: peak.sample,
    peak: peak.peak,
    stop: peak.stop,
  };
}

/** The policy for a run over blocks whose linears take `blockBytes` in float32: this runtime's collector and trimmer. */
export async function defaultMemoryPolicy(blockBytes: number): Promise<MemoryPolicy> {
  return createMemoryPolicy({ collect: await findGarbageCollector(), trim: findMemoryTrimmer(), blockBytes });
}
