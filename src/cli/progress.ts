/**
 * Terminal progress bars with ETA, drawn from the library's progress events.
 * Library code never prints; only the CLI turns events into bars.
 *
 * @module
 */

/** One progress event, as the pipeline and evaluators emit them. */
export interface ProgressEvent {
  /** What is being done, e.g. "eval", "calibrate block 3". */
  stage: string;
  /** Units finished so far. */
  done: number;
  /** Units in all. */
  total: number;
}

/** Format seconds as m:ss or h:mm:ss. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h > 0 ? String(m).padStart(2, "0") : String(m);
  return (h > 0 ? `${h}:` : "") + `${mm}:${String(r).padStart(2, "0")}`;
}

/**
 * A progress-bar drawer for stderr. Redraws in place on a TTY, prints one line per stage
 * (at completion) otherwise, so CI logs stay readable.
 */
export function progressBar(
  write: (s: string) => void = (s) => process.stderr.write(s),
  isTty: boolean = Boolean(process.stderr.isTTY),
): (e: ProgressEvent) => void {
  let stage = "";
  let started = 0;
  let lastDraw = 0;
  return (e: ProgressEvent) => {
    const now = performance.now();
    if (e.stage !== stage) {
      stage = e.stage;
      started = now;
      lastDraw = 0;
    }
    const finished = e.done >= e.total;
    if (!finished && now - lastDraw < 100) return;
    lastDraw = now;
    const frac = e.total > 0 ? Math.min(1, e.done / e.total) : 1;
    const elapsed = (now - started) / 1000;
    const eta = frac > 0 ? elapsed * (1 - frac) / frac : NaN;
    const width = 24;
    const fill = Math.round(frac * width);
    const bar = "█".repeat(fill) + "░".repeat(width - fill);
    const line = `${e.stage.padEnd(28).slice(0, 28)} ${bar} ${String(e.done).padStart(5)}/${e.total} ` +
      (finished ? `${formatDuration(elapsed)}` : `ETA ${formatDuration(eta)}`);
    if (isTty) write(`\r\x1b[2K${line}${finished ? "\n" : ""}`);
    else if (finished) write(line + "\n");
  };
}
