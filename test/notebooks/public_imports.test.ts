// The notebooks and their helper files import only what a user of the package can (tools/notebook_imports.ts):
// `@svd/llm` and its subpath exports, third-party packages, `node:` built-ins, files beside them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  importProblem,
  importSites,
  nonPublicImports,
  notebookSources,
  publicSurface,
} from "../../tools/notebook_imports.ts";

const repo = fileURLToPath(new URL("../..", import.meta.url));
const notebooks = join(repo, "notebooks");
const surface = publicSurface(repo);

test("importSites: static, multi-line, type-only, side-effect, dynamic and worker imports, with their lines", () => {
  const src = [
    `import * as Plot from "@observablehq/plot";`,
    `import {`,
    `  a,`,
    `  type B,`,
    `} from "@svd/llm";`,
    `import type { C } from '../src/c.ts';`,
    `export * from "./helper.ts";`,
    `import "./side.ts";`,
    `const m = await import("@svd/llm/linalg");`,
    `const w = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });`,
    `const data = new URL("../models/x.gguf", import.meta.url); // a data file, not a module`,
    `const n = await import(name);`,
    `// the word import, and "from" in a string, are not imports: import.meta.url`,
  ].join("\n");
  assert.deepEqual(importSites(src), [
    { specifier: "@observablehq/plot", line: 1 },
    { specifier: "@svd/llm", line: 2 },
    { specifier: "../src/c.ts", line: 6 },
    { specifier: "./helper.ts", line: 7 },
    { specifier: "./side.ts", line: 8 },
    { specifier: "@svd/llm/linalg", line: 9 },
    { specifier: "./worker.ts", line: 10 },
    { specifier: "", line: 12 },
  ]);
});

test("importProblem: the package's exports, declared packages and built-ins pass; repository paths do not", () => {
  const s = {
    name: "@svd/llm",
    exports: [".", "./linalg", "./methods"],
    packages: ["linkedom", "@observablehq/plot"],
  };
  const dir = "/repo/notebooks";
  const ok = [
    "@svd/llm",
    "@svd/llm/linalg",
    "jsr:@svd/llm@0.1.0/methods",
    "node:fs/promises",
    "linkedom",
    "@observablehq/plot",
    "npm:left-pad@1",
    "./figure.ts",
    "./sub/../figure.ts",
  ];
  for (const spec of ok) assert.equal(importProblem(spec, s, dir, dir), null, spec);
  const bad: [string, RegExp][] = [
    ["../mod.ts", /outside notebooks\/ \(\.\.\/mod\.ts\)/],
    ["../src/linalg/mod.ts", /outside notebooks\//],
    ["./../src/x.ts", /outside notebooks\//],
    ["@svd/llm/pipeline", /"\.\/pipeline" is not an export of @svd\/llm/],
    ["@svd/llm/src/linalg/mod.ts", /is not an export/],
    ["jsr:@svd/llm/pipeline", /is not an export/],
    ["lodash", /"lodash" is not a declared dependency/],
    ["file:///repo/mod.ts", /URL or absolute path/],
    ["https://example.com/mod.ts", /URL or absolute path/],
    ["/repo/mod.ts", /absolute path/],
    ["", /computed dynamic import/],
  ];
  for (const [spec, why] of bad) assert.match(importProblem(spec, s, dir, dir) ?? "", why, spec);
});

test("publicSurface: deno.json's name and exports, package.json's packages", () => {
  assert.equal(surface.name, "@svd/llm");
  assert.ok(surface.exports.includes(".") && surface.exports.includes("./linalg"));
  assert.ok(surface.packages.includes("@observablehq/plot") && !surface.packages.includes("@svd/llm"));
});

test("every notebook and helper imports only public paths, and every notebook imports the package", () => {
  const bad = nonPublicImports(notebooks, surface);
  assert.deepEqual(
    bad.map((v) => `notebooks/${v.file} line ${v.line}: "${v.specifier}": ${v.problem}`),
    [],
  );
  const sources = notebookSources(notebooks);
  const names = new Set(sources.map((s) => s.file.replace(/ cell \d+$/, "")));
  for (const nb of [...names].filter((n) => n.endsWith(".ipynb"))) {
    const specs = sources.filter((s) => s.file.startsWith(`${nb} `)).flatMap((s) => importSites(s.source));
    assert.ok(specs.some((s) => s.specifier === "@svd/llm" || s.specifier.startsWith("@svd/llm/")), nb);
  }
  // The check saw the notebooks and their helpers (it cannot pass by reading nothing).
  assert.ok(names.has("00_quickstart.ipynb") && names.has("stories.ts") && names.has("compress_worker.ts"));
});
