// Debris of a killed writer (SIGKILL: no handler ran) is removed by the next writer of the same output; what
// might still be in use or hold data is kept.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readdir } from "node:fs/promises";
import process from "node:process";
import { join } from "node:path";
import { removeStaleTemps, tempPathFor } from "../../src/io/atomic_write.ts";
import { openOutputDir } from "../../src/pipeline/output_dir.ts";
import { tempDir } from "./_helpers.ts";

/** A process id that no process has now (probed with signal 0). */
function deadPid(): number {
  for (let pid = 4_000_000;; pid--) {
    try {
      process.kill(pid, 0);
    } catch (e) {
      if ((e as { code?: string }).code === "ESRCH") return pid;
    }
  }
}

test("a killed writer's temporary folder is removed by the next writer; live, foreign and -old ones stay", async (t) => {
  const { dir, cleanup } = await tempDir();
  try {
    const out = join(dir, "out");
    // This process's own name shows the host as the runtime tells it; without one, nothing is ever removed.
    const own = tempPathFor(out).slice(out.length + ".tmp-".length);
    const host = own.slice(0, own.lastIndexOf(".", own.lastIndexOf("-")));
    if (host === "unknown-host") {
      t.skip("the runtime does not tell the host name here (no Deno.hostname, no $HOSTNAME)");
      return;
    }
    const dead = deadPid();
    const names = {
      stale: `out.tmp-${host}.${dead}-0123456789ab`,
      live: `out.tmp-${host}.${process.pid}-0123456789ac`,
      foreign: `out.tmp-elsewhere.${dead}-0123456789ad`,
      interrupted: `out.tmp-${host}.${dead}-0123456789ae`, // killed between an overwrite's two renames
      interruptedOld: `out.tmp-${host}.${dead}-0123456789ae-old`,
      legacy: "out.tmp-0123456789af",
      other: `other.tmp-${host}.${dead}-0123456789b0`,
    };
    for (const n of Object.values(names)) await mkdir(join(dir, n));
    const removed = await removeStaleTemps(out);
    assert.deepEqual(removed, [join(dir, names.stale)]);
    const left = new Set(await readdir(dir));
    assert.ok(!left.has(names.stale));
    for (const [k, n] of Object.entries(names)) if (k !== "stale") assert.ok(left.has(n), `${k} kept`);
    // openOutputDir runs the same sweep before it creates its own temporary folder.
    await mkdir(join(dir, names.stale));
    const o = await openOutputDir(out);
    assert.ok(!(await readdir(dir)).includes(names.stale));
    await o.abort();
  } finally {
    await cleanup();
  }
});
