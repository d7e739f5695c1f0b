/**
 * The notebooks use only what a user of the package can import: `@svd/llm` and the subpath exports listed in
 * deno.json, third-party packages, `node:` built-ins, and the helper files beside them (which are held to the
 * same rule). A path into the repository (`../src/…`, `../mod.ts`) would let a notebook show something a user
 * cannot write. `test/notebooks/public_imports.test.ts` runs this over every notebook and helper.
 *
 * Specifiers are found by pattern, not by a parser: static `import … from`, `export … from`, side-effect
 * `import "…"`, `import("…")`, and `new URL("….ts", import.meta.url)` (how a worker module is named). A
 * dynamic import of a computed specifier cannot be checked, so it is reported too.
 *
 * Usage: `deno run -A tools/notebook_imports.ts` prints every non-public import and exits 1 if there is one.
 *
 * @module
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** One import found in a source text. */
export interface ImportSite {
  /** The specifier as written ("" for a computed one). */
  specifier: string;
  /** 1-based line in the source text. */
  line: number;
}

/** One import a user of the package could not write. */
export interface Violation extends ImportSite {
  /** The notebook or helper file (relative to the notebooks folder), with the cell index for a notebook. */
  file: string;
  /** Why it is not public. */
  problem: string;
}

/** What may be imported: the package's name and exported subpaths, and the third-party packages. */
export interface PublicSurface {
  /** The package name (deno.json "name"), e.g. "@svd/llm". */
  name: string;
  /** deno.json "exports" keys: ".", "./io", … */
  exports: readonly string[];
  /** Third-party packages a notebook may import by bare name (package.json dependencies, deno.json imports). */
  packages: readonly string[];
}

const PATTERNS: readonly RegExp[] = [
  /\b(?:import|export)\s[^;"'`]*?\bfrom\s*["']([^"']+)["']/g, // import { a } from "x"; export * from "x"
  /\bimport\s*["']([^"']+)["']/g, // import "x"
  /\bimport\s*\(\s*["']([^"']+)["']/g, // import("x")
  /\bnew\s+URL\s*\(\s*["']([^"']+\.[cm]?[jt]sx?)["']\s*,\s*import\.meta\.url/g, // a worker module
];
const COMPUTED = /\bimport\s*\(\s*(?!["'\s])/g;

/** Every import specifier in a TypeScript source text, in order of position. */
export function importSites(source: string): ImportSite[] {
  const lineAt = (index: number) => source.slice(0, index).split("\n").length;
  const found: { index: number; site: ImportSite }[] = [];
  for (const re of PATTERNS) {
    for (const m of source.matchAll(re)) {
      found.push({ index: m.index!, site: { specifier: m[1], line: lineAt(m.index!) } });
    }
  }
  for (const m of source.matchAll(COMPUTED)) {
    found.push({ index: m.index!, site: { specifier: "", line: lineAt(m.index!) } });
  }
  return found.sort((a, b) => a.index - b.index).map((f) => f.site);
}

/** The bare package a specifier names ("@a/b/c" → "@a/b", "x/y" → "x"). */
function packageOf(spec: string): string {
  const parts = spec.split("/");
  return spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
}

/**
 * Why `specifier`, imported by a file in `dir`, is not public, or null when it is. `root` is the notebooks
 * folder: a relative import must stay inside it.
 */
export function importProblem(
  specifier: string,
  surface: PublicSurface,
  dir: string,
  root: string,
): string | null {
  if (specifier === "") return "a computed dynamic import cannot be checked";
  if (specifier.startsWith("node:")) return null;
  if (specifier.startsWith("./") || specifier.startsWith("../")) {
    const rel = relative(root, resolve(dir, specifier));
    return rel.startsWith("..") || rel.includes(`..${sep}`)
      ? `a path outside notebooks/ (${rel}); import it from "${surface.name}" or one of its subpath exports`
      : null;
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(specifier) && !/^(?:npm|jsr):/.test(specifier)) {
    return "a URL or absolute path, not a package";
  }
  if (specifier.startsWith("/")) return "an absolute path, not a package";
  const bare = specifier.replace(/^(?:npm|jsr):/, "");
  const named = packageOf(bare);
  const pkg = named.replace(/(.)@.*$/, "$1"); // without a version: "x@1" → "x", "@a/b@1" → "@a/b"
  if (pkg === surface.name) {
    const sub = "." + bare.slice(named.length);
    return surface.exports.includes(sub)
      ? null
      : `"${sub}" is not an export of ${surface.name} (deno.json "exports")`;
  }
  if (/^(?:npm|jsr):/.test(specifier)) return null;
  return surface.packages.includes(pkg) ? null : `"${pkg}" is not a declared dependency`;
}

/** The code of each code cell of a notebook (.ipynb JSON), with its cell index. */
export function notebookCells(json: string): { cell: number; source: string }[] {
  const nb = JSON.parse(json) as { cells: { cell_type: string; source: string | string[] }[] };
  return nb.cells.flatMap((c, cell) =>
    c.cell_type === "code" ? [{ cell, source: Array.isArray(c.source) ? c.source.join("") : c.source }] : []
  );
}

/** The public surface of the repository at `repo` (its deno.json and package.json). */
export function publicSurface(repo: string): PublicSurface {
  const deno = JSON.parse(readFileSync(join(repo, "deno.json"), "utf8"));
  const pkg = JSON.parse(readFileSync(join(repo, "package.json"), "utf8"));
  return {
    name: deno.name,
    exports: Object.keys(deno.exports),
    packages: [
      ...Object.keys(pkg.dependencies ?? {}),
      ...Object.keys(pkg.devDependencies ?? {}),
      ...Object.keys(deno.imports ?? {}),
    ].filter((p) => p !== deno.name),
  };
}

/** Every notebook and helper file in `notebooksDir`, with its import sites (what the test reads). */
export function notebookSources(notebooksDir: string): { file: string; source: string }[] {
  const out: { file: string; source: string }[] = [];
  for (const f of readdirSync(notebooksDir).sort()) {
    const text = () => readFileSync(join(notebooksDir, f), "utf8");
    if (f.endsWith(".ipynb")) {
      for (const { cell, source } of notebookCells(text())) out.push({ file: `${f} cell ${cell}`, source });
    } else if (/\.[cm]?[jt]sx?$/.test(f)) {
      out.push({ file: f, source: text() });
    }
  }
  return out;
}

/** Every import in the notebooks and helpers of `notebooksDir` that a user of the package could not write. */
export function nonPublicImports(notebooksDir: string, surface: PublicSurface): Violation[] {
  return notebookSources(notebooksDir).flatMap(({ file, source }) =>
    importSites(source).flatMap((site) => {
      const problem = importProblem(site.specifier, surface, notebooksDir, notebooksDir);
      return problem ? [{ ...site, file, problem }] : [];
    })
  );
}

if (import.meta.main) {
  const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
  const bad = nonPublicImports(join(repo, "notebooks"), publicSurface(repo));
  for (const v of bad) console.log(`notebooks/${v.file} line ${v.line}: "${v.specifier}": ${v.problem}`);
  console.log(`${bad.length} non-public import(s)`);
  if (bad.length) process.exit(1);
}
