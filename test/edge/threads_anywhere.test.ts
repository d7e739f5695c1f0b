// Worker threads start wherever the library was loaded from, not only from a file next to the sources: imported
// from an http URL (what JSR or a CDN user gets) in a child Deno, and from a single-file bundle in child Deno,
// Bun and Node processes. Each child checks that `initLinalg({ threads: 2 })` gives 2 threads and that a
// product large enough to be split is bit-identical to the one-thread result.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";
import { deno, root, run, serveFiles } from "./_deno.ts";

/** The check each child runs on `lib` (the linalg entry point, by URL). */
function probe(lib: string): string {
  return `
const { closeLinalg, initLinalg, linalgInfo, matmul, matrix } = await import(${JSON.stringify(lib)});
const fill = (n, s) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + s));
const a = matrix(300, 200, fill(60000, 1)), b = matrix(250, 200, fill(50000, 2)); // 300·250·200 ≥ 2^22
const one = matmul(a, b, { transB: true }).data;
const info = await initLinalg({ threads: 2 });
const two = matmul(a, b, { transB: true }).data;
const same = one.length === two.length && one.every((v, i) => Object.is(v, two[i]));
console.log(JSON.stringify({ threads: linalgInfo().threads, note: info.threadsNote ?? null, same }));
await closeLinalg();
`;
}

function parse(out: string): { threads: number; note: string | null; same: boolean } {
  const line = out.trim().split("\n").pop() ?? "";
  return JSON.parse(line);
}

function filesUnder(dir: string): string[] {
  return readdirSync(join(root, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(root, join(e.parentPath, e.name)).split("\\").join("/"));
}

test("threads start when the library is imported from an http://127.0.0.1 URL (child Deno)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "svd-llm-threads-url-"));
  const server = await serveFiles(root, filesUnder("src"));
  try {
    const script = join(dir, "probe.mjs");
    writeFileSync(script, probe(`${server.origin}/src/linalg/mod.ts`));
    const r = await run(deno, ["run", "-A", "--no-config", "--no-lock", script], {
      cwd: dir,
      env: { DENO_DIR: join(dir, "deno_dir") }, // a fresh cache: modules come from the server, not an old copy
    });
    assert.equal(r.code, 0, `child Deno failed:\n${r.err}`);
    const res = parse(r.out);
    assert.equal(res.threads, 2, `threads not started from an http import: ${res.note}`);
    assert.ok(res.same, "2 threads differ from 1 thread");
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("threads start from a single-file bundle in Deno, Bun and Node", async () => {
  const dir = mkdtempSync(join(tmpdir(), "svd-llm-threads-bundle-"));
  try {
    const bundle = join(dir, "linalg.mjs");
    const b = await run(deno, [
      "bundle",
      "--platform",
      "browser",
      "-o",
      bundle,
      join(root, "src/linalg/mod.ts"),
    ]);
    assert.equal(b.code, 0, `deno bundle failed:\n${b.err}`);
    const script = join(dir, "probe.mjs");
    writeFileSync(script, probe(pathToFileURL(bundle).href));
    const runtimes: [string, string, string[]][] = [
      ["deno", deno, ["run", "-A", "--no-config", script]],
      ["bun", join(root, "node_modules", ".bin", "bun"), [script]],
      ["node", "node", [script]],
    ];
    for (const [name, exe, argv] of runtimes) {
      if (name === "node" && spawnSync("node", ["--version"]).status !== 0) {
        console.log("skip node: not installed");
        continue;
      }
      const r = await run(exe, argv, { cwd: dir });
      assert.equal(r.code, 0, `${name} failed on the bundle:\n${r.err}`);
      const res = parse(r.out);
      assert.equal(res.threads, 2, `${name}: threads not started from a bundle: ${res.note}`);
      assert.ok(res.same, `${name}: 2 threads differ from 1 thread`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
