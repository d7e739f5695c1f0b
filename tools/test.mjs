#!/usr/bin/env node
// Runs every check of the project: the test suite under Deno and under Bun, then lint, format and type checks.
// Deno also runs the JSDoc examples of mod.ts and src/ (`--doc`), so the documented examples stay true.
// Then the notebooks (notebooks/*.ipynb, executed by tools/run_notebooks.py with the Deno Jupyter kernel; they
// assert their claims), skipped with a message when Python's jupyter_client is not installed.
// Prints each runner's output as it comes and ends with the skipped tests (each with its reason) and one summary
// line "tests: N passed, N failed, N skipped". A runner that exits non-zero without reporting a failed test (a
// test file that fails to load or type-check, a crash at exit) counts as one failure; so does a step that
// cannot start. Skips come from each runner's JUnit report (the reason: the `skip` option in the source at the
// test's line) and from the lines tests print starting with "skip" (see tools/test_report.mjs).
// Usage: node tools/test.mjs [--only deno|bun|static|notebooks] [--no-static] [--no-notebooks]
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { junitSkips, printedSkips, runnerCounts } from "./test_report.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const args = process.argv.slice(2);
const only = args.includes("--only") ? args[args.indexOf("--only") + 1] : null;
/** JUnit reports, and a runtime folder for Mesa's Vulkan driver (WebGPU), which prints an error without one. */
const reports = mkdtempSync(join(tmpdir(), "svd-llm-test-"));
process.on("exit", () => rmSync(reports, { recursive: true, force: true }));
const env = { XDG_RUNTIME_DIR: reports, ...process.env, NO_COLOR: "1" };

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
/** "runner: file:line name — reason" for each skipped test or skipped part. */
const skipped = [];

/** A test file's text, relative to the root, or null. */
function source(file) {
  try {
    return readFileSync(join(root, file), "utf8");
  } catch {
    return null;
  }
}

/** Adds one runner's counts and skips (read from its output, exit code and JUnit report) to the totals. */
function account(runner, r, junit) {
  const c = runnerCounts(runner, r.out, r.code);
  passed += c.passed;
  failed += c.failed;
  if (r.code !== 0) {
    failures.push(`${runner} test${c.crashed ? ` (exit ${r.code} without a failed test)` : ""}`);
  }
  const xml = existsSync(junit) ? readFileSync(junit, "utf8") : "";
  skipped.push(...[...junitSkips(xml, source), ...printedSkips(r.out)].map((s) => `${runner}: ${s}`));
}

if (!only || only === "deno") {
  console.log("\n=== deno test ===");
  const junit = join(reports, "deno.xml");
  const r = await run(bin("deno"), [
    "test",
    "-A",
    "--parallel",
    `--junit-path=${junit}`,
    "test/",
    "--doc",
    "mod.ts",
    "src/",
  ]);
  account("deno", r, junit);
}
if (!only || only === "bun") {
  console.log("\n=== bun test ===");
  const junit = join(reports, "bun.xml");
  const r = await run(bin("bun"), [
    "test",
    "--timeout",
    "600000",
    "--reporter=junit",
    `--reporter-outfile=${junit}`,
    "test/",
  ]);
  account("bun", r, junit);
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
  if (r.code === 77) skipped.push(`notebooks: all — ${r.out.trim().split("\n").at(-1) || "exit 77"}`);
  else if (r.missing) skipped.push(`notebooks: all — ${python} not found`);
  else {
    if (m) {
      passed += Number(m[1]);
      failed += Number(m[2]);
    }
    if (r.code !== 0) {
      failures.push("notebooks");
      if (!m || Number(m[2]) === 0) failed += 1;
    }
  }
}
console.log("");
if (skipped.length) console.log(`skipped (${skipped.length}):\n${skipped.map((s) => `  ${s}`).join("\n")}`);
if (failures.length) console.log(`failed steps: ${failures.join(", ")}`);
console.log(`tests: ${passed} passed, ${failed} failed, ${skipped.length} skipped`);
process.exit(failures.length || failed ? 1 : 0);
