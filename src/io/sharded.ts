/**
 * Sharded safetensors (`model.safetensors.index.json` + shards) as one {@link TensorReader}, and
 * {@link openModelWeights}, which finds a model's weights in a folder.
 *
 * @module
 */
import type { TensorInfo, TensorReader } from "./tensor_reader.ts";
import { openSafetensors, type SafetensorsReader } from "./safetensors_reader.ts";
import { fetchUrlText, type OpenUrlOptions } from "./url_source.ts";
import { parseJsonObject, readTextFile } from "./text_file.ts";
import { FormatError } from "../errors.ts";
import { type FileSet, isFileSet, readSetText } from "./file_set.ts";

/** The index file name Hugging Face uses for sharded safetensors. */
export const INDEX_FILE = "model.safetensors.index.json";

/**
 * True if `file`, a shard name from an index, is a plain relative name: segments of letters, digits and
 * `._+-` separated by `/`, none of them `.` or `..`. That rules out absolute paths, other hosts (`//host`,
 * `https:`), backslashes and percent-escapes (`%2e%2e` is `..` to a URL parser): a shard can only be beside
 * its index, local or remote, so a hostile index cannot read elsewhere or send the caller's token elsewhere.
 */
export function isPlainShardName(file: string): boolean {
  return /^[A-Za-z0-9_.+-]+(\/[A-Za-z0-9_.+-]+)*$/.test(file) &&
    !file.split("/").some((seg) => seg === "." || seg === "..");
}

/** A local path for paths and `file:` URLs; undefined for http(s) URLs, which are read remotely. */
async function localPath(input: string | URL): Promise<string | undefined> {
  const url = input instanceof URL ? input : /^(https?:\/\/|file:)/i.test(input) ? new URL(input) : undefined;
  if (!url) return input as string;
  if (url.protocol === "file:") return (await import("node:url")).fileURLToPath(url);
  if (url.protocol === "http:" || url.protocol === "https:") return undefined;
  throw new FormatError(
    url.href,
    `open model weights: unsupported URL scheme ${url.protocol} (use http, https, file)`,
  );
}

/**
 * Open a sharded safetensors model from its index (`{"metadata": {...}, "weight_map": {tensor: shard file}}`,
 * shard paths relative to the index's folder). The index may be a path, a `file:` URL, an `http(s)` URL
 * (then the index is fetched and the shards are read with Range requests beside it), or a {@link FileSet}
 * holding `model.safetensors.index.json` (the shards are then looked up in the set). Every shard's header is read and checked now (each tensor of
 * the map must be in its shard); shard files are then opened again lazily, on the first read of one of
 * their tensors, and stay open until `close()`. Tensors present in a shard but absent from the map are ignored.
 *
 * @example
 * ```ts ignore
 * import { openShardedSafetensors } from "./sharded.ts";
 * const r = await openShardedSafetensors("llama/model.safetensors.index.json");
 * const w = await r.read("model.layers.0.self_attn.q_proj.weight");
 * await r.close();
 * ```
 */
export async function openShardedSafetensors(
  index: string | URL | FileSet,
  opts: OpenUrlOptions = {},
): Promise<TensorReader> {
  const set = isFileSet(index) ? index : undefined;
  const path = set ? undefined : await import("node:path");
  const local = set ? set.at(INDEX_FILE) : await localPath(index as string | URL);
  const remote = local === undefined;
  const indexPath = local ?? new URL(index as string | URL).href;
  const fail = (msg: string): never => {
    throw new FormatError(indexPath, `sharded safetensors index: ${msg}`);
  };
  const what = "sharded safetensors index: cannot read the index";
  const text = set
    ? (await readSetText(set, INDEX_FILE, what))!
    : remote
    ? (await fetchUrlText(indexPath, opts, false, what))!
    : (await readTextFile(indexPath, what))!;
  const json = parseJsonObject(text, indexPath, "sharded safetensors index");
  const { weight_map: map, metadata: rawMeta } = json as Record<string, unknown>;
  if (typeof map !== "object" || map === null || Array.isArray(map)) fail('missing "weight_map" object');
  const metadata: Record<string, string> = {};
  if (rawMeta !== undefined && rawMeta !== null) {
    if (typeof rawMeta !== "object" || Array.isArray(rawMeta)) fail('"metadata" must be an object');
    for (const [k, v] of Object.entries(rawMeta as Record<string, unknown>)) {
      // HF writes numbers here (total_size); render every value as a string
      Object.defineProperty(metadata, k, {
        value: typeof v === "string" ? v : JSON.stringify(v),
        enumerable: true,
      });
    }
  }
  const folder = set ? set.where : remote ? new URL(".", indexPath).href : path!.dirname(indexPath);
  // a set's shard is looked up by its name in the index; a path or URL is opened as such
  const openShard = (shard: string): Promise<SafetensorsReader> => {
    if (!set) return openSafetensors(shard, opts);
    const src = set.open(shardNames.get(shard)!);
    return src
      ? openSafetensors(src)
      : Promise.reject(new FormatError(shard, "cannot open file: not among the files given"));
  };
  const shardOf = new Map<string, string>(); // tensor → shard path or URL
  const shardNames = new Map<string, string>(); // shard path or URL → file name as written in the index
  for (const [tensor, file] of Object.entries(map as Record<string, unknown>)) {
    if (typeof file !== "string" || file === "") {
      fail(`weight_map[${JSON.stringify(tensor)}] must be a file name`);
    }
    const f = file as string;
    // shards live beside the index: no absolute paths, no other hosts, no climbing out of the folder
    const p = set ? set.at(f) : remote ? new URL(f, folder).href : path!.join(folder, f);
    if (!isPlainShardName(f) || (remote && !p.startsWith(folder))) {
      fail(
        `weight_map[${JSON.stringify(tensor)}] = ${
          JSON.stringify(f)
        } points outside the index's folder or is not a plain file name (letters, digits, "._+-", "/")`,
      );
    }
    shardOf.set(tensor, p);
    shardNames.set(p, f);
  }
  if (shardOf.size === 0) fail("weight_map is empty");

  // Read every shard's header once: validates the shards and gives dtypes/shapes without reading data.
  const infos: TensorInfo[] = [];
  const infoByName = new Map<string, TensorInfo>();
  for (const [shard, file] of shardNames) {
    let r: SafetensorsReader;
    try {
      r = await openShard(shard);
    } catch (e) {
      if (e instanceof FormatError && /cannot open file|HTTP status 404/.test(e.message)) {
        return fail(`shard ${JSON.stringify(file)} is missing or unreadable (${e.message})`);
      }
      throw e;
    }
    try {
      for (const [tensor, s] of shardOf) {
        if (s !== shard) continue;
        if (!r.has(tensor)) {
          fail(`tensor ${JSON.stringify(tensor)} is mapped to shard ${JSON.stringify(file)}, which lacks it`);
        }
      }
      for (const t of r.tensors()) {
        if (shardOf.get(t.name) === shard) {
          infos.push(t);
          infoByName.set(t.name, t);
        }
      }
      for (const [k, v] of Object.entries(r.metadata)) {
        if (!Object.hasOwn(metadata, k)) Object.defineProperty(metadata, k, { value: v, enumerable: true });
      }
    } finally {
      await r.close();
    }
  }

  const open = new Map<string, Promise<SafetensorsReader>>();
  const shardReader = (shard: string): Promise<SafetensorsReader> => {
    let p = open.get(shard);
    if (!p) {
      p = openShard(shard);
      open.set(shard, p);
    }
    return p;
  };
  const info = (name: string): TensorInfo => {
    const i = infoByName.get(name);
    if (!i) throw new FormatError(indexPath, `no tensor named ${JSON.stringify(name)} in this sharded model`);
    return i;
  };
  return {
    name: indexPath,
    metadata: Object.freeze(metadata),
    tensors: () => infos,
    has: (name: string) => infoByName.has(name),
    info,
    async read(name: string): Promise<Float32Array> {
      info(name);
      return await (await shardReader(shardOf.get(name)!)).read(name);
    },
    async close(): Promise<void> {
      const all = [...open.values()];
      open.clear();
      for (const p of all) await (await p.catch(() => undefined))?.close();
    },
  };
}

/**
 * Open a model's weights from a folder or a file: a folder's `model.safetensors`, else its
 * `model.safetensors.index.json`, else its only `*.safetensors` file; a file path ending in `.json` is read as
 * a shard index, any other file as safetensors. An `http(s)` URL is read remotely the same way (a `.json` URL as
 * an index, anything else as one safetensors file; folders cannot be listed over HTTP). GGUF files are not
 * handled here: use the GGUF reader.
 *
 * @example
 * ```ts ignore
 * import { openModelWeights } from "./sharded.ts";
 * const r = await openModelWeights("/models/tinylm-brown");
 * console.log(r.tensors().length);
 * ```
 */
export async function openModelWeights(
  input: string | URL,
  opts: OpenUrlOptions = {},
): Promise<TensorReader> {
  const local = await localPath(input);
  if (local === undefined) {
    const url = new URL(input);
    if (/\.gguf$/i.test(url.pathname)) {
      throw new FormatError(
        url.href,
        "open model weights: this is a GGUF file; open it with the GGUF reader (gguf.ts)",
      );
    }
    return /\.json$/i.test(url.pathname)
      ? await openShardedSafetensors(url, opts)
      : await openSafetensors(url, opts);
  }
  const dirOrFile = local;
  const fs = await import("node:fs/promises");
  const { join } = await import("node:path");
  if (/\.gguf$/i.test(dirOrFile)) {
    throw new FormatError(
      dirOrFile,
      "open model weights: this is a GGUF file; open it with the GGUF reader (gguf.ts)",
    );
  }
  let st;
  try {
    st = await fs.stat(dirOrFile);
  } catch (e) {
    throw new FormatError(dirOrFile, `open model weights: no such file or folder (${(e as Error).message})`);
  }
  if (!st.isDirectory()) {
    return /\.json$/i.test(dirOrFile)
      ? await openShardedSafetensors(dirOrFile)
      : await openSafetensors(dirOrFile);
  }
  const names = await fs.readdir(dirOrFile);
  const file = pickWeights(dirOrFile, names);
  return file === INDEX_FILE
    ? await openShardedSafetensors(join(dirOrFile, file))
    : await openSafetensors(join(dirOrFile, file));
}

/**
 * Which file of a folder holds its weights: `model.safetensors`, else the shard index, else the only
 * `*.safetensors` file. Throws a FormatError naming `where` and what it found instead.
 */
export function pickWeights(where: string, names: readonly string[]): string {
  if (names.includes("model.safetensors")) return "model.safetensors";
  if (names.includes(INDEX_FILE)) return INDEX_FILE;
  const st_ = names.filter((n) => /\.safetensors$/i.test(n));
  if (st_.length === 1) return st_[0];
  const ggufs = names.filter((n) => /\.gguf$/i.test(n));
  throw new FormatError(
    where,
    `open model weights: no model.safetensors or ${INDEX_FILE} in this folder${
      st_.length > 1 ? ` (several .safetensors files and no index: ${st_.slice(0, 4).join(", ")})` : ""
    }${ggufs.length ? `; GGUF files found (${ggufs.join(", ")}): open them with the GGUF reader` : ""}`,
  );
}

/** {@link openModelWeights} for a folder given as a {@link FileSet} (top-level files only, as a folder's). */
export async function openSetWeights(set: FileSet): Promise<TensorReader> {
  const file = pickWeights(set.where, set.list().filter((n) => !n.includes("/")));
  if (file === INDEX_FILE) return await openShardedSafetensors(set);
  return await openSafetensors(set.open(file)!);
}
