/**
 * Where a compressed model's files go (bytes out): a folder (see `sink_folder.ts`, loaded only when a path is
 * given), memory ({@link memorySink}), or one `WritableStream` per file ({@link streamSink}: a download, an
 * OPFS / File System Access handle). Every sink keeps the same promise: a partial output never looks
 * complete. A folder is written under a temporary name and renamed at `commit`; memory is handed out only
 * after `commit`; streams are closed only at `commit`, and aborted on failure.
 *
 * @example
 * ```ts
 * import { memorySink } from "./sink.ts";
 * const sink = memorySink();
 * const f = await sink.file("config.json");
 * await f.write(new TextEncoder().encode("{}\n"));
 * await f.close();
 * await sink.commit();
 * console.log([...(await sink.files).keys()]); // ["config.json"]
 * ```
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import type { ByteSink } from "../io/safetensors_writer.ts";

export type { ByteSink };

/** The output of a compression or merge: named files written in sequence, then committed or aborted. */
export interface OutputSink {
  /** What the output is, for reports and messages (a folder path, "memory", …). */
  readonly name: string;
  /** Start file `name` of the output (a plain file name, no folders); written in order, then closed. */
  file(name: string): Promise<ByteSink>;
  /** Every file is closed: present the output as complete. */
  commit(): Promise<void>;
  /** Give up: nothing written may look complete. Safe to call twice, and after `commit` (then a no-op). */
  abort(reason?: unknown): Promise<void>;
}

/** A file name a sink accepts: no path separators, not empty, not `.`/`..`. */
export function checkFileName(name: string): void {
  if (typeof name !== "string" || name === "" || name === "." || name === ".." || /[\\/\0]/.test(name)) {
    throw new OptionError(`output: invalid file name ${JSON.stringify(name)}`);
  }
}

/** Write `bytes` as the whole of file `name`. */
export async function writeWhole(sink: OutputSink, name: string, bytes: Uint8Array | string): Promise<void> {
  const f = await sink.file(name);
  try {
    await f.write(typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes);
    await f.close();
  } catch (e) {
    await f.abort().catch(() => {});
    throw e;
  }
}

/** A sink keeping the output in memory; see {@link memorySink}. */
export interface MemorySink extends OutputSink {
  /** Each file's bytes as written (parts in order): resolves at `commit`, rejects at `abort`. */
  readonly files: Promise<Map<string, Uint8Array[]>>;
  /** File `name` as one Blob, once {@link files} has resolved. */
  blob(name: string): Promise<Blob>;
}

/** An output kept in memory: `files` resolves with every file's parts only once the run has succeeded. */
export function memorySink(name = "memory"): MemorySink {
  const parts = new Map<string, Uint8Array[]>();
  let settle!: { resolve(v: Map<string, Uint8Array[]>): void; reject(e: unknown): void };
  const files = new Promise<Map<string, Uint8Array[]>>((resolve, reject) => (settle = { resolve, reject }));
  files.catch(() => {}); // a caller that never looks at an aborted result is not an unhandled rejection
  let state: "open" | "committed" | "aborted" = "open";
  const open = (what: string) => {
    if (state !== "open") throw new OptionError(`output ${name}: ${what} after ${state}`);
  };
  return {
    name,
    files,
    file(file: string): Promise<ByteSink> {
      open(`file ${JSON.stringify(file)}`);
      checkFileName(file);
      if (parts.has(file)) {
        throw new OptionError(`output ${name}: file ${JSON.stringify(file)} written twice`);
      }
      const list: Uint8Array[] = [];
      parts.set(file, list);
      return Promise.resolve({
        write: (bytes: Uint8Array) => {
          open(`write ${file}`);
          list.push(bytes.slice()); // the writer reuses its buffers
          return Promise.resolve();
        },
        close: () => Promise.resolve(),
        abort: () => Promise.resolve(void parts.delete(file)),
      });
    },
    commit() {
      open("commit");
      state = "committed";
      settle.resolve(parts);
      return Promise.resolve();
    },
    abort(reason?: unknown) {
      if (state === "open") {
        state = "aborted";
        parts.clear();
        settle.reject(reason ?? new Error(`output ${name}: aborted`));
      }
      return Promise.resolve();
    },
    async blob(file: string): Promise<Blob> {
      const got = (await files).get(file);
      if (!got) throw new OptionError(`output ${name}: no file ${JSON.stringify(file)}`);
      return new Blob(got as BlobPart[]);
    },
  };
}

/**
 * An output written to one `WritableStream` per file, opened by `open(name)` (a download, an OPFS file's
 * `createWritable()`). Streams are closed only at `commit`, once every file is complete; on failure every
 * stream not yet closed is aborted (an OPFS writable then discards what it received).
 */
export function streamSink(
  open: (name: string) => WritableStream<Uint8Array> | Promise<WritableStream<Uint8Array>>,
  name = "streams",
): OutputSink {
  const writers: WritableStreamDefaultWriter<Uint8Array>[] = [];
  let state: "open" | "committed" | "aborted" = "open";
  const live = (what: string) => {
    if (state !== "open") throw new OptionError(`output ${name}: ${what} after ${state}`);
  };
  return {
    name,
    async file(file: string): Promise<ByteSink> {
      live(`file ${JSON.stringify(file)}`);
      checkFileName(file);
      const w = (await open(file)).getWriter();
      writers.push(w);
      return {
        write: async (bytes: Uint8Array) => {
          live(`write ${file}`);
          await w.write(bytes.slice()); // the writer reuses its buffers
        },
        close: () => Promise.resolve(), // closed at commit, when the whole output is complete
        abort: async () => {
          await w.abort().catch(() => {});
        },
      };
    },
    async commit() {
      live("commit");
      state = "committed";
      for (const w of writers) await w.close();
    },
    async abort(reason?: unknown) {
      if (state !== "open") return;
      state = "aborted";
      for (const w of writers) await w.abort(reason).catch(() => {});
    },
  };
}
