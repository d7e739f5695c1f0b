// Run one command N times in a row and count how it ended (exit codes and signals): for teardown crashes
// that strike one run in several. Used for the `--gpu` exit crash (issue 13 item 5).
//
//   node tools/repeat_exit.mjs 30 -- node_modules/.bin/deno run -A cli.ts --gpu eval models/stories260K/stories260K.gguf --max-tokens 200
//
// Prints one line per run (index, how it ended, seconds, and the last stdout line), then the tally as one
// line of JSON. Exit status 1 if any run did not exit 0.
import { spawnSync } from "node:child_process";
import process from "node:process";

const sep = process.argv.indexOf("--");
const n = Number(process.argv[2]);
if (!(n >= 1) || sep < 0 || sep === process.argv.length - 1) {
  console.error("usage: node tools/repeat_exit.mjs N [--expect REGEX] -- COMMAND ARGS…");
  process.exit(2);
}
const ei = process.argv.indexOf("--expect");
const expect = ei > 0 && ei < sep ? new RegExp(process.argv[ei + 1]) : null;
const [cmd, ...args] = process.argv.slice(sep + 1);
const tally = {};
const outs = new Map();
for (let i = 1; i <= n; i++) {
  const t0 = Date.now();
  const r = spawnSync(cmd, args, {
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" },
    timeout: 600_000,
  });
  const end = r.signal ? `signal ${r.signal}` : `exit ${r.status}`;
  const last = (r.stdout ?? "").trim().split("\n").pop() ?? "";
  const bad = expect && !expect.test(r.stdout ?? "") ? " (output missing)" : "";
  tally[end + bad] = (tally[end + bad] ?? 0) + 1;
  outs.set(last, (outs.get(last) ?? 0) + 1);
  const err = r.status === 0 && !r.signal
    ? ""
    : ` | stderr: ${(r.stderr ?? "").trim().split("\n").slice(-2).join(" / ")}`;
  console.log(`${i}/${n} ${end}${bad} ${((Date.now() - t0) / 1000).toFixed(1)} s | ${last}${err}`);
}
console.log(JSON.stringify({ runs: n, ends: tally, distinctLastLines: outs.size }));
process.exit(Object.keys(tally).every((k) => k === "exit 0") ? 0 : 1);
