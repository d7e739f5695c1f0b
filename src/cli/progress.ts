/**
 * Terminal progress bars with ETA, drawn from the library's progress events.
 * Library code never prints; only the CLI turns events into bars.
 *
 * The ETA divides the time spent in a stage by the units done *in that time*: both start at the stage's first
 * event, so a stage whose fraction counts the whole run (compress: linears of all blocks) and whose events
 * interleave with another stage's (write, once per block) still gets a true rate.
 *
 * @example
 * ```ts
 * import { progressBar } from "./progress.ts";
 * const lines: string[] = [];
 * const bar = progressBar((s) => void lines.push(s), false);
 * bar({ stage: "compress", label: "compress block 0", done: 1, total: 4 });
 * bar({ stage: "compress", label: "compress block 1", done: 3, total: 4 });
 * bar({ stage: "compress", label: "compress block 1", done: 4, total: 4 });
 * console.log(lines.length); // 2: one line per block without a TTY
 * ```
 *
 * @module
 */
import type { ProgressEvent } from "../model/llama.ts";

export type { ProgressEvent };

/** A progress event as the bar draws it: a model event, optionally with a label (e.g. "compress block 3"). */
export interface BarEvent extends ProgressEvent {
  /** Shown instead of the stage (the ETA is still per stage). */
  label?: string;
}

/** Format seconds as m:ss or h:mm:ss. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h > 0 ? String(m).padStart(2, "0") : String(m);
  return (h > 0 ? `${h}:` : "") + `${mm}:${String(r).padStart(2, "0")}`;
}

/** ETA of a stage first seen at `t0` with `done0` units done, now at `done` of `total` at `now` (ms). */
export function stageEta(t0: number, done0: number, now: number, done: number, total: number): number {
  const rate = (done - done0) / ((now - t0) / 1000); // units per second, both measured since t0
  return done > done0 && rate > 0 ? (total - done) / rate : NaN;
}

/**
 * A progress-bar drawer for stderr. On a TTY it redraws in place; otherwise it prints one line per label
 * (each block of each stage, when it moves on, and at completion), so CI logs stay readable.
 */
export function progressBar(
  write: (s: string) => void = (s) => process.stderr.write(s),
  isTty: boolean = Boolean(process.stderr.isTTY),
): (e: BarEvent) => void {
  const stages = new Map<string, { t0: number; done0: number }>();
  let label = "";
  let pending = ""; // non-TTY: the current label's latest line, printed when the label changes
  let lastDraw = 0;
  const flush = () => {
    if (pending) write(pending + "\n");
    pending = "";
  };
  return (e: BarEvent) => {
    const now = performance.now();
    let st = stages.get(e.stage);
    if (!st || e.done < st.done0) {
      st = { t0: now, done0: e.done };
      stages.set(e.stage, st);
    }
    const name = e.label ?? e.stage;
    if (name !== label) {
      if (!isTty) flush();
      label = name;
      lastDraw = 0;
    }
    const finished = e.done >= e.total;
    const frac = e.total > 0 ? Math.min(1, e.done / e.total) : 1;
    const elapsed = (now - st.t0) / 1000;
    const width = 24;
    const fill = Math.round(frac * width);
    const bar = "█".repeat(fill) + "░".repeat(width - fill);
    const line = `${name.padEnd(28).slice(0, 28)} ${bar} ${String(e.done).padStart(5)}/${e.total} ` +
      (finished
        ? formatDuration(elapsed)
        : `ETA ${formatDuration(stageEta(st.t0, st.done0, now, e.done, e.total))}`);
    if (!isTty) {
      pending = line;
      if (finished) {
        flush();
        stages.delete(e.stage);
        label = "";
      }
      return;
    }
    if (!finished && now - lastDraw < 100) return;
    lastDraw = now;
    write(`\r\x1b[2K${line}${finished ? "\n" : ""}`);
    if (finished) {
      stages.delete(e.stage);
      label = "";
    }
  };
}
