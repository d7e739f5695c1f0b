/**
 * Start and stop a local workerd serving the bundled Worker, and read its peak resident memory (Linux
 * `/proc/PID/status` VmHWM), for the test and `bench/runtimes.ts`.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { workerdConfig } from "./build.ts";

/** The workerd binary the npm package `workerd` ships for this platform, or null. */
export function workerdBinary(): string | null {
  const arch = process.arch === "arm64" ? "arm64" : "64";
  const path = fileURLToPath(
    new URL(
      `../../node_modules/@cloudflare/workerd-${process.platform}-${arch}/bin/workerd`,
      import.meta.url,
    ),
  );
  return existsSync(path) ? path : null;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** A running workerd. */
export interface Workerd {
  /** e.g. "http://127.0.0.1:41235". */
  origin: string;
  /** Its process id. */
  pid: number;
  /** Peak resident memory of the process so far, bytes (0 where /proc is absent). */
  peakRss(): Promise<number>;
  /** Resident memory now, bytes (0 where /proc is absent). */
  rss(): Promise<number>;
  /** CPU time the process has used so far, seconds (user + system; 0 where /proc is absent). */
  cpuSeconds(): Promise<number>;
  /** What it printed. */
  log(): string;
  /** Kill it and wait for it to exit. */
  close(): Promise<void>;
}

/** Linux's USER_HZ: /proc reports CPU time in these ticks per second. */
const CLOCK_TICKS = 100;

async function procKiB(pid: number, field: string): Promise<number> {
  const s = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(s);
  return m ? Number(m[1]) * 1024 : 0;
}

/**
 * Start `binary` serving `dir/worker` (as built by `buildWorker`) on a free port; resolves once `/health`
 * answers (within `timeoutMs`, default 30 s), else kills it and throws with its log.
 */
export async function startWorkerd(
  binary: string,
  dir: string,
  worker = "worker.js",
  timeoutMs = 30_000,
  v8Flags: readonly string[] = [],
): Promise<Workerd> {
  const port = await freePort();
  const config = `${dir}/config-${port}.capnp`;
  await writeFile(config, workerdConfig(port, worker, v8Flags));
  const child = spawn(binary, ["serve", config], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (b) => (out += b));
  child.stderr!.on("data", (b) => (out += b));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const w: Workerd = {
    origin: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    peakRss: () => procKiB(child.pid!, "VmHWM"),
    rss: () => procKiB(child.pid!, "VmRSS"),
    cpuSeconds: async () => {
      const stat = await readFile(`/proc/${child.pid}/stat`, "utf8").catch(() => "");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // fields from 3 on; utime, stime are 14, 15
      return f.length > 13 ? (Number(f[11]) + Number(f[12])) / CLOCK_TICKS : 0;
    },
    log: () => out,
    close: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (child.exitCode !== null) break;
    const ok = await fetch(`${w.origin}/health`).then((r) => r.text().then(() => r.ok), () => false);
    if (ok) return w;
    await new Promise((r) => setTimeout(r, 200));
  }
  await w.close();
  throw new Error(`start workerd: ${config} did not answer /health within ${timeoutMs} ms:\n${out}`);
}
