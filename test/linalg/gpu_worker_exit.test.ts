// `closeLinalg()` after `initLinalg({ gpu: true })` returns only once the GPU worker's thread has ended, with
// the driver's threads it started. Deno's `terminate()` resolves while the worker thread is still tearing
// down its runtime, which unloads the Vulkan driver; a process exit racing with that crashed about one
// `cli.ts --gpu` run in twenty to thirty (lavapipe: SIGSEGV in an exit handler of the unloaded driver, or
// "corrupted double-linked list"). The check lists the process's threads before and after, so it runs in a
// `deno run` child (`_gpu_exit_threads.ts`) whose threads are its own. Checked where threads can be listed
// (Linux /proc) and an adapter exists (Deno + lavapipe here); skipped elsewhere (Bun and Node have no
// navigator.gpu).
import { test } from "node:test";
import assert from "node:assert/strict";
import { closeLinalg, initLinalg } from "../../src/linalg/backend.ts";
import { runDenoChild } from "./_deno_child.ts";

test(
  "closeLinalg: the GPU worker's thread and the driver's threads have ended when it returns",
  { timeout: 600_000 },
  async (t) => {
    if (!("Deno" in globalThis)) {
      const info = await initLinalg({ gpu: true });
      await closeLinalg();
      assert.equal(info.gpu, undefined, "a GPU path outside Deno: this test's check would need a child here");
      console.log(`skip: no GPU path here (${info.gpuNote})`);
      t.skip(info.gpuNote ?? "no GPU");
      return;
    }
    const line = runDenoChild(
      new URL("./_gpu_exit_threads.ts", import.meta.url),
      /^gpu worker exit: ok \(.+\)$/,
    );
    console.log(line);
    if (line.startsWith("skip: ")) t.skip(line.slice(6));
  },
);
