// Runs a check script in a `deno run -A` child and returns its last output line, for checks whose GPU device
// or thread count must belong to a process of their own (under `deno test --parallel` every module shares one
// process). The child's crash or signal fails the caller with the child's output.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";

/**
 * Runs `script` (a URL beside the caller) with `deno run -A` and returns its last stdout line, which must
 * match `ok` or read "skip: …".
 */
export function runDenoChild(script: URL, ok: RegExp): string {
  const path = fileURLToPath(script);
  const r = spawnSync(process.execPath, ["run", "-A", path], {
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" },
    timeout: 600_000,
  });
  const ended = r.signal ? `signal ${r.signal}` : `exit ${r.status}`;
  assert.equal(ended, "exit 0", `${path}: ${r.stdout}\n${r.stderr}`);
  const line = r.stdout.trim().split("\n").pop() ?? "";
  assert.ok(ok.test(line) || /^skip: .+$/.test(line), `${path}: unexpected last line\n${r.stdout}`);
  return line;
}
