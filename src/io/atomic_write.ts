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

/**
 * A fresh temporary name beside `path`: `<path>.tmp-<random hex>`. The name is recorded as pending until
 * {@link releaseTempPath}, so that an interrupted process can remove what it was writing
 * ({@link pendingTempPaths}).
 */
export function tempPathFor(path: string): string {
  const r = new Uint8Array(6);
  crypto.getRandomValues(r);
  const temp = `${path}.tmp-${Array.from(r, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  pendingTemps.add(temp);
  return temp;
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
