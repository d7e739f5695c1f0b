// The library must load where there is no Node API: a browser page or Worker, Cloudflare workerd. For every
// subpath export of deno.json but "./cli" (the command line is Node/Deno/Bun only by nature):
//   1. no module reached by static imports from it is a Node built-in (`node:…` or a bare "fs"), named with
//      the import chain that reaches it (walked from `deno info --json`: our own modules);
//   2. its browser bundle (`deno bundle --platform browser`: npm packages included) has no static import of
//      one either;
//   3. that bundle loads with `Deno`, `process`, `Buffer` and the other non-web globals removed, so nothing
//      touches them at module top level (guarded uses inside functions are fine).
// Dynamic `import("node:…")` inside the path-based functions is allowed: that is how file-system access
// stays off the static graph.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { deno, exportsOf, root, run } from "./_deno.ts";

interface InfoDependency {
  specifier: string;
  code?: { specifier: string };
  isDynamic?: boolean;
}
interface InfoModule {
  specifier: string;
  kind: string;
  dependencies?: InfoDependency[];
}

/** Chains (root → … → Node built-in) of every Node built-in reached by static imports from `file`. */
async function staticNodeChains(file: string): Promise<string[]> {
  const r = await run(deno, ["info", "--json", file]);
  assert.equal(r.code, 0, `deno info ${file} failed: ${r.err}`);
  const info = JSON.parse(r.out) as { roots: string[]; modules: InfoModule[] };
  const bySpec = new Map(info.modules.map((m) => [m.specifier, m]));
  const parent = new Map<string, string | null>([[info.roots[0], null]]);
  const queue = [info.roots[0]];
  const found: string[] = [];
  while (queue.length) {
    const spec = queue.shift()!;
    const mod = bySpec.get(spec);
    if (!mod) continue;
    if (mod.kind === "node" || spec.startsWith("node:")) {
      const chain: string[] = [];
      for (let s: string | null = spec; s !== null; s = parent.get(s) ?? null) {
        chain.unshift(s.replace(pathToFileURL(root).href, ""));
      }
      found.push(chain.join(" → "));
      continue;
    }
    for (const d of mod.dependencies ?? []) {
      const to = d.code?.specifier;
      if (!to || d.isDynamic || parent.has(to)) continue;
      parent.set(to, spec);
      queue.push(to);
    }
  }
  return found;
}

const NODE_BUILTINS = new Set([
  "assert",
  "buffer",
  "child_process",
  "crypto",
  "events",
  "fs",
  "fs/promises",
  "http",
  "https",
  "module",
  "net",
  "os",
  "path",
  "process",
  "stream",
  "url",
  "util",
  "v8",
  "vm",
  "worker_threads",
  "zlib",
]);

/** Static imports of Node built-ins left in a bundle (top-level `import … from "…"` and `require("…")`). */
function staticNodeImportsIn(code: string): string[] {
  const out: string[] = [];
  for (const m of code.matchAll(/^\s*(?:import|export)\b[^;()]*?["']([^"']+)["']/gm)) {
    if (m[1].startsWith("node:") || NODE_BUILTINS.has(m[1])) out.push(m[0].trim());
  }
  for (const m of code.matchAll(/\brequire\(\s*["']([^"']+)["']\s*\)/g)) {
    if (m[1].startsWith("node:") || NODE_BUILTINS.has(m[1])) out.push(m[0]);
  }
  return out;
}

// Loads a module with the non-web globals removed (what a page, a web Worker or workerd lacks).
const LOADER = `
for (const name of ["Deno", "process", "Buffer", "global", "require", "setImmediate", "clearImmediate"]) {
  delete globalThis[name];
  if (name in globalThis) throw new Error("could not remove the global " + name);
}
const mod = await import(new URL(Deno_ARG).href);
console.log("exports: " + Object.keys(mod).length);
`;

for (const [name, file] of exportsOf()) {
  if (name === "./cli") continue;
  test(`export "${name}" (${file}) reaches no Node API statically and loads without Node/Deno globals`, async () => {
    const chains = await staticNodeChains(join(root, file));
    assert.deepEqual(chains, [], `static imports of Node built-ins from ${file}:\n  ${chains.join("\n  ")}`);

    const dir = mkdtempSync(join(tmpdir(), "svd-llm-graph-"));
    try {
      const bundle = join(dir, name.replace(/\W/g, "_") + ".js");
      const b = await run(deno, ["bundle", "--platform", "browser", "-o", bundle, join(root, file)]);
      assert.equal(b.code, 0, `deno bundle --platform browser ${file} failed:\n${b.err}`);
      const left = staticNodeImportsIn(readFileSync(bundle, "utf8"));
      assert.deepEqual(left, [], `the browser bundle of ${file} imports Node built-ins statically`);

      const loader = join(dir, name.replace(/\W/g, "_") + ".load.mjs");
      writeFileSync(loader, LOADER.replace("Deno_ARG", JSON.stringify(pathToFileURL(bundle).href)));
      const l = await run(deno, ["run", "-A", "--no-config", loader]);
      assert.equal(
        l.code,
        0,
        `the browser bundle of ${file} fails to load without Node/Deno globals:\n${l.err}`,
      );
      assert.match(l.out, /exports: [1-9]/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test("the bundle scan sees a static Node import and ignores a dynamic one", () => {
  const code = 'import process from "node:process";\nconst fs = await import("node:fs/promises");\n' +
    'import { x } from "./y.js";\nimport "fs";\nconst p = require("path");';
  assert.deepEqual(staticNodeImportsIn(code), [
    'import process from "node:process"',
    'import "fs"',
    'require("path")',
  ]);
});
