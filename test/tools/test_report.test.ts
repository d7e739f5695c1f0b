// tools/test_report.mjs, how `npm test` counts: a failed run never reads as green, and every skip has its reason.
import { test } from "node:test";
import assert from "node:assert/strict";
import { junitSkips, printedSkips, runnerCounts, skipReason } from "../../tools/test_report.mjs";

test("runnerCounts: Deno's last summary line, and a non-zero exit without a failed test is one failure", () => {
  const ok = "a => x ... ok (1ms)\n\nok | 12 passed (3 steps) | 0 failed | 2 ignored (5s)\n";
  assert.deepEqual(runnerCounts("deno", ok, 0), { passed: 12, failed: 0, crashed: false });
  const failedRun = "FAILED | 10 passed | 2 failed (5s)\n\nerror: Test failed\n";
  assert.deepEqual(runnerCounts("deno", failedRun, 1), { passed: 10, failed: 2, crashed: false });
  // The abort at exit after a green summary (glibc "corrupted size vs. prev_size", exit 134).
  assert.deepEqual(runnerCounts("deno", ok + "corrupted size vs. prev_size\n", 134), {
    passed: 12,
    failed: 1,
    crashed: true,
  });
  // A type error: no summary at all.
  assert.deepEqual(runnerCounts("deno", "error: Type checking failed.\n", 1), {
    passed: 0,
    failed: 1,
    crashed: true,
  });
  // A test that prints a summary-like line does not count; the runner's own (last) line does.
  const printed = "ok | 99 passed | 0 failed\n" + ok;
  assert.equal(runnerCounts("deno", printed, 0).passed, 12);
});

test("runnerCounts: Bun's pass/fail lines; a file that fails to load is a failure, a crash is one", () => {
  const out = " 1 pass\n 2 skip\n 2 fail\n 2 errors\nRan 5 tests across 3 files.\n";
  assert.deepEqual(runnerCounts("bun", out, 1), { passed: 1, failed: 2, crashed: false });
  assert.deepEqual(runnerCounts("bun", " 7 pass\n 0 fail\n", 0), { passed: 7, failed: 0, crashed: false });
  assert.deepEqual(runnerCounts("bun", " 7 pass\n 0 fail\n", 139), { passed: 7, failed: 1, crashed: true });
  assert.deepEqual(runnerCounts("bun", "Segmentation fault\n", 139), { passed: 0, failed: 1, crashed: true });
});

test("skipReason: the strings of the skip expression, not of what follows it", () => {
  assert.equal(skipReason(`test("a", { skip: "needs foo" }, () => { f("x"); });`), "needs foo");
  assert.equal(
    skipReason(`test(\n  "a",\n  { skip: !HAS && "needs ../shared (tinylm-brown)" },\n  () => g("no"),\n);`),
    "needs ../shared (tinylm-brown)",
  );
  const multi =
    `{\n    timeout: 1,\n    skip: !P\n      ? "needs /proc"\n      : BUN\n      ? \`Bun's \${x} differs\`\n      : false,\n  },\n  async () => h("no"),`;
  assert.equal(skipReason(multi), "needs /proc / Bun's ${x} differs");
  assert.equal(
    skipReason(`  if (!ok) {\n    t.skip("clang not installed");\n    return;\n  }`),
    "clang not installed",
  );
  assert.equal(
    skipReason(`{ skip: SKIP_REASON }, () => {}`),
    "(reason not written in the source: see the printed skip lines)",
  );
  // A "skip:" inside a message or a comment is not the skip: here the reason is a variable.
  const message =
    "async (t) => {\n  // skip: not this\n  if (!ok) {\n    console.log(`skip: WebGPU unavailable (${why})`);" +
    '\n    t.skip(why);\n    return;\n  }\n  f("not a reason");';
  assert.equal(skipReason(message), "(reason not written in the source: see the printed skip lines)");
  assert.equal(skipReason('console.log("skip: x");\nt.skip("the real one");'), "the real one");
  assert.equal(
    skipReason(`test("plain", () => {});`),
    "(reason not written in the source: see the printed skip lines)",
  );
});

test("junitSkips: each skipped case of Deno's and Bun's reports, with file, line, name and reason", () => {
  const src = `import { test } from "node:test";\ntest("one & two", { skip: "needs foo" }, () => {});\n`;
  const deno = `<testsuite name="./test/a.test.ts">
    <testcase name="one &amp; two" classname="./test/a.test.ts" time="0.000" line="2" col="1">
      <skipped/>
    </testcase>
    <testcase name="ran" classname="./test/a.test.ts" time="0.002" line="3" col="1">
    </testcase>
  </testsuite>`;
  const bun = `<testsuite name="test/a.test.ts" file="test/a.test.ts">
    <testcase name="one &amp; two" classname="" time="0" file="test/a.test.ts" line="2" assertions="0">
      <skipped />
    </testcase>
    <testcase name="ran" classname="" time="0.1" file="test/a.test.ts" line="3" assertions="1" />
  </testsuite>`;
  const source = (f: string) => (f === "test/a.test.ts" ? src : null);
  const want = ["test/a.test.ts:2 one & two — needs foo"];
  assert.deepEqual(junitSkips(deno, source), want);
  assert.deepEqual(junitSkips(bun, source), want);
  assert.deepEqual(junitSkips(bun, () => null), ["test/a.test.ts:2 one & two — (source not found)"]);
  assert.deepEqual(junitSkips("", source), []);
});

test("printedSkips: lines a test prints about what it skipped, once each", () => {
  const out = "x ... ok\nskip: WebGPU unavailable here (no adapter)\n  skip node: not installed\n" +
    "skip: WebGPU unavailable here (no adapter)\nskipping is not this\nnot a skip line\n";
  assert.deepEqual(printedSkips(out), [
    "skip: WebGPU unavailable here (no adapter)",
    "skip node: not installed",
  ]);
});
