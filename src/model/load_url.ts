/**
 * Open a model over HTTP(S) without downloading it: a Hugging Face folder URL (config.json, tokenizer.json,
 * model.safetensors or a sharded index) or a `.gguf` URL. Weights are read with Range requests, one tensor at a
 * time as the forward pass asks, so evaluation streams the model block by block from the server. Works
 * wherever `fetch` does (browsers included): no file system is touched.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { openGguf } from "../io/gguf.ts";
import { openSafetensors } from "../io/safetensors_reader.ts";
import type { TensorInfo, TensorReader } from "../io/tensor_reader.ts";
import { openUrl, type OpenUrlOptions } from "../io/url_source.ts";
import { tokenizerFromGgufJson } from "../tokenize/from_gguf.ts";
import { hfTokenizerFromJson } from "../tokenize/hf.ts";
import type { Tokenizer } from "../tokenize/tokenizer.ts";
import { type LoadedModel, modelFromGguf } from "./load.ts";
import { specFromHfConfig } from "./spec.ts";

/** Fetch `url` as JSON; undefined on 404 when `optional`. */
async function fetchJson(
  url: string,
  opts: OpenUrlOptions,
  optional: boolean,
): Promise<Record<string, unknown> | undefined> {
  const f = opts.fetch ?? globalThis.fetch;
  let res: Response;
  try {
    res = await f(url, { headers: opts.headers });
  } catch (e) {
    throw new FormatError(url, `load model: request failed (${(e as Error).message})`);
  }
  if (res.status === 404 && optional) {
    await res.body?.cancel().catch(() => {});
    return undefined;
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => {});
    throw new FormatError(url, `load model: HTTP status ${res.status}`);
  }
  try {
    return await res.json();
  } catch (e) {
    throw new FormatError(url, `load model: not valid JSON (${(e as Error).message})`);
  }
}

/** Shards named by an index, opened now (headers only), as one reader. */
async function openShardedUrl(indexUrl: string, index: Record<string, unknown>, opts: OpenUrlOptions) {
  const map = index.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw new FormatError(indexUrl, 'sharded safetensors index: missing "weight_map" object');
  }
  const shardOf = new Map<string, string>();
  for (const [tensor, file] of Object.entries(map as Record<string, unknown>)) {
    if (typeof file !== "string" || file.includes("..")) {
      throw new FormatError(indexUrl, `sharded safetensors index: bad shard name for ${tensor}`);
    }
    shardOf.set(tensor, file);
  }
  const shards = new Map<string, TensorReader>();
  try {
    for (const file of new Set(shardOf.values())) {
      shards.set(file, await openSafetensors(await openUrl(new URL(file, indexUrl).href, opts)));
    }
  } catch (e) {
    for (const r of shards.values()) await r.close().catch(() => {});
    throw e;
  }
  const infos: TensorInfo[] = [];
  for (const [tensor, file] of shardOf) {
    const r = shards.get(file)!;
    if (!r.has(tensor)) {
      throw new FormatError(indexUrl, `sharded safetensors index: ${tensor} is not in ${file}`);
    }
    infos.push(r.info(tensor));
  }
  const byName = new Map(infos.map((i) => [i.name, i]));
  const reader = (name: string): TensorReader => {
    const file = shardOf.get(name);
    if (file === undefined) {
      throw new FormatError(indexUrl, `no tensor named ${JSON.stringify(name)} in this model`);
    }
    return shards.get(file)!;
  };
  const out: TensorReader = {
    name: indexUrl,
    metadata: {},
    tensors: () => infos,
    has: (name) => byName.has(name),
    info: (name) => reader(name).info(name),
    read: (name) => reader(name).read(name),
    close: async () => {
      for (const r of shards.values()) await r.close();
    },
  };
  return out;
}

/**
 * Open a model by URL: `https://…/model.gguf`, or a folder URL whose files sit beside it
 * (`https://huggingface.co/<repo>/resolve/main/` works). `opts` carries fetch, headers (a token) and retries.
 */
export async function loadModelUrl(url: string | URL, opts: OpenUrlOptions = {}): Promise<LoadedModel> {
  const u = new URL(url);
  // the Hugging Face hub's https://huggingface.co/<org>/<repo>/resolve/<rev>/ names the repo, not the revision
  const hub = /\/([^/]+)\/resolve\/[^/]+\/?$/.exec(u.pathname);
  const name = decodeURIComponent(hub?.[1] ?? u.pathname.replace(/\/+$/, "").split("/").pop() ?? u.host);
  if (/\.gguf$/i.test(u.pathname)) {
    const src = await openUrl(u, opts);
    try {
      return modelFromGguf(await openGguf(src), u.href, name.replace(/\.gguf$/i, ""));
    } catch (e) {
      await src.close();
      throw e;
    }
  }
  const base = u.href.endsWith("/") ? u.href : u.href + "/";
  const at = (file: string) => new URL(file, base).href;
  const config = (await fetchJson(at("config.json"), opts, false))!;
  const spec = specFromHfConfig(config, at("config.json"));
  let tokenizer: Tokenizer;
  const tokJson = await fetchJson(at("tokenizer.json"), opts, true);
  if (tokJson) {
    const tokConfig = (await fetchJson(at("tokenizer_config.json"), opts, true)) ?? {};
    tokenizer = hfTokenizerFromJson(tokJson, tokConfig, { bosId: spec.bosTokenId, eosId: spec.eosTokenId });
  } else {
    const gg = await fetchJson(at("tokenizer_gguf.json"), opts, true);
    if (!gg) throw new FormatError(base, "load model: neither tokenizer.json nor tokenizer_gguf.json found");
    tokenizer = tokenizerFromGgufJson(gg, at("tokenizer_gguf.json"));
  }
  let reader: TensorReader;
  const index = await fetchJson(at("model.safetensors.index.json"), opts, true);
  if (index) reader = await openShardedUrl(at("model.safetensors.index.json"), index, opts);
  else reader = await openSafetensors(await openUrl(at("model.safetensors"), opts));
  return { spec, reader, tokenizer, config, name, close: () => reader.close() };
}
