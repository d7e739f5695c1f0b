/**
 * Phase timing of a compression run: where the wall time went, in phases that do not overlap, and where the
 * process's CPU time went (every thread's: the workers of a thread pool run only inside a phase's kernels).
 * CPU time is what a shared, loaded machine distorts least; it is read from `process.cpuUsage()` where the
 * runtime has it (Deno, Bun, Node) and left out elsewhere (browsers).
 *
 * @example
 * ```ts
 * import { createPhaseClock } from "./phases.ts";
 * const clock = createPhaseClock();
 * const x = clock.time("factor", () => 6 * 7);
 * console.log(x, clock.phases.factor >= 0); // 42 true
 * ```
 *
 * @module
 */

/** Seconds spent in each phase of a compression run; the phases do not overlap. */
export interface CompressPhases {
  /** FWSVD's Fisher pass (forward and backward over the calibration windows; 0 for other methods). */
  fisher: number;
  /** SoCo's bases and training (0 for other methods). */
  soco: number;
  /** ASVD's sensitivity sweep (0 when not run or read from its cache). */
  sensitivity: number;
  /** Reading the non-block tensors, copying them to the output and embedding the calibration windows. */
  embed: number;
  /** Reading each block's weights. */
  read: number;
  /** Calibration passes that feed the observers (forward products, |x| statistics or Gram matrices). */
  calibrate: number;
  /** Factorisations (Cholesky, SVD, triangular products; SVD-LLM's update). */
  factor: number;
  /** Passes that only advance the hidden states to the next block (through the compressed or dense block). */
  propagate: number;
  /** Writing each block's tensors and closing the output file. */
  write: number;
}

/**
 * A phase clock: `time(name, fn)` adds `fn`'s duration (awaited when it returns a promise) to `phases[name]`,
 * and the process CPU time it took to `cpu[name]`.
 */
export interface PhaseClock {
  /** The wall-clock totals so far, seconds. */
  readonly phases: CompressPhases;
  /**
   * The CPU totals so far, seconds of user + system time of the whole process (all threads), or undefined
   * where the runtime does not report CPU time.
   */
  readonly cpu?: CompressPhases;
  /** Run `fn`, adding its duration to phase `name`. */
  time<T>(name: keyof CompressPhases, fn: () => T): T;
}

/** Process CPU seconds (user + system, all threads), or undefined where the runtime cannot tell. */
export function cpuSeconds(): number | undefined {
  const usage = (globalThis as { process?: { cpuUsage?: () => { user: number; system: number } } }).process
    ?.cpuUsage;
  if (typeof usage !== "function") return undefined;
  const u = usage();
  return (u.user + u.system) / 1e6;
}

/** Every phase at 0. */
function zeroPhases(): CompressPhases {
  return {
    fisher: 0,
    soco: 0,
    sensitivity: 0,
    embed: 0,
    read: 0,
    calibrate: 0,
    factor: 0,
    propagate: 0,
    write: 0,
  };
}

/** A clock with every phase at 0. */
export function createPhaseClock(): PhaseClock {
  const phases = zeroPhases();
  const cpu = cpuSeconds() === undefined ? undefined : zeroPhases();
  const add = (name: keyof CompressPhases, t0: number, c0: number | undefined) => {
    phases[name] += (performance.now() - t0) / 1000;
    if (cpu && c0 !== undefined) cpu[name] += cpuSeconds()! - c0;
  };
  return {
    phases,
    cpu,
    time<T>(name: keyof CompressPhases, fn: () => T): T {
      const t0 = performance.now(), c0 = cpu && cpuSeconds();
      const r = fn();
      if (r instanceof Promise) return r.finally(() => add(name, t0, c0)) as T;
      add(name, t0, c0);
      return r;
    },
  };
}
