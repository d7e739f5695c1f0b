#!/usr/bin/env node
// Runs every check of the project: the test suite under Deno and under Bun, then lint, format and type checks.
// Deno also runs the JSDoc examples of mod.ts and src/ (`--doc`), so the documented examples stay true.
// Then the notebooks (notebooks/*.ipynb, executed by tools/run_notebooks.py with the Deno Jupyter kernel; they
// assert their claims), skipped with a message when Python's jupyter_client is not installed.
// Prints each runner's output as it comes and ends with one summary line "tests: N passed, N failed".
// Usage: node tools/test.mjs [--only deno|bun|static|notebooks] [--no-static] [--no-notebooks]
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const args = process.argv.slice(2);
const only = args.includes("--only") ? args[args.indexOf("--only") + 1] : null;
const env = { ...process.env, NO_COLOR: "1" };

function run(cmd, argv) {
  return new Promise((resolve) => {
    let out = "";
    const child = spawn(cmd, argv, { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.on("data", (d) => {
      out += d;
      process.stdout.write(d);
    });
    child.stderr.on("data", (d) => {
      out += d;
      process.stderr.write(d);
    });
    child.on("close", (code) => resolve({ code: code ?? 1, out }));
    child.on("error", (e) => resolve({ code: 1, out: String(e), missing: e.code === "ENOENT" }));
  });
}

let passed = 0, failed = 0;
const failures = [];

if (!only || only === "deno") {
  console.log("\n=== deno test ===");
  const r = await run(bin("deno"), ["test", "-A", "--parallel", "test/", "--doc", "mod.ts", "src/"]);
  const m = r.out.match(/(\d+) passed[^|]*\|\s*(\d+) failed/);
  if (m) {
    passed += Number(m[1]);
    failed += Number(m[2]);
  }
  if (r.code !== 0) failures.push("deno test");
  if (!m && r.code !== 0) failed += 1;
}
if (!only || only === "bun") {
  console.log("\n=== bun test ===");
  const r = await run(bin("bun"), ["test", "--timeout", "600000", "test/"]);
  const p = r.out.match(/^\s*(\d+) pass$/m), f = r.out.match(/^\s*(\d+) fail$/m);
  if (p) passed += Number(p[1]);
  if (f) failed += Number(f[1]);
  if (r.code !== 0) failures.push("bun test");
  if (!f && r.code !== 0) failed += 1;
}
if (!args.includes("--no-static") && (!only || only === "static")) {
  for (
    const [label, argv] of [
      ["deno lint", ["lint"]],
      ["deno fmt --check", ["fmt", "--check"]],
      ["deno check", ["check", "mod.ts", "cli.ts", "src/", "bench/", "examples/", "notebooks/", "tools/"]],
      // Every entry point deno.json exports (what JSR documents), each on its own: linted together, a type
      // exported by one entry point hides that another one references it privately.
      ...Object.values(JSON.parse(readFileSync(join(root, "deno.json"))).exports).map((file) => [
        `deno doc --lint ${file}`,
        ["doc", "--lint", file],
      ]),
    ]
  ) {
    console.log(`\n=== ${label} ===`);
    const r = await run(bin("deno"), argv);
    if (r.code === 0) passed += 1;
    else {
      failed += 1;
      failures.push(label);
    }
  }
}
if ((!only || only === "notebooks") && !args.includes("--no-notebooks")) {
  console.log("\n=== notebooks ===");
  // Debian's python3 carries the apt-installed jupyter_client; a python3 earlier on PATH (pyenv, venv) may not.
  const python = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  const r = await run(python, [join(root, "tools", "run_notebooks.py")]);
  const m = r.out.match(/notebooks: (\d+) passed, (\d+) failed/);
  if (r.code === 77) console.log("(notebooks skipped)");
  else if (r.missing) console.log(`notebooks: skipped, ${python} not found`);
  else {
    if (m) {
      passed += Number(m[1]);
      failed += Number(m[2]);
    }
    if (r.code !== 0) {
      failures.push("notebooks");
      if (!m) failed += 1;
    }
  }
}
console.log("");
if (failures.length) console.log(`failed steps: ${failures.join(", ")}`);
console.log(`tests: ${passed} passed, ${failed} failed`);
process.exit(failures.length || failed ? 1 : 0);
