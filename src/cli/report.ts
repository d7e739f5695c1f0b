/**
 * Text reports for the command line: aligned tables, the summary of a compression run, and `inspect`
 * (per-layer shapes, ranks and singular-value spectra of a dense or compressed model).
 *
 * @module
 */
import type { CompressPhases, CompressReport } from "../pipeline/compress.ts";
import type { InspectReport } from "../pipeline/inspect.ts";

/** How the report names FWSVD's weightings. */
const FISHER_WEIGHTING = {
  kfac: "K-FAC, both sides",
  both: "both sides, diagonal",
  input: "per input feature",
  output: "per output row",
} as const;

export { type InspectedLinear, inspectModel, type InspectReport } from "../pipeline/inspect.ts";

/** Bytes as a short human string (KiB/MiB/GiB). */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** An aligned plain-text table; numeric-looking cells are right-aligned. */
export function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, j) => Math.max(h.length, ...rows.map((r) => (r[j] ?? "").length)));
  const numeric = /^[-+]?[\d.,]+( ?[%a-zA-Z]+)?$/;
  const line = (r: string[]) =>
    r.map((c, j) => (numeric.test(c) ? c.padStart(widths[j]) : c.padEnd(widths[j]))).join("  ").trimEnd();
  return [line(head), widths.map((w) => "─".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

const pct = (x: number) => `${(x * 100).toFixed(1)} %`;

/** The phases that took any time, e.g. "calibrate 7.02 s, factor 2.10 s, write 0.31 s". */
export function formatPhases(phases: CompressPhases): string {
  return Object.entries(phases)
    .filter(([, sec]) => sec >= 0.005)
    .map(([name, sec]) => `${name} ${sec.toFixed(2)} s`)
    .join(", ");
}

/** The summary table printed at the end of `compress`. */
export function formatCompressReport(r: CompressReport): string {
  const rows = r.layers.map((l) => [
    l.name.replace(/^model\.layers\./, ""),
    `${l.rows}×${l.cols}`,
    l.rank === null ? "dense" : String(l.rank),
    pct(1 - l.after / l.before),
    l.relativeLoss === undefined ? "" : l.relativeLoss.toExponential(2),
    l.shift ? l.shift.toExponential(1) : "",
    l.seconds.toFixed(2),
  ]);
  const p = r.params;
  return [
    table(["layer", "shape", "rank", "removed", "rel. loss", "damping", "s"], rows),
    "",
    `method ${r.method}, ${r.ratioLabel}${r.update ? ", with update" : ""}, ${
      r.calibration
        ? `${
          r.soco
            ? `SoCo (${r.soco.basis} basis, ${r.soco.settings.steps} steps, final loss ${
              (r.soco.history.at(-1)?.loss ?? NaN).toFixed(3)
            })`
            : r.fisher
            ? `Fisher (${FISHER_WEIGHTING[r.fisher.side]}, mean loss ${r.fisher.meanLoss.toFixed(3)})`
            : r.sequential
            ? "sequential"
            : "original-activation"
        } calibration (${r.calibration.samples} × ${r.calibration.seqlen} tokens, seed ${r.calibration.seed})`
        : "no calibration (plain SVD of the weights)"
    }, ${r.allocation} allocation`,
    `parameters: block linears ${p.linears.before.toLocaleString("en")} → ${
      p.linears.after.toLocaleString("en")
    } ` +
    `(${pct(p.linears.removed)} removed); whole model ${p.model.before.toLocaleString("en")} → ` +
    `${p.model.after.toLocaleString("en")} (${pct(p.model.removed)} removed)`,
    r.kvCache ? `KV cache per token: ${JSON.stringify(r.kvCache)}` : "",
    `time ${r.seconds.toFixed(2)} s (${formatPhases(r.phases)}), peak memory ${
      r.peakRssBytes ? formatBytes(r.peakRssBytes) : "n/a"
    }`,
    r.cpuPhases && r.cpuSeconds !== undefined
      ? `cpu ${r.cpuSeconds.toFixed(2)} s (${formatPhases(r.cpuPhases)}), all threads`
      : "",
    `written: ${r.output}`,
  ].filter((s) => s !== "").join("\n");
}

/**
 * `inspect`'s table: shape, rank, σ₁, σ at a few quantiles, and the rank holding 90 % / 99 % of Σσ²; for a
 * model compressed by this library, also what its compression recorded per linear (relative loss, damping).
 */
export function formatInspectReport(r: InspectReport): string {
  const energyRank = (s: Float64Array, frac: number) => {
    let total = 0;
    for (const v of s) total += v * v;
    let acc = 0;
    for (let i = 0; i < s.length; i++) {
      acc += s[i] * s[i];
      if (acc >= frac * total) return i + 1;
    }
    return s.length;
  };
  const losses = r.linears.some((l) => l.recorded?.relative_loss !== undefined);
  const shifts = r.linears.some((l) => l.recorded?.shift);
  const rows = r.linears.map((l) => {
    const s = l.sigma;
    const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * (s.length - 1)))];
    const loss = l.recorded?.relative_loss, shift = l.recorded?.shift;
    return [
      l.name,
      `${l.rows}×${l.cols}`,
      l.rank === null ? "dense" : String(l.rank),
      s[0].toPrecision(4),
      at(0.25).toPrecision(3),
      at(0.5).toPrecision(3),
      at(1).toPrecision(3),
      String(energyRank(s, 0.9)),
      String(energyRank(s, 0.99)),
      ...(losses ? [loss === undefined ? "" : loss.toExponential(2)] : []),
      ...(shifts ? [shift ? shift.toExponential(1) : ""] : []),
    ];
  });
  const columns = ["layer", "shape", "rank", "σ1", "σ@25%", "σ@50%", "σ min", "r90", "r99"];
  if (losses) columns.push("rel. loss");
  if (shifts) columns.push("damping");
  const head = r.compression
    ? `${r.name}: compressed by @svd/llm ${
      JSON.stringify({
        method: r.compression.method,
        ratio: r.compression.ratio,
        achieved: r.compression.achieved,
      })
    }`
    : `${r.name}: dense`;
  return head + "\n" +
    table(columns, rows) +
    "\n(r90 / r99: smallest rank holding 90 % / 99 % of Σσ²" +
    (losses ? "; rel. loss: ‖(W − AB)Xᵀ‖ / ‖WXᵀ‖ on the calibration inputs, as recorded by compress" : "") +
    (shifts ? "; damping: shift added to the Gram matrix" : "") + ")";
}
