// How tools/test.mjs reads the runners' output: the counts of passed and failed tests (a runner that exits
// non-zero without reporting a failed test counts as one failure), and the skipped tests with their reasons.
// Pure functions of the text, so that test/tools/test_report.test.ts checks them without running a suite.

/**
 * Passed and failed counts of one runner from its output and exit code. `runner` is "deno" (summary
 * "ok | N passed | N failed", the last one printed) or "bun" (lines " N pass" and " N fail"). A non-zero exit
 * with no summary (a type error, a test file that fails to load, a crashed runner) or with a summary of no
 * failures (an abort at exit, after the summary) adds one failure: the run failed all the same.
 * @param {"deno" | "bun"} runner
 * @param {string} out
 * @param {number} code
 * @returns {{ passed: number, failed: number, crashed: boolean }}
 */
export function runnerCounts(runner, out, code) {
  let passed = 0, failed = 0, summary = false;
  if (runner === "deno") {
    const all = [...out.matchAll(/^(?:ok|FAILED) \| (\d+) passed[^|\n]*\|\s*(\d+) failed/gm)];
    const m = all.at(-1);
    if (m) [summary, passed, failed] = [true, Number(m[1]), Number(m[2])];
  } else {
    const p = [...out.matchAll(/^\s*(\d+) pass$/gm)].at(-1),
      f = [...out.matchAll(/^\s*(\d+) fail$/gm)].at(-1);
    if (p) passed = Number(p[1]);
    if (f) [summary, failed] = [true, Number(f[1])];
  }
  const crashed = code !== 0 && (!summary || failed === 0);
  return { passed, failed: failed + (crashed ? 1 : 0), crashed };
}

/**
 * The reason of a skipped test, from the source text that starts at the test's line: the string literals of
 * the first `skip` option (`skip: cond ? "why" : false`) or `t.skip("why")` call, read to the end of that
 * expression (a comma or closing bracket at its depth, or a line break not continued by an operator). A `skip`
 * inside a string or a comment does not count; a reason held in a variable reads "(reason not written in the source: see the printed skip lines)".
 * @param {string} text
 * @returns {string}
 */
export function skipReason(text) {
  /** Index past the string literal that opens at `i`. */
  const pastString = (i) => {
    let j = i + 1;
    while (j < text.length && text[j] !== text[i]) j += text[j] === "\\" ? 2 : 1;
    return j + 1;
  };
  // The `skip` of code, not one inside a string ("skip: …" messages) or a comment.
  let at = -1;
  for (let i = 0; i < text.length && at < 0;) {
    const c = text[i];
    if (c === '"' || c === "'" || c === "`") i = pastString(i);
    else if (text.startsWith("//", i)) i = text.indexOf("\n", i) >>> 0;
    else if (/\bskip\s*[:(]/y.test(text.slice(i, i + 40)) && !/[\w$]/.test(text[i - 1] ?? "")) at = i;
    else i++;
  }
  if (at < 0) return "(reason not written in the source: see the printed skip lines)";
  const strings = [];
  let depth = 0;
  for (let i = text.slice(at).search(/[:(]/) + at + 1; i < text.length; i++) {
    const c = text[i];
    if (c === '"' || c === "'" || c === "`") {
      const end = pastString(i);
      strings.push(text.slice(i + 1, end - 1));
      i = end - 1;
    } else if ("([{".includes(c)) depth++;
    else if (")]}".includes(c) && --depth < 0) break;
    else if (c === "," && depth === 0) break;
    else if (c === "\n" && depth === 0) {
      const before = text.slice(0, i).trimEnd(), after = text.slice(i + 1).trimStart();
      if (!/[?:&|+]$/.test(before) && !/^[?:&|+]/.test(after)) break;
    }
  }
  return strings.length
    ? strings.join(" / ")
    : "(reason not written in the source: see the printed skip lines)";
}

const ENTITIES = { quot: '"', apos: "'", lt: "<", gt: ">", amp: "&" };

/**
 * The skipped test cases of a JUnit XML report (Deno's `--junit-path`, Bun's `--reporter=junit`), each as
 * "file:line name — reason"; `source(file)` returns a test file's text (or null), where the reason is read.
 * @param {string} xml
 * @param {(file: string) => string | null} source
 * @returns {string[]}
 */
export function junitSkips(xml, source) {
  const out = [];
  for (const m of xml.matchAll(/<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g)) {
    if (!/<skipped/.test(m[2] ?? "")) continue;
    const attr = (k) =>
      ((m[1].match(new RegExp(`\\b${k}="([^"]*)"`)) ?? [])[1] ?? "").replace(
        /&(\w+);/g,
        (e, n) => ENTITIES[n] ?? e,
      );
    const file = (attr("file") || attr("classname") || "?").replace(/^\.\//, "");
    const line = Number(attr("line") || 0);
    const text = source(file);
    const reason = text === null
      ? "(source not found)"
      : skipReason(text.split("\n").slice(Math.max(0, line - 1), line + 15).join("\n"));
    out.push(`${file}:${line} ${attr("name")} — ${reason}`);
  }
  return out;
}

/**
 * The lines a test printed about what it skipped ("skip …", "skip: …", "skipped …"), once each: a test that
 * skips part of itself, or calls `t.skip()` (which Deno reports as ok, without the reason).
 * @param {string} out
 * @returns {string[]}
 */
export function printedSkips(out) {
  return [...new Set(out.split("\n").map((l) => l.trim()).filter((l) => /^skip(ped)?\b/i.test(l)))];
}
