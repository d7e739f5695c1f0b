// The rooms of docs/design.md import only downwards, and no module imports itself back through others:
//   io < model, tokenize, linalg < calib < methods < pipeline < eval, export < cli, mod.ts / cli.ts
// (src/errors.ts sits with io: every room may throw its errors). Edges are every relative import of src/,
// mod.ts and cli.ts: static `import … from` / `export … from` at the start of a line (so JSDoc examples,
// which start with ` * `, do not count) and dynamic `import("…")` outside comments; type-only imports count
// too, since a room that names another's types depends on it. A new room fails until it is given a level.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** Level of each room: a module may import from its own level or below. */
const LEVEL: Readonly<Record<string, number>> = {
  io: 0,
  errors: 0,
  model: 1,
  tokenize: 1,
  linalg: 1,
  calib: 2,
  methods: 3,
  pipeline: 4,
  eval: 5,
  export: 5,
  cli: 6,
  doors: 6,
};

/** The room of a file (relative to the root, "/"-separated). */
function roomOf(file: string): string {
  if (file === "mod.ts" || file === "cli.ts") return "doors";
  if (file === "src/errors.ts") return "errors";
  return file.split("/")[1];
}

/** The relative specifiers `text` imports: static at line start, dynamic outside comment lines. */
function importsOf(text: string): string[] {
  const found: string[] = [];
  for (const m of text.matchAll(/^(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']/gm)) found.push(m[1]);
  for (const m of text.matchAll(/^import\s*["']([^"']+)["']/gm)) found.push(m[1]);
  for (const line of text.split("\n")) {
    const code = line.trimStart();
    if (code.startsWith("*") || code.startsWith("//") || code.startsWith("/*")) continue;
    for (const m of code.replace(/\/\/.*$/, "").matchAll(/\bimport\s*\(\s*["']([^"']+)["']\s*\)/g)) {
      found.push(m[1]);
    }
  }
  return found.filter((s) => s.startsWith("."));
}

/** Every .ts file of src/, with mod.ts and cli.ts, relative to the root. */
function sourceFiles(): string[] {
  const out = ["mod.ts", "cli.ts"];
  const walk = (dir: string) => {
    for (const e of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".ts")) out.push(p);
    }
  };
  walk("src");
  return out;
}

/** file → the files it imports (relative to the root). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles()) {
    const text = readFileSync(join(ROOT, file), "utf8");
    const to = importsOf(text).map((s) =>
      relative(ROOT, resolve(ROOT, dirname(file), s)).replaceAll("\\", "/")
    );
    graph.set(file, [...new Set(to)]);
  }
  return graph;
}

/** The edges that go up a level (or into a room without one), as "from → to (room level → room level)". */
function upwardImports(graph: ReadonlyMap<string, readonly string[]>): string[] {
  const bad: string[] = [];
  for (const [from, tos] of graph) {
    const a = roomOf(from), la = LEVEL[a];
    for (const to of tos) {
      const b = roomOf(to), lb = LEVEL[b];
      if (la === undefined || lb === undefined || lb > la) {
        bad.push(`${from} → ${to} (${a} ${la ?? "?"} → ${b} ${lb ?? "?"})`);
      }
    }
  }
  return bad;
}

/** The import cycles (strongly connected components of more than one file, or a file importing itself). */
function importCycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  // Tarjan's algorithm, iterative over each root so that a deep graph cannot overflow the stack.
  const index = new Map<string, number>(), low = new Map<string, number>();
  const stack: string[] = [], onStack = new Set<string>(), cycles: string[][] = [];
  let next = 0;
  for (const root of graph.keys()) {
    if (index.has(root)) continue;
    const work: [string, number][] = [[root, 0]];
    index.set(root, next), low.set(root, next++), stack.push(root), onStack.add(root);
    while (work.length) {
      const top = work[work.length - 1];
      const [v, i] = top;
      const tos = graph.get(v) ?? [];
      if (i < tos.length) {
        top[1]++;
        const w = tos[i];
        if (!index.has(w)) {
          index.set(w, next), low.set(w, next++), stack.push(w), onStack.add(w);
          work.push([w, 0]);
        } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
        continue;
      }
      work.pop();
      if (work.length) {
        const u = work[work.length - 1][0];
        low.set(u, Math.min(low.get(u)!, low.get(v)!));
      }
      if (low.get(v) === index.get(v)) {
        const scc: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          scc.push(w);
        } while (w !== v);
        if (scc.length > 1 || tos.includes(v)) cycles.push(scc.sort());
      }
    }
  }
  return cycles;
}

test("rooms: the checks find an upward import, a cycle and the imports of a module's text", () => {
  const graph = new Map([
    ["src/io/a.ts", ["src/pipeline/b.ts"]], // upward: io imports pipeline
    ["src/pipeline/b.ts", ["src/pipeline/c.ts"]],
    ["src/pipeline/c.ts", ["src/pipeline/b.ts", "src/io/a.ts"]], // b ↔ c, and through a back to b
    ["src/model/d.ts", ["src/io/a.ts", "src/nowhere/e.ts"]], // a room without a level
  ]);
  assert.deepEqual(upwardImports(graph), [
    "src/io/a.ts → src/pipeline/b.ts (io 0 → pipeline 4)",
    "src/model/d.ts → src/nowhere/e.ts (model 1 → nowhere ?)",
  ]);
  assert.deepEqual(importCycles(graph), [["src/io/a.ts", "src/pipeline/b.ts", "src/pipeline/c.ts"]]);
  const text = [
    `import { a } from "./a.ts";`,
    `import type {`,
    `  B,`,
    `} from "../b.ts";`,
    `export { c } from "./c.ts";`,
    ` * import { doc } from "./example.ts";`,
    `// const x = await import("./commented.ts");`,
    `const m = await import("./lazy.ts"); // import("./after.ts")`,
    `import { npm } from "fast-check";`,
    `const p = await import("node:path");`,
  ].join("\n");
  assert.deepEqual(importsOf(text), ["./a.ts", "../b.ts", "./c.ts", "./lazy.ts"]);
});

test("rooms: src/, mod.ts and cli.ts import only downwards and have no import cycle", () => {
  const graph = importGraph();
  assert.ok(graph.size > 100, `only ${graph.size} modules found under src/`);
  const edges = [...graph.values()].reduce((n, t) => n + t.length, 0);
  assert.ok(edges > 300, `only ${edges} imports found`);
  assert.deepEqual(upwardImports(graph), [], "imports that go up a room");
  assert.deepEqual(importCycles(graph), [], "import cycles");
});
