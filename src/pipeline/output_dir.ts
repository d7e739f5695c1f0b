/**
 * A model folder written atomically: everything goes into `<output>.tmp-<host>.<pid>-<random>/`, which is renamed onto
 * `<output>` only when complete, so an aborted or failed run leaves nothing under the destination name.
 * Writing onto (or over a folder containing) one of the inputs is always refused, and `overwrite` replaces only
 * a model folder this library wrote ({@link isOwnOutput}): never an unrelated folder, a folder holding other
 * files (the calibration text, a project), or a file.
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import { pathExists, releaseTempPath, removeStaleTemps, tempPathFor } from "../io/atomic_write.ts";
import { MODELING_FILES, TOKENIZER_FILES } from "./output.ts";
import { readSvdLlmConfig } from "./svd_llm_config.ts";

/** Files a folder written by `compress` or `merge` may hold. */
const OWN_FILES: ReadonlySet<string> = new Set([
  "config.json",
  "model.safetensors",
  ...TOKENIZER_FILES,
  ...MODELING_FILES,
]);

/**
 * Why `path` is not a model folder written by this library (a folder holding only {@link OWN_FILES}, with a
 * config.json carrying an `svd_llm` section), or undefined when it is one.
 */
export async function notOwnOutput(path: string): Promise<string | undefined> {
  const fs = await import("node:fs/promises");
  const { join } = await import("node:path");
  const st = await fs.lstat(path);
  if (!st.isDirectory()) {
    return st.isSymbolicLink() ? "it is a symbolic link" : "it is a file, not a model folder";
  }
  const names = (await fs.readdir(path)).sort(); // sorted: the same message on every file system
  const other = names.find((n) => !OWN_FILES.has(n));
  if (other !== undefined) return `it holds ${JSON.stringify(other)}, which this program never writes`;
  let config: unknown;
  try {
    config = JSON.parse(await fs.readFile(join(path, "config.json"), "utf8"));
  } catch (e) {
    const code = (e as { code?: string }).code;
    // Listed a moment ago, gone now: a concurrent writer moved the folder away (the caller tries again).
    if (code === "ENOENT" && names.includes("config.json")) throw e;
    return code === "ENOENT" ? "it has no config.json" : "its config.json is not readable JSON";
  }
  if (!readSvdLlmConfig(config)) return "its config.json has no svd_llm section";
  return undefined;
}

/** True when `path` is a model folder written by this library (see {@link notOwnOutput}). */
export async function isOwnOutput(path: string): Promise<boolean> {
  return (await notOwnOutput(path).catch((e) => String(e))) === undefined;
}

/** Refuse to replace `path` unless this library wrote it. */
async function refuseForeign(path: string, action: string): Promise<void> {
  const why = await notOwnOutput(path);
  if (why !== undefined) {
    throw new OptionError(
      `${action}: refusing to replace ${path}: ${why}; overwrite replaces only a model folder written by this program`,
    );
  }
}

/** Renames onto an existing destination attempted before giving up (each lost to a concurrent writer). */
const COMMIT_TRIES = 8;

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
  const { dirname, sep } = await import("node:path");
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
  const parent = dirname(path);
  const pst = await fs.stat(parent).catch(() => undefined);
  if (!pst?.isDirectory()) {
    throw new OptionError(
      `${action}: the output's parent folder ${parent} ${
        pst ? "is not a folder" : "does not exist"
      }; create it first`,
    );
  }
  const exists = await pathExists(path);
  if (!opts.overwrite && exists) {
    throw new OptionError(`${action}: the output ${path} already exists; pass overwrite: true to replace it`);
  }
  if (exists) {
    await refuseForeign(path, action).catch((e) => {
      if ((e as { code?: string }).code !== "ENOENT") throw e; // moved away meanwhile: nothing to refuse
    });
  }
  // Debris of an earlier writer of this output that was killed (no handler could remove it).
  await removeStaleTemps(path);
  const temp = tempPathFor(path);
  await fs.mkdir(temp, { recursive: false }).catch((e) => {
    releaseTempPath(temp);
    throw e;
  });
  let state: "open" | "done" = "open";
  const code = (e: unknown) => (e as { code?: string }).code;
  /**
   * Rename the finished folder onto `path`. With `overwrite`, an existing output (checked again: it may have
   * been replaced meanwhile) is first moved aside under a temporary "-old" name, removed afterwards whatever
   * happens. Another writer may move or fill `path` between two renames: then try again, a few times.
   */
  const place = async (): Promise<void> => {
    for (let attempt = 0; attempt < COMMIT_TRIES; attempt++) {
      if (!await pathExists(path)) {
        try {
          await fs.rename(temp, path);
          return;
        } catch (e) {
          // a folder appeared meanwhile (EEXIST / ENOTEMPTY): go round again
          if (!["EEXIST", "ENOTEMPTY", "EISDIR", "ENOTDIR"].includes(code(e) ?? "")) throw e;
          if (!opts.overwrite) break;
          continue;
        }
      }
      if (!opts.overwrite) break;
      try {
        await refuseForeign(path, action);
      } catch (e) {
        if (code(e) === "ENOENT") continue; // another writer moved it meanwhile
        throw e;
      }
      const old = tempPathFor(path) + "-old";
      releaseTempPath(old.slice(0, -4)); // only the "-old" name is used, and it holds the user's old output
      try {
        await fs.rename(path, old);
      } catch (e) {
        if (code(e) === "ENOENT") continue; // another writer moved it first
        throw e;
      }
      try {
        await fs.rename(temp, path);
        return;
      } catch (e) {
        if (!["EEXIST", "ENOTEMPTY", "EISDIR", "ENOTDIR"].includes(code(e) ?? "")) throw e;
      } finally {
        await fs.rm(old, { recursive: true, force: true });
      }
    }
    throw new OptionError(
      opts.overwrite
        ? `${action}: could not replace ${path}: other writers kept replacing it; try again`
        : `${action}: the output ${path} appeared while writing it; not replacing it`,
    );
  };
  return {
    path,
    temp,
    async commit() {
      if (state !== "open") {
        throw new OptionError(`${action}: output ${path} was already committed or aborted`);
      }
      state = "done";
      try {
        await place();
      } catch (e) {
        await fs.rm(temp, { recursive: true, force: true }).catch(() => {});
        throw e;
      } finally {
        releaseTempPath(temp);
      }
    },
    async abort() {
      if (state !== "open") return;
      state = "done";
      await fs.rm(temp, { recursive: true, force: true });
      releaseTempPath(temp);
    },
  };
}
