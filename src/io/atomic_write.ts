/**
 * Atomic file output: write a temporary file beside the destination, flush it to disk, then move it onto the
 * destination in one step, so a reader never sees a half-written file and a crash leaves the old one intact.
 *
 * @module
 */
import { OptionError } from "../errors.ts";

/** Options of {@link writeFileAtomic}. */
export interface AtomicWriteOptions {
  /** Replace an existing destination (default false: refuse). */
  overwrite?: boolean;
}

/** Temporary names handed out by {@link tempPathFor} and not yet released: what an interrupt must remove. */
const pendingTemps = new Set<string>();

/** This process's mark in temporary names: `<host>.<pid>`, so a later run can tell a dead writer's debris. */
function owner(): string {
  const p = (globalThis as { process?: { pid?: number } }).process;
  const pid = typeof p?.pid === "number" ? p.pid : 0; // browsers: no pid, never removed as stale
  return `${hostName() ?? "unknown-host"}.${pid}`;
}

/** The host's name where the runtime tells it without an import (Deno, or $HOSTNAME), else undefined. */
function hostName(): string | undefined {
  try {
    const d = (globalThis as { Deno?: { hostname?: () => string } }).Deno;
    if (d?.hostname) return d.hostname();
    return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env
      ?.HOSTNAME ||
      undefined;
  } catch {
    return undefined; // Deno without --allow-sys
  }
}

/**
 * A fresh temporary name beside `path`: `<path>.tmp-<host>.<pid>-<random hex>`. The name is recorded as
 * pending until {@link releaseTempPath}, so that an interrupted process can remove what it was writing
 * ({@link pendingTempPaths}); the host and process id let {@link removeStaleTemps} tell the debris of a killed
 * writer.
 */
export function tempPathFor(path: string): string {
  const r = new Uint8Array(6);
  crypto.getRandomValues(r);
  const temp = `${path}.tmp-${owner()}-${Array.from(r, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  pendingTemps.add(temp);
  return temp;
}

/**
 * Remove the temporary files and folders that writers of `path` on this host left when they were killed
 * (SIGKILL, power loss: no handler ran), i.e. `<path>.tmp-<host>.<pid>-<hex>` whose process no longer exists.
 * Kept: temporaries of live processes, of other hosts (a shared file system), from before process ids were
 * recorded, and every `…-old` name with its partner (a kill between the two renames of an overwrite leaves
 * the previous output there). Returns the paths removed. A no-op where processes cannot be probed or the
 * host's name is unknown.
 */
export async function removeStaleTemps(path: string): Promise<string[]> {
  const proc = (globalThis as { process?: { kill?: (pid: number, signal: number) => void } }).process;
  if (typeof proc?.kill !== "function") return [];
  const fs = await import("node:fs/promises");
  const { basename, dirname, join } = await import("node:path");
  const host = hostName();
  if (host === undefined) return []; // another host's writer could not be told from a dead one
  const dir = dirname(path), base = basename(path);
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return [];
  }
  const alive = (pid: number) => {
    try {
      proc.kill!(pid, 0);
      return true;
    } catch (e) {
      return code(e) !== "ESRCH"; // EPERM: alive, someone else's
    }
  };
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(`${base}.tmp-${host}.`)) continue;
    const m = /^(\d+)-([0-9a-f]{12})$/.exec(name.slice(`${base}.tmp-${host}.`.length));
    if (!m || m[1] === "0" || alive(Number(m[1])) || names.includes(`${name}-old`)) continue;
    const full = join(dir, name);
    if (pendingTemps.has(full)) continue;
    await fs.rm(full, { recursive: true, force: true });
    removed.push(full);
  }
  return removed;
}

/** Forget a temporary name: it was renamed onto its destination or removed. */
export function releaseTempPath(temp: string): void {
  pendingTemps.delete(temp);
}

/**
 * Temporary files and folders being written right now (from {@link tempPathFor}, not yet committed or
 * removed). A program that exits on SIGINT/SIGTERM removes them, so an interrupted run leaves neither a
 * partial output under the destination name nor temporary debris beside it (the CLI does; see cli.ts).
 */
export function pendingTempPaths(): string[] {
  return [...pendingTemps];
}

function code(e: unknown): string | undefined {
  return (e as { code?: string })?.code;
}

/** True if something exists at `path` (a dangling symlink counts). */
export async function pathExists(path: string): Promise<boolean> {
  const { lstat } = await import("node:fs/promises");
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if (code(e) === "ENOENT") return false;
    throw e;
  }
}

/** Throw an {@link OptionError} if `path` exists and overwriting was not asked for. */
export async function refuseExisting(
  path: string,
  overwrite: boolean | undefined,
  action: string,
): Promise<void> {
  if (!overwrite && await pathExists(path)) {
    throw new OptionError(`${action}: ${path} already exists; pass overwrite: true to replace it`);
  }
}

/** Flush a directory entry change to disk where the platform allows it (not on Windows). */
async function syncDir(dir: string): Promise<void> {
  const { open } = await import("node:fs/promises");
  try {
    const h = await open(dir, "r");
    try {
      await h.sync();
    } finally {
      await h.close();
    }
  } catch {
    // directories cannot be opened or fsynced on some platforms; the rename itself is still atomic
  }
}

/**
 * Move a finished, fsynced temporary file onto `dest`. Without `overwrite` this never replaces a file that
 * appeared meanwhile: a hard link fails if `dest` exists (filesystems without hard links fall back to
 * check-then-rename). On failure the temporary file is removed.
 */
export async function commitTempFile(
  tmp: string,
  dest: string,
  overwrite: boolean | undefined,
): Promise<void> {
  const fs = await import("node:fs/promises");
  const { dirname } = await import("node:path");
  try {
    if (overwrite) {
      await fs.rename(tmp, dest);
    } else {
      let linked = false;
      try {
        await fs.link(tmp, dest);
        linked = true;
      } catch (e) {
        if (code(e) === "EEXIST") {
          throw new OptionError(`write ${dest}: it already exists; pass overwrite: true to replace it`);
        }
        // no hard links here (FAT, some network mounts): check, then rename
        await refuseExisting(dest, false, `write ${dest}`);
        await fs.rename(tmp, dest);
      }
      if (linked) await fs.unlink(tmp);
    }
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => {});
    throw e;
  } finally {
    releaseTempPath(tmp);
  }
  await syncDir(dirname(dest));
}

/**
 * Write `data` to `path` atomically (temporary file, fsync, rename). Refuses to replace an existing file unless
 * `overwrite: true`. Used for small outputs such as a compressed model's `config.json`.
 *
 * @example
 * ```ts ignore
 * import { writeFileAtomic } from "./atomic_write.ts";
 * await writeFileAtomic("out/config.json", JSON.stringify({ hidden_size: 256 }, null, 2) + "\n");
 * ```
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  opts: AtomicWriteOptions = {},
): Promise<void> {
  const { open, rm } = await import("node:fs/promises");
  await refuseExisting(path, opts.overwrite, `write ${path}`);
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const tmp = tempPathFor(path);
  const h = await open(tmp, "wx");
  try {
    let done = 0;
    while (done < bytes.byteLength) {
      const { bytesWritten } = await h.write(bytes, done, bytes.byteLength - done, done);
      done += bytesWritten;
    }
    await h.sync();
  } catch (e) {
    await h.close().catch(() => {});
    await rm(tmp, { force: true }).catch(() => {});
    releaseTempPath(tmp);
    throw e;
  }
  await h.close();
  await commitTempFile(tmp, path, opts.overwrite);
}
