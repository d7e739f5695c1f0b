/**
 * A notebook's code cells as one TypeScript module, so that `deno check` can type-check what the Jupyter kernel
 * only runs (the kernel strips types without checking them, and `deno check notebooks/` sees only the helper
 * files): an API renamed elsewhere then fails the check, naming the notebook, cell and line, instead of a cell
 * at run time. `test/notebooks/typecheck.test.ts` checks every notebook this way.
 *
 * Cells share one scope in the kernel, as in one module. Each cell ends with `;` (a cell's last expression,
 * shown as its output, must not run into the next cell), and imports of the helper files beside the notebook
 * (`"./figure.ts"`) are rewritten to `helperDir`, where the module is checked from elsewhere.
 *
 * @module
 */

/** One notebook as a module, with where each of its lines came from. */
export interface NotebookModule {
  /** The module's source. */
  source: string;
  /** For each 1-based line of `source` (index 0 unused): the cell index and the line within that cell, or null. */
  origin: ({ cell: number; line: number } | null)[];
}

/** The code cells of `json` (an .ipynb file) as one module; `helperDir` replaces "./" in imports. */
export function notebookModule(json: string, helperDir: string): NotebookModule {
  const nb = JSON.parse(json) as { cells: { cell_type: string; source: string | string[] }[] };
  const lines: string[] = [];
  const origin: NotebookModule["origin"] = [null];
  const dir = helperDir.endsWith("/") ? helperDir : `${helperDir}/`;
  nb.cells.forEach((c, cell) => {
    if (c.cell_type !== "code") return;
    const code = (Array.isArray(c.source) ? c.source.join("") : c.source)
      .replace(/(\bfrom\s*|\bimport\s*\(?\s*)(["'])\.\//g, `$1$2${dir}`);
    code.split("\n").forEach((text, i) => {
      lines.push(text);
      origin.push({ cell, line: i + 1 });
    });
    lines.push(";");
    origin.push(null);
  });
  lines.push("export {};");
  origin.push(null);
  return { source: lines.join("\n") + "\n", origin };
}
