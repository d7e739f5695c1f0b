// Every notebook type-checks against the package (tools/notebook_module.ts): the Jupyter kernel runs cells
// without checking their types, so an API renamed elsewhere would otherwise surface only when the cell runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { notebookModule } from "../../tools/notebook_module.ts";

const repo = fileURLToPath(new URL("../..", import.meta.url));
const notebooks = join(repo, "notebooks");
const deno = join(repo, "node_modules", ".bin", "deno");
const ON_BUN = "Bun" in globalThis;

test("notebookModule: the code cells in order, one scope, helper imports moved, each line traced to its cell", () => {
  const nb = JSON.stringify({
    cells: [
      { cell_type: "markdown", source: ["# title"] },
      { cell_type: "code", source: ['import { figure } from "./figure.ts";\n', "const x = 1;\n", "x"] },
      { cell_type: "code", source: '[x].map(String)\nconst m = await import("./m.ts");' },
    ],
  });
  const { source, origin } = notebookModule(nb, "../../notebooks");
  assert.equal(
    source,
    'import { figure } from "../../notebooks/figure.ts";\nconst x = 1;\nx\n;\n' +
      '[x].map(String)\nconst m = await import("../../notebooks/m.ts");\n;\nexport {};\n',
  );
  // The `;` after a cell keeps its last expression (`x`) from being called by the next cell's `[x]`.
  assert.deepEqual(origin, [
    null,
    { cell: 1, line: 1 },
    { cell: 1, line: 2 },
    { cell: 1, line: 3 },
    null,
    { cell: 2, line: 1 },
    { cell: 2, line: 2 },
    null,
    null,
  ]);
});

test(
  "every notebook type-checks against the package; a wrong name is reported at its notebook, cell and line",
  { skip: ON_BUN && "type-checking is Deno's own; it runs under deno test" },
  () => {
    mkdirSync(join(repo, ".cache"), { recursive: true });
    const dir = mkdtempSync(join(repo, ".cache", "notebook-check-"));
    try {
      const helpers = relative(dir, notebooks);
      const modules = new Map<string, ReturnType<typeof notebookModule>>();
      const names = readdirSync(notebooks).filter((f) => f.endsWith(".ipynb")).sort();
      assert.ok(names.includes("00_quickstart.ipynb") && names.length >= 6, names.join(", "));
      for (const name of names) {
        modules.set(name, notebookModule(readFileSync(join(notebooks, name), "utf8"), helpers));
      }
      // A notebook importing a name the package does not export, or calling an API wrongly, fails the same check.
      const broken = JSON.stringify({
        cells: [{
          cell_type: "code",
          source: 'import { loadModel, noSuchExport } from "@svd/llm";\nawait loadModel(1);',
        }],
      });
      modules.set("broken.ipynb", notebookModule(broken, helpers));
      const files: string[] = [];
      for (const [name, m] of modules) {
        const file = join(dir, name.replace(/\.ipynb$/, ".ts"));
        writeFileSync(file, m.source);
        files.push(file);
      }
      const r = spawnSync(deno, ["check", ...files], {
        cwd: repo,
        encoding: "utf8",
        env: { ...process.env, NO_COLOR: "1" },
      });
      // "at file:///…/<name>.ts:<line>:<col>" → "<name>.ipynb cell C line L"
      const where = [...`${r.stdout}${r.stderr}`.matchAll(/at file:\/\/\S*\/([^/\s]+)\.ts:(\d+):\d+/g)].map(
        ([, base, line]) => {
          const o = modules.get(`${base}.ipynb`)?.origin[Number(line)];
          return o ? `${base}.ipynb cell ${o.cell} line ${o.line}` : `${base}.ts line ${line}`;
        },
      );
      assert.notEqual(r.status, 0, "the broken notebook fails the check");
      assert.deepEqual(
        where,
        ["broken.ipynb cell 0 line 1", "broken.ipynb cell 0 line 2"],
        `${r.stdout}${r.stderr}`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
