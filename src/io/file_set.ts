/**
 * A model folder given as a set of named files rather than a path: the `File`s a browser hands over
 * (`<input type=file webkitdirectory>` or a drop) or the members of a tar archive. The model loader reads a
 * {@link FileSet} exactly as it reads a local folder (same files, same checks, same messages); names are
 * only ever looked up in the set, so a name cannot reach outside it.
 *
 * @example
 * ```ts
 * import { fileSetFromFiles, readSetText } from "./file_set.ts";
 * const set = fileSetFromFiles([new File(['{"a": 1}'], "config.json")], "my-model");
 * console.log(set.at("config.json"), await readSetText(set, "config.json", "load model")); // my-model/config.json {"a": 1}
 * ```
 *
 * @module
 */
import { type ByteSource, checkRange } from "./byte_source.ts";
import { openBlob } from "./blob_source.ts";
import { MAX_TEXT_FILE_BYTES } from "./text_file.ts";
import { FormatError, OptionError } from "../errors.ts";

/** A folder's files by relative name (`/`-separated), read as byte sources. */
export interface FileSet {
  /** Display name: the folder's name, else the archive's or "files". */
  readonly name: string;
  /** The folder, for messages. */
  readonly where: string;
  /** A file's name as messages show it (`folder/file`). */
  at(file: string): string;
  /** The names of every file in the set, relative to the folder. */
  list(): readonly string[];
  /** Open `file`; undefined when the set holds no file of that name. */
  open(file: string): ByteSource | undefined;
}

/** True when `x` is a {@link FileSet} (duck-typed: a browser's or a tar's set, or the caller's own). */
export function isFileSet(x: unknown): x is FileSet {
  if (typeof x !== "object" || x === null) return false;
  const s = x as Partial<FileSet>;
  return typeof s.name === "string" && typeof s.at === "function" && typeof s.list === "function" &&
    typeof s.open === "function";
}

/**
 * Names relative to the set's folder: when every name starts with the same folder (a picked folder's
 * `webkitRelativePath` is `tinylm-brown/config.json`), that folder is the set's name and is dropped.
 */
function relativeNames(paths: readonly string[]): { folder?: string; names: string[] } {
  const split = paths.map((p) => p.split("/").filter((s) => s !== "" && s !== ".")); // GNU tar writes ./name
  const first = split[0]?.[0];
  const shared = first !== undefined && split.every((s) => s.length > 1 && s[0] === first);
  return shared
    ? { folder: first, names: split.map((s) => s.slice(1).join("/")) }
    : { names: split.map((s) => s.join("/")) };
}

/** A set over named byte sources; `label` names the folder when the names have no shared one. */
function setOver(
  entries: readonly { path: string; open: (name: string) => ByteSource }[],
  label: string,
  what: string,
): FileSet {
  const { folder, names } = relativeNames(entries.map((e) => e.path));
  const name = folder ?? label;
  const at = (file: string) => `${name}/${file}`;
  const byName = new Map<string, (name: string) => ByteSource>();
  names.forEach((n, i) => {
    if (byName.has(n)) throw new FormatError(at(n), `${what}: two files have this name`);
    byName.set(n, entries[i].open);
  });
  return {
    name,
    where: name,
    at,
    list: () => [...byName.keys()],
    open: (file) => byName.get(file)?.(at(file)),
  };
}

/**
 * The set of `files` (a `FileList` or an array of `File`s): each file's `webkitRelativePath` when the browser
 * gave one (a picked folder), else its name. A folder shared by every path becomes the set's name; `label`
 * names it otherwise (default `"files"`). Throws an OptionError for an empty list or a non-File, and a
 * FormatError for two files of the same name.
 */
export function fileSetFromFiles(files: ArrayLike<File> | Iterable<File>, label = "files"): FileSet {
  const list = Array.from(files as ArrayLike<File>);
  if (list.length === 0) throw new OptionError("load model: no files given (pick a model folder or file)");
  const entries = list.map((f, i) => {
    if (typeof Blob === "undefined" || !(f instanceof Blob)) {
      throw new OptionError(
        `load model: file ${i} of the list is a ${Object.prototype.toString.call(f)}, not a File`,
      );
    }
    const rel = (f as { webkitRelativePath?: string }).webkitRelativePath || f.name || `file${i}`;
    return { path: rel, open: (name: string) => openBlob(f, name) };
  });
  return setOver(entries, label, "load model");
}

const BLOCK = 512;

/** A view of `length` bytes of `src` from `start`, as a source named `name` (closing it leaves `src` open). */
function sliceSource(src: ByteSource, start: number, length: number, name: string): ByteSource {
  return {
    name,
    size: length,
    read(offset, n) {
      checkRange(name, length, offset, n);
      return src.read(start + offset, n);
    },
    close: () => Promise.resolve(),
  };
}

/** Parse an octal numeric field of a tar header (NUL/space terminated). */
function octal(h: Uint8Array, at: number, width: number): number {
  const s = new TextDecoder().decode(h.subarray(at, at + width)).replace(/[\0 ]+$/, "").trim();
  return /^[0-7]+$/.test(s) ? parseInt(s, 8) : NaN;
}

/** A NUL-terminated string field of a tar header. */
function field(h: Uint8Array, at: number, width: number): string {
  const b = h.subarray(at, at + width);
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
}

/** True when `head` (at least 263 bytes of a file) is a ustar header. */
export function isTarHeader(head: Uint8Array): boolean {
  return head.length >= 263 && field(head, 257, 6).startsWith("ustar");
}

/**
 * The regular files of a ustar/pax tar archive in `src`, as a {@link FileSet} whose members are read in place
 * (nothing is copied). Only headers are read here; folders, links and pax records are skipped. Throws a
 * FormatError naming the archive for a bad checksum, a member running past the end, or a missing end.
 */
export async function fileSetFromTar(src: ByteSource): Promise<FileSet> {
  const what = "read tar archive";
  const entries: { path: string; open: (name: string) => ByteSource }[] = [];
  let at = 0;
  for (;;) {
    if (at + BLOCK > src.size) {
      throw new FormatError(src.name, `${what}: no end-of-archive marker (cut at ${src.size} bytes?)`);
    }
    const h = await src.read(at, BLOCK);
    if (h.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
    if (octal(h, 148, 8) !== sum) {
      throw new FormatError(src.name, `${what}: bad header checksum at offset ${at} (not a tar archive?)`);
    }
    const size = octal(h, 124, 12);
    if (!Number.isSafeInteger(size)) {
      throw new FormatError(src.name, `${what}: bad size field at offset ${at}`);
    }
    const type = String.fromCharCode(h[156] || 0x30);
    const prefix = field(h, 345, 155);
    const path = (prefix ? prefix + "/" : "") + field(h, 0, 100);
    const start = at + BLOCK;
    if (start + size > src.size) {
      throw new FormatError(src.name, `${what}: member ${path} runs past the end of the archive`);
    }
    if (type === "0") entries.push({ path, open: (name) => sliceSource(src, start, size, name) });
    at = start + Math.ceil(size / BLOCK) * BLOCK;
  }
  if (entries.length === 0) throw new FormatError(src.name, `${what}: the archive holds no files`);
  const label = src.name.split(/[\\/]/).pop()!.replace(/\.tar$/i, "");
  return setOver(entries, label, what);
}

/** The 512-byte ustar header of a regular file `path` of `size` bytes (mtime 0: reproducible archives). */
function tarHeader(path: string, size: number): Uint8Array {
  const enc = new TextEncoder();
  const bytes = enc.encode(path);
  if (bytes.length === 0 || bytes.length > 100) {
    throw new OptionError(`write tar: file name ${JSON.stringify(path)} must be 1 to 100 bytes`);
  }
  const h = new Uint8Array(BLOCK);
  const put = (at: number, s: string) => h.set(enc.encode(s), at);
  const num = (v: number, width: number) => v.toString(8).padStart(width - 1, "0") + "\0";
  h.set(bytes, 0);
  put(100, num(0o644, 8)); // mode
  put(108, num(0, 8)); // uid
  put(116, num(0, 8)); // gid
  put(124, num(size, 12));
  put(136, num(0, 12)); // mtime
  put(148, "        "); // the checksum counts its own field as spaces
  h[156] = 0x30; // regular file
  put(257, "ustar\0");
  put(263, "00");
  let sum = 0;
  for (const b of h) sum += b;
  put(148, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

/**
 * A tar archive of `files` (name → parts in order: bytes as `memorySink().files` gives them, or Blobs such
 * as files written to the browser's origin-private file system) under `folder/`, as a Blob that references
 * the parts rather than copying them. The loader reads such a tar directly
 * ({@link fileSetFromTar}); `tar -xf` unpacks it into the folder.
 *
 * @example
 * ```ts
 * import { fileSetFromTar, tarBlob } from "./file_set.ts";
 * import { openBlob } from "./blob_source.ts";
 * const tar = tarBlob(new Map([["a.txt", [new TextEncoder().encode("hi")]]]), "out");
 * const set = await fileSetFromTar(openBlob(tar, "out.tar"));
 * console.log(set.name, set.list()); // out ["a.txt"]
 * ```
 */
export function tarBlob(
  files: ReadonlyMap<string, readonly (Uint8Array | Blob)[]>,
  folder: string,
): Blob {
  if (!/^[\w.+-]{1,64}$/.test(folder) || folder === "." || folder === "..") {
    throw new OptionError(
      `write tar: folder name ${JSON.stringify(folder)} must be 1–64 letters, digits, _ . + -`,
    );
  }
  const parts: BlobPart[] = [];
  for (const [name, data] of files) {
    const size = data.reduce((s, p) => s + (p instanceof Uint8Array ? p.length : p.size), 0);
    parts.push(tarHeader(`${folder}/${name}`, size) as BlobPart, ...(data as readonly BlobPart[]));
    if (size % BLOCK) parts.push(new Uint8Array(BLOCK - (size % BLOCK)) as BlobPart);
  }
  parts.push(new Uint8Array(2 * BLOCK) as BlobPart);
  return new Blob(parts, { type: "application/x-tar" });
}

/**
 * Read text file `file` of `set` whole, with the checks a local text file gets: at most `maxBytes`, UTF-8.
 * Undefined when absent and `optional`; otherwise an absent file throws a FormatError naming it.
 */
export async function readSetText(
  set: FileSet,
  file: string,
  what: string,
  optional = false,
  maxBytes = MAX_TEXT_FILE_BYTES,
): Promise<string | undefined> {
  const src = set.open(file);
  if (!src) {
    if (optional) return undefined;
    throw new FormatError(
      set.at(file),
      `${what}: no such file among the files given (give the whole folder)`,
    );
  }
  try {
    if (src.size > maxBytes) {
      throw new FormatError(
        src.name,
        `${what}: ${src.size} bytes, more than the ${maxBytes}-byte limit for this file`,
      );
    }
    const bytes = await src.read(0, src.size);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      throw new FormatError(src.name, `${what}: the file is not UTF-8 text`);
    }
  } finally {
    await src.close();
  }
}
