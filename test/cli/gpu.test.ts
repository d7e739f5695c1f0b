// `--gpu`: with a WebGPU adapter (lavapipe under Deno here) or without one (Bun, Node), the CLI says which in
// one line and gives the same result as on the CPU.
import { test } from "node:test";
import assert from "node:assert/strict";
import { cli, model } from "./_helpers.ts";

const pplOf = (out: string) => Number(/ppl ([0-9.]+)/.exec(out)?.[1]);

test("cli: --gpu says in one line whether a GPU is used, and still evaluates", { timeout: 600_000 }, () => {
  const cpu = cli("eval", model, "--max-tokens", "200");
  assert.equal(cpu.code, 0, cpu.err);
  const gpu = cli("--gpu", "eval", model, "--max-tokens", "200");
  assert.equal(gpu.code, 0, gpu.err);
  const notes = gpu.err.split("\n").filter((l) => l.startsWith("gpu: "));
  assert.equal(notes.length, 1, gpu.err);
  assert.match(notes[0], /^gpu: (not used \(.+\); running on the CPU|.+)$/);
  assert.ok(!/^gpu:/m.test(cpu.err), "no note without --gpu");
  const a = pplOf(cpu.out), b = pplOf(gpu.out);
  assert.ok(Number.isFinite(a) && a > 1, cpu.out);
  assert.ok(Math.abs(a - b) <= 1e-3 * a, `ppl ${a} on the CPU, ${b} with --gpu`);
  // the flag may stand anywhere, like --threads
  const after = cli("eval", model, "--max-tokens", "200", "--gpu");
  assert.equal(after.code, 0, after.err);
  assert.equal(pplOf(after.out), b);
});
