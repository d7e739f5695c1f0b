/**
 * Figures for the notebooks: an Observable Plot chart rendered to SVG without a browser (on a linkedom
 * document) and wrapped so that the Deno Jupyter kernel displays it as `image/svg+xml`, the output type that
 * saved notebooks show on GitHub. The SVG gets an explicit namespace (a standalone SVG image needs it) and a
 * white background (GitHub's dark theme would otherwise draw black text on a dark page).
 *
 * @module
 */
import * as Plot from "@observablehq/plot";
import { parseHTML } from "linkedom";

/** A rendered chart: its SVG text, displayed by Jupyter when it is a cell's last expression. */
export interface Figure {
  /** The standalone SVG document. */
  readonly svg: string;
  /** The Jupyter display hook (a MIME bundle). */
  [key: symbol]: () => Record<string, string>;
}

/**
 * Render `options` (any Plot options but `document`) to SVG. Throws when Plot returns an HTML figure
 * (legends, titles, captions), which an SVG image cannot hold: label marks directly instead.
 */
export function figure(options: Plot.PlotOptions, alt = "figure"): Figure {
  const { document } = parseHTML("<!doctype html><html><body></body></html>");
  const el = Plot.plot({ ...options, document: document as unknown as Document });
  if (el.tagName.toLowerCase() !== "svg") {
    throw new Error(`figure: Plot returned a <${el.tagName}>, not an <svg>; drop legend, title and caption`);
  }
  el.setAttribute("xmlns", "http://www.w3.org/2000/svg");
  const width = el.getAttribute("width"), height = el.getAttribute("height");
  const svg = el.outerHTML.replace(
    /^(<svg[^>]*>)/,
    `$1<rect width="${width}" height="${height}" fill="white"/>`,
  );
  return {
    svg,
    [Symbol.for("Jupyter.display")]: () => ({ "image/svg+xml": svg, "text/plain": `[${alt}]` }),
  };
}

/** A table for display: Markdown (rendered by Jupyter and GitHub) with a plain-text fallback. */
export interface Table {
  /** The Markdown text. */
  readonly markdown: string;
  /** The Jupyter display hook (a MIME bundle). */
  [key: symbol]: () => Record<string, string>;
}

/** Render rows of plain values as a Markdown table; the columns are the first row's keys. */
export function table(rows: readonly Record<string, string | number | null>[]): Table {
  const keys = Object.keys(rows[0] ?? {});
  const cell = (v: string | number | null) => v === null ? "—" : String(v).replaceAll("|", "\\|");
  const lines = [
    `| ${keys.join(" | ")} |`,
    `| ${keys.map((k) => typeof rows[0][k] === "number" ? "---:" : "---").join(" | ")} |`,
    ...rows.map((r) => `| ${keys.map((k) => cell(r[k])).join(" | ")} |`),
  ];
  const markdown = lines.join("\n");
  return {
    markdown,
    [Symbol.for("Jupyter.display")]: () => ({ "text/markdown": markdown, "text/plain": markdown }),
  };
}

/** One colour per method in every notebook's figures (a Plot `color` scale). */
export const METHOD_COLORS = {
  domain: ["dense", "svd", "asvd", "svdllm", "svdllm + update", "fwsvd", "svdllm (global)", "soco"],
  range: ["#555555", "#e45756", "#f58518", "#4c78a8", "#54a24b", "#b279a2", "#72b7b2", "#000000"],
};

/**
 * Perplexity against % removed, one labelled line per method on a log scale (the notebooks' common chart):
 * `points` are `{ method, removed (fraction), ppl }`.
 */
export function ratioChart(
  points: readonly { method: string; removed: number; ppl: number }[],
  alt = "perplexity vs ratio, every method",
): Figure {
  const data = points.map((p) => ({ method: p.method, removed: p.removed * 100, ppl: p.ppl }));
  const height = 380, lineHeight = 13; // px; the plot area is about height − 50 px tall
  // Labels at each line's last point, pushed apart (in log10 units) where lines end close together.
  const lastX = Math.max(...data.map((d) => d.removed));
  const logs = data.map((d) => Math.log10(d.ppl));
  const gap = (Math.max(...logs) - Math.min(...logs)) * lineHeight / (height - 50);
  const labels = data.filter((d) => d.removed === lastX).map((d) => ({ ...d, y: Math.log10(d.ppl) }))
    .sort((a, b) => a.y - b.y);
  labels.forEach((l, i) => i > 0 && (l.y = Math.max(l.y, labels[i - 1].y + gap)));
  return figure({
    width: 680,
    height,
    marginRight: 110,
    y: { label: "held-out perplexity (log)", type: "log", grid: true },
    x: {
      label: "% of the block linears' parameters removed",
      ticks: [...new Set(data.map((d) => d.removed))],
    },
    color: METHOD_COLORS,
    marks: [
      Plot.line(data, { x: "removed", y: "ppl", stroke: "method" }),
      Plot.dot(data, { x: "removed", y: "ppl", fill: "method" }),
      Plot.text(labels, {
        x: "removed",
        y: (l) => 10 ** l.y,
        text: "method",
        fill: "method",
        textAnchor: "start",
        dx: 8,
      }),
    ],
  }, alt);
}
