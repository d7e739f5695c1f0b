/**
 * A model folder written atomically: everything goes into `<output>.tmp-<host>.<pid>-<random>/`, which is renamed onto
 * `<output>` only when complete, so an aborted or failed run leaves nothing under the destination name.
 * Writing onto (or over a folder containing) one of the inputs is always refused.
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import { pathExists, releaseTempPath, removeStaleTemps, tempPathFor } from "../io/atomic_write.ts";

/** A folder being written; see {@link openOutputDir}. */
export interface OutputDir {
  /** Final destination. */
  readonly path: string;
  /** The temporary folder being filled. */
  readonly temp: string;
  /** Move the finished folder onto `path` (replacing an old one only with `overwrite`). */
  commit(): Promise<void>;
  /** Remove the temporary folder; the destination is untouched. Safe to call twice. */
  abort(): Promise<void>;
}

/** Options of {@link openOutputDir}. */
export interface OutputDirOptions {
  /** Replace an existing destination (default false: refuse). */
  overwrite?: boolean;
  /** Paths read to produce the output: the destination may be none of them, contain none, nor lie inside one. */
  inputs?: string[];
  /** The action named in error messages (default "compress"). */
  action?: string;
}

async function real(path: string): Promise<string> {
  const { realpath } = await import("node:fs/promises");
  const { resolve } = await import("node:path");
  try {
    return await realpath(path);
  } catch {
    return resolve(path);
  }
}

/**
 * Create the temporary folder beside `path`. Throws OptionError when `path` is empty, exists without
 * `overwrite`, is an input, contains one, or lies inside an input folder (with `overwrite`, replacing a file
 * of the input model by the output folder would destroy the input).
 */
export async function openOutputDir(path: string, opts: OutputDirOptions = {}): Promise<OutputDir> {
  const fs = await import("node:fs/promises");
  const { sep } = await import("node:path");
  const action = opts.action ?? "compress";
  if (typeof path !== "string" || path.trim() === "") {
    throw new OptionError(`${action}: the output must be a folder path, got ${JSON.stringify(path)}`);
  }
  const dest = await real(path);
  for (const input of opts.inputs ?? []) {
    const src = await real(input);
    if (src === dest || src.startsWith(dest + sep)) {
      throw new OptionError(
        `${action}: the output ${path} would overwrite the input ${input}; choose another folder`,
      );
    }
    if (dest.startsWith(src + sep)) {
      throw new OptionError(
        `${action}: the output ${path} lies inside the input folder ${input}; choose a folder outside it`,
      );
    }
  }
  if (!opts.overwrite && await pathExists(path)) {
    throw new OptionError(`${action}: the output ${path} already exists; pass overwrite: true to replace it`);
  }
  // Debris of an earlier writer of this output that was killed (no handler could remove it).
  await removeStaleTemps(path);
  const temp = tempPathFor(path);
  await fs.mkdir(temp, { recursive: false }).catch((e) => {
    releaseTempPath(temp);
    throw e;
  });
  let state: "open" | "done" = "open";
  return {
    path,
    temp,
    async commit() {
      if (state !== "open") {
        throw new OptionError(`${action}: output ${path} was already committed or aborted`);
      }
      if (await pathExists(path)) {
        if (!opts.overwrite) {
          throw new OptionError(`${action}: the output ${path} appeared while writing it; not replacing it`);
        }
        const old = tempPathFor(path) + "-old";
        releaseTempPath(old.slice(0, -4)); // only the "-old" name is used, and it holds the user's old output
        await fs.rename(path, old);
        await fs.rename(temp, path);
        releaseTempPath(temp);
        await fs.rm(old, { recursive: true, force: true });
      } else {
        await fs.rename(temp, path);
        releaseTempPath(temp);
      }
      state = "done";
    },
    async abort() {
      if (state !== "open") return;
      state = "done";
      await fs.rm(temp, { recursive: true, force: true });
      releaseTempPath(temp);
    },
  };
}
