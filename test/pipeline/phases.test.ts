// The phase clock: wall and CPU seconds per phase, phases that never overlap, async phases counted when they
// settle, and CPU time that is the process's own (a phase's CPU never exceeds what the process spent).
import { test } from "node:test";
import assert from "node:assert/strict";
import { cpuSeconds, createPhaseClock } from "../../src/pipeline/phases.ts";

/** Spin for about `ms` milliseconds of wall time (CPU-bound). */
function spin(ms: number): number {
  const end = performance.now() + ms;
  let x = 0;
  while (performance.now() < end) x += Math.sqrt(x + 1);
  return x;
}

test("createPhaseClock: CPU seconds per phase beside the wall clock, within the process's own", async () => {
  assert.ok(cpuSeconds() !== undefined, "Deno and Bun report process CPU time");
  const clock = createPhaseClock();
  assert.ok(clock.cpu, "a CPU clock where the runtime reports CPU time");
  const c0 = cpuSeconds()!;
  const w0 = performance.now();
  assert.equal(clock.time("factor", () => (spin(60), 42)), 42);
  // An async phase: counted when its promise settles, including what ran before the await.
  const v = await clock.time("write", async () => {
    spin(30);
    await new Promise((r) => setTimeout(r, 20)); // sleeping costs wall time, no CPU
    return "done";
  });
  assert.equal(v, "done");
  const cpuSpent = cpuSeconds()! - c0, wallSpent = (performance.now() - w0) / 1000;
  const { phases, cpu } = clock;
  assert.ok(phases.factor >= 0.06 && phases.write >= 0.05, JSON.stringify(phases));
  assert.ok(cpu!.factor > 0 && cpu!.write > 0, JSON.stringify(cpu));
  // Phases do not overlap: together they are at most what passed, in wall and in CPU time.
  assert.ok(phases.factor + phases.write <= wallSpent + 1e-3, `${JSON.stringify(phases)} vs ${wallSpent}`);
  assert.ok(cpu!.factor + cpu!.write <= cpuSpent + 1e-3, `${JSON.stringify(cpu)} vs ${cpuSpent}`);
  for (const k of ["fisher", "soco", "sensitivity", "embed", "read", "calibrate", "propagate"] as const) {
    assert.equal(phases[k], 0, k);
    assert.equal(cpu![k], 0, k);
  }
  // A phase's error passes through.
  assert.throws(() => clock.time("read", () => JSON.parse("{")), SyntaxError);
});
