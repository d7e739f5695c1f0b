// `closeLinalg()` after `initLinalg({ gpu: true })` returns only once the GPU worker's thread has ended, with
// the driver's threads it started. Deno's `terminate()` resolves while the worker thread is still tearing
// down its runtime, which unloads the Vulkan driver; a process exit racing with that crashed about one
// `cli.ts --gpu` run in twenty to thirty (lavapipe: SIGSEGV in an exit handler of the unloaded driver, or
// "corrupted double-linked list"). Checked where threads can be listed (Linux /proc) and an adapter exists
// (Deno + lavapipe here); skipped elsewhere (Bun and Node have no navigator.gpu).
import { test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { closeLinalg, initLinalg } from "../../src/linalg/backend.ts";

const TASKS = "/proc/self/task";

/** This process's threads: id → name. */
function threads(): Map<string, string> {
  const out = new Map<string, string>();
  for (const tid of readdirSync(TASKS)) {
    try {
      out.set(tid, readFileSync(`${TASKS}/${tid}/comm`, "utf8").trim());
    } catch {
      // ended while listed
    }
  }
  return out;
}

test("closeLinalg: the GPU worker's thread and the driver's threads have ended when it returns", async (t) => {
  if (!existsSync(TASKS)) {
    t.skip("no /proc/self/task here");
    return;
  }
  const main = readFileSync(`${TASKS}/${process.pid}/comm`, "utf8").trim();
  const before = threads();
  const info = await initLinalg({ gpu: true });
  if (!info.gpu) {
    await closeLinalg();
    console.log(`skip: no GPU path here (${info.gpuNote})`);
    t.skip(info.gpuNote ?? "no GPU");
    return;
  }
  const started = [...threads()].filter(([tid]) => !before.has(tid));
  // The runtime's own blocking-pool threads carry the main thread's name and idle on; the GPU worker
  // ("worker-N" in Deno) and the driver's threads must not.
  const gpuThreads = started.filter(([, name]) => name !== main);
  assert.ok(
    gpuThreads.length >= 1,
    `no new thread after initLinalg({ gpu: true }): ${JSON.stringify(started)}`,
  );
  await closeLinalg();
  const alive = threads();
  const left = gpuThreads.filter(([tid]) => alive.has(tid));
  assert.deepEqual(left, [], `threads still running when closeLinalg() returned`);
});
