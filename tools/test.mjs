#!/usr/bin/env node
// Runs every check of the project: the test suite under Deno and under Bun, then lint, format and type checks.
// Deno also runs the JSDoc examples of mod.ts and src/ (`--doc`), so the documented examples stay true.
// Then the notebooks (notebooks/*.ipynb, executed by tools/run_notebooks.py with the Deno Jupyter kernel; they
// assert their claims), skipped with a message when Python's jupyter_client is not installed.
// Prints each runner's output as it comes and ends with the skipped tests (each with its reason) and one summary
// line "tests: N passed, N failed, N skipped". A runner that exits non-zero without reporting a failed test (a
// test file that fails to load or type-check, a crash at exit) counts as one failure; so does a step that
// cannot start. Skips are read from each runner's JUnit report (file and line of each skipped test; the reason
// is the string in the test's `skip` option, read from the source there) and from the lines a test prints
// starting with "skip" (a test that skips part of itself, or skips with `t.skip()`, which Deno reports as ok).
// Usage: node tools/test.mjs [--only deno|bun|static|notebooks] [--no-static] [--no-notebooks]
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
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
/** "runner: file:line name — reason" for each skipped test or skipped part. */
const skipped = [];
const reports = mkdtempSync(join(tmpdir(), "svd-llm-test-"));
process.on("exit", () => rmSync(reports, { recursive: true, force: true }));

/**
 * The reason of a skipped test: the string literals of the `skip` option (or `t.skip(…)` call) first found at or
 * after `line` of `file`, read up to the end of that expression.
 */
function skipReason(file, line) {
  let text;
  try {
    text = readFileSync(join(root, file), "utf8").split("\n").slice(line - 1, line + 15).join("\n");
  } catch {
    return "(source not found)";
  }
  const at = text.search(/\bskip\s*[:(]/);
  if (at < 0) return "(no reason in the source)";
  const strings = [];
  let depth = 0, i = text.indexOf(text[at + 4] === "(" ? "(" : ":", at) + 1;
  for (; i < text.length; i++) {
    const c = text[i];
    if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < text.length && text[j] !== c) j += text[j] === "\\" ? 2 : 1;
      strings.push(text.slice(i + 1, j));
      i = j;
    } else if ("([{".includes(c)) depth++;
    else if (")]}".includes(c) && --depth < 0) break;
    else if (c === "," && depth === 0) break;
    else if (c === "\n" && depth === 0) {
      // The expression goes on only when this line ends, or the next begins, with an operator.
      const before = text.slice(0, i).trimEnd(), after = text.slice(i + 1).trimStart();
      if (!/[?:&|+]$/.test(before) && !/^[?:&|+]/.test(after)) break;
    }
  }
  return strings.length ? strings.join(" / ") : "(no reason in the source)";
}

/** Skipped test cases of a JUnit XML report: "file:line name — reason". */
function junitSkips(path) {
  if (!existsSync(path)) return [];
  const xml = readFileSync(path, "utf8");
  const out = [];
  for (const m of xml.matchAll(/<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g)) {
    if (!/<skipped/.test(m[2] ?? "")) continue;
    const attr = (k) => (m[1].match(new RegExp(`\\b${k}="([^"]*)"`)) ?? [])[1];
    const file = (attr("file") || attr("classname") || "?").replace(/^\.\//, "");
    const line = Number(attr("line") ?? 0);
    const name = attr("name").replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, "<")
      .replace(/&gt;/g, ">").replace(/&amp;/g, "&");
    out.push(`${file}:${line} ${name} — ${skipReason(file, line)}`);
  }
  return out;
}

/** The lines a test printed about what it skipped ("skip …", "skipped …"), once each. */
function printedSkips(out) {
  return [...new Set(out.split("\n").map((l) => l.trim()).filter((l) => /^skip(ped)?\b/i.test(l)))];
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
  const m = r.out.match(/(\d+) passed[^|]*\|\s*(\d+) failed/);
  if (m) {
    passed += Number(m[1]);
    failed += Number(m[2]);
  }
  if (r.code !== 0) failures.push("deno test");
  // No summary (a type error, a runner crash) or a summary without failures but a failing exit (an abort at
  // exit): the run failed all the same, and counts as one failure.
  if (r.code !== 0 && (!m || Number(m[2]) === 0)) failed += 1;
  skipped.push(
    ...junitSkips(junit).map((s) => `deno: ${s}`),
    ...printedSkips(r.out).map((s) => `deno: ${s}`),
  );
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
  const p = r.out.match(/^\s*(\d+) pass$/m), f = r.out.match(/^\s*(\d+) fail$/m);
  if (p) passed += Number(p[1]);
  if (f) failed += Number(f[1]);
  if (r.code !== 0) failures.push("bun test");
  if (r.code !== 0 && (!f || Number(f[1]) === 0)) failed += 1;
  skipped.push(...junitSkips(junit).map((s) => `bun: ${s}`), ...printedSkips(r.out).map((s) => `bun: ${s}`));
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
