// The check of `gpu_worker_exit.test.ts`, run as `deno run -A test/linalg/_gpu_exit_threads.ts` so that this
// process's threads are this check's own: under `deno test --parallel` every test module runs in one process,
// and a thread another module starts meanwhile (a worker named "worker-N" too) looked like the GPU's and
// outlived closeLinalg (seen once, at load ≈ 12). Prints "gpu worker exit: ok (…)" or "skip: REASON"; an
// assertion failure exits non-zero.
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

if (!existsSync(TASKS)) {
  console.log("skip: no /proc/self/task here");
} else {
  const main = readFileSync(`${TASKS}/${process.pid}/comm`, "utf8").trim();
  const before = threads();
  const info = await initLinalg({ gpu: true });
  if (!info.gpu) {
    await closeLinalg();
    console.log(`skip: no GPU path here (${info.gpuNote})`);
  } else {
    const started = [...threads()].filter(([tid]) => !before.has(tid));
    // The runtime's own blocking-pool threads carry the main thread's name and idle on; the GPU worker
    // ("worker-N" in Deno) and the driver's threads must not.
    const gpuThreads = started.filter(([, name]) => name !== main);
    assert.ok(
      gpuThreads.some(([, name]) => /^worker-\d+$/.test(name)),
      `no worker thread after initLinalg({ gpu: true }): ${JSON.stringify(started)}`,
    );
    await closeLinalg();
    const alive = threads();
    const left = gpuThreads.filter(([tid]) => alive.has(tid));
    assert.deepEqual(left, [], `threads still running when closeLinalg() returned`);
    console.log(`gpu worker exit: ok (${gpuThreads.map(([, n]) => n).join(", ")} ended)`);
  }
}
