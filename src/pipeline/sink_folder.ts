/**
 * The folder sink: an {@link OutputSink} writing into `<path>.tmp-…/` and renaming it onto `path` at commit
 * (see `output_dir.ts` for the guarantees). Node/Deno/Bun only; loaded lazily by the path-based entry points,
 * so the browser's import graph holds no `node:` module.
 *
 * @module
 */
import { fileByteSink } from "../io/safetensors_writer.ts";
import { openOutputDir, type OutputDirOptions } from "./output_dir.ts";
import { checkFileName, type OutputSink } from "./sink.ts";

/** A folder being written; `temp` is the temporary folder filled until commit. */
export interface FolderSink extends OutputSink {
  /** The temporary folder. */
  readonly temp: string;
}

/** Open the folder `path` for writing (refusing a bad destination before anything is written). */
export async function openFolderSink(path: string, opts: OutputDirOptions = {}): Promise<FolderSink> {
  const out = await openOutputDir(path, opts);
  const fs = await import("node:fs/promises");
  const { join } = await import("node:path");
  return {
    name: path,
    temp: out.temp,
    async file(name: string) {
      checkFileName(name);
      const file = join(out.temp, name);
      const handle = await fs.open(file, "wx");
      return fileByteSink(handle, join(path, name), {
        close: () => Promise.resolve(),
        abort: () => fs.rm(file, { force: true }),
      });
    },
    commit: () => out.commit(),
    abort: () => out.abort(),
  };
}
