/**
 * Peak resident memory of a run, sampled at every progress step and on a light timer. Reads
 * `process.memoryUsage.rss()` where the runtime has it (Deno, Bun, Node); reports 0 elsewhere (browsers).
 *
 * @module
 */
import process from "node:process";

/** A running peak-memory sampler. */
export interface PeakMemory {
  /** Take a sample now. */
  sample(): void;
  /** Highest resident set size seen, bytes. */
  peak(): number;
  /** Stop the timer. */
  stop(): void;
}

/** Start sampling every `intervalMs` (default 50 ms; the timer does not keep the process alive). */
export function createPeakMemory(intervalMs = 50): PeakMemory {
  let max = 0;
  const read = (): number => {
    try {
      const m = process.memoryUsage as unknown as { rss?: () => number };
      return typeof m.rss === "function" ? m.rss() : process.memoryUsage().rss;
    } catch {
      return 0;
    }
  };
  const sample = () => {
    const r = read();
    if (r > max) max = r;
  };
  sample();
  const timer = setInterval(sample, intervalMs) as unknown as { unref?: () => void };
  timer.unref?.();
  return {
    sample,
    peak: () => max,
    stop: () => clearInterval(timer as unknown as number),
  };
}
