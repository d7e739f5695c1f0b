// What a JSR user gets: the file set `deno publish --dry-run` lists, served from 127.0.0.1 with the bare npm
// specifiers mapped by an import map (JSR rewrites "@huggingface/tokenizers" to the npm: specifier of
// deno.json's "imports"; here it maps to the same pinned version served from node_modules, so the test
// downloads nothing). A child Deno then imports every export but "./cli" from that URL, compresses a layer
// with `asvd`, and runs `cli.ts --help`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deno, exportsOf, root, run, serveFiles } from "./_deno.ts";

/** Files `deno publish --dry-run` would upload, relative to the root. */
async function publishedFiles(): Promise<string[]> {
  const r = await run(deno, ["publish", "--dry-run", "--allow-dirty", "--no-check", "--allow-slow-types"]);
  assert.equal(r.code, 0, `deno publish --dry-run failed:\n${r.err}`);
  const prefix = new URL(".", `file://${root}`).href;
  return (r.out + r.err).split("\n")
    .map((l) => l.trim().match(/^(file:\/\/\S+)/)?.[1])
    .filter((u): u is string => !!u && u.startsWith(prefix))
    .map((u) => decodeURIComponent(u.slice(prefix.length)));
}

/** Bare specifiers (not relative, not `node:`/`npm:`/URLs) imported by the published TypeScript files. */
function bareImports(files: string[]): Set<string> {
  const out = new Set<string>();
  for (const f of files.filter((f) => f.endsWith(".ts"))) {
    const code = readFileSync(join(root, f), "utf8");
    for (const m of code.matchAll(/(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']/g)) {
      if (!/^(\.|\/|node:|npm:|jsr:|https?:|data:)/.test(m[1])) out.add(m[1]);
    }
  }
  return out;
}

test("the published file set is what users need: sources, kernels, README, LICENSE, the demo model and text", async () => {
  const files = await publishedFiles();
  for (const need of ["mod.ts", "cli.ts", "wasm/svd_llm.wasm", "README.md", "LICENSE"]) {
    assert.ok(files.includes(need), `${need} is not published`);
  }
  // cli.ts demo runs on these two without arguments.
  assert.ok(files.includes("models/stories260K/stories260K.gguf"));
  assert.ok(files.includes("data/tinystories-valid.part1.txt"));
  const stray = files.filter((f) => /^(test|bench|tools|notebooks|examples|node_modules|\.)/.test(f));
  assert.deepEqual(stray, [], "development files would be published");
  for (const [, file] of exportsOf()) assert.ok(files.includes(file.replace(/^\.\//, "")), `${file} missing`);
  const bytes = files.reduce((s, f) => s + readFileSync(join(root, f)).length, 0);
  assert.ok(bytes < 3e6, `the package would be ${bytes} bytes`);
});

const CHILD = `
const origin = ORIGIN;
for (const file of EXPORTS) await import(origin + "/" + file);
const { asvd, matrix } = await import(origin + "/mod.ts");
const w = matrix(6, 5, Float32Array.from({ length: 30 }, (_, i) => Math.sin(i)));
const layer = asvd(w);
layer.addBatch(matrix(16, 5, Float32Array.from({ length: 80 }, (_, i) => Math.cos(i * 0.7))));
const { a, b } = layer.compress({ ratio: { kept: 0.8 } });
console.log(JSON.stringify({ a: [a.rows, a.cols], b: [b.rows, b.cols] }));
`;

test("a JSR-like URL: every export imports from http://127.0.0.1, asvd compresses, cli.ts --help runs", async () => {
  const files = await publishedFiles();
  const cfg = JSON.parse(readFileSync(join(root, "deno.json"), "utf8")) as {
    imports: Record<string, string>;
  };
  const served = [...files];
  const imports: Record<string, string> = {};
  for (const name of bareImports(files)) {
    const target = cfg.imports[name];
    assert.ok(
      target?.startsWith("npm:"),
      `published code imports "${name}", which deno.json maps to no npm package`,
    );
    const version = target.match(/@([^@/]+)$/)?.[1];
    const pkgDir = `node_modules/${name}`;
    const pkg = JSON.parse(readFileSync(join(root, pkgDir, "package.json"), "utf8"));
    assert.equal(
      pkg.version,
      version,
      `${name}: node_modules holds ${pkg.version}, deno.json pins ${version}`,
    );
    const entry = `${pkgDir}/${pkg.module ?? pkg.main}`;
    served.push(entry);
    imports[name] = entry;
  }
  const dir = mkdtempSync(join(tmpdir(), "svd-llm-jsr-"));
  let server: Awaited<ReturnType<typeof serveFiles>> | null = null;
  try {
    const map = { imports: {} as Record<string, string> };
    server = await serveFiles(root, served, {
      "/import_map.json": { type: "application/json", body: () => JSON.stringify(map) },
    });
    for (const [name, entry] of Object.entries(imports)) map.imports[name] = `${server.origin}/${entry}`;
    const env = { DENO_DIR: join(dir, "deno_dir") }; // nothing from an earlier run's cache
    const flags = [
      "run",
      "-A",
      "--no-config",
      "--no-lock",
      "--import-map",
      `${server.origin}/import_map.json`,
    ];
    const script = join(dir, "child.mjs");
    const exported = exportsOf().filter(([n]) => n !== "./cli").map(([, f]) => f.replace(/^\.\//, ""));
    writeFileSync(
      script,
      CHILD.replace("ORIGIN", JSON.stringify(server.origin)).replace("EXPORTS", JSON.stringify(exported)),
    );
    const lib = await run(deno, [...flags, script], { cwd: dir, env });
    assert.equal(lib.code, 0, `importing the library from ${server.origin} failed:\n${lib.err}`);
    // Rank for 80 % of the parameters of a 6×5 weight: floor(6·5·0.8 / (6 + 5)) = 2.
    assert.deepEqual(JSON.parse(lib.out.trim().split("\n").pop()!), { a: [6, 2], b: [2, 5] });

    const cli = await run(deno, [...flags, `${server.origin}/cli.ts`, "--help"], { cwd: dir, env });
    assert.equal(cli.code, 0, `cli.ts --help from ${server.origin} failed:\n${cli.err}`);
    assert.match(cli.out + cli.err, /usage:/);
  } finally {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
