/**
 * Hugging Face `tokenizer.json` tokenizers through `@huggingface/tokenizers`, behind the common
 * {@link Tokenizer} interface.
 *
 * @module
 */
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { FormatError } from "../errors.ts";
import type { EncodeOptions, Tokenizer } from "./tokenizer.ts";

/** Special token ids to use when tokenizer_config.json does not name them (usually from config.json). */
export interface HfTokenizerDefaults {
  /** BOS id fallback. */
  bosId?: number;
  /** EOS id fallback. */
  eosId?: number;
}

function tokenContent(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return undefined;
}

/**
 * Wrap parsed `tokenizer.json` and `tokenizer_config.json` objects (works anywhere, browsers included).
 * `encode` never lets the post-processor add special tokens; BOS is added only when asked.
 */
export function hfTokenizerFromJson(
  tokenizerJson: Record<string, unknown>,
  tokenizerConfig: Record<string, unknown> = {},
  defaults: HfTokenizerDefaults = {},
): Tokenizer {
  const tok = new HfTokenizer(tokenizerJson, tokenizerConfig);
  const idOf = (key: string, fallback: number | undefined): number => {
    const content = tokenContent(tokenizerConfig[key]);
    const id = content === undefined ? undefined : tok.token_to_id(content);
    return id ?? (fallback !== undefined && fallback >= 0 ? fallback : -1);
  };
  let maxId = -1;
  for (const id of tok.get_vocab(true).values()) if (id > maxId) maxId = id;
  const bosId = idOf("bos_token", defaults.bosId), eosId = idOf("eos_token", defaults.eosId);
  return {
    bosId,
    eosId,
    vocabSize: maxId + 1,
    encode(text: string, opts: EncodeOptions = {}): Int32Array {
      const ids = tok.encode(text, { add_special_tokens: false }).ids;
      if (!opts.bos || bosId < 0) return Int32Array.from(ids);
      const out = new Int32Array(ids.length + 1);
      out[0] = bosId;
      out.set(ids, 1);
      return out;
    },
    decode(ids: ArrayLike<number>): string {
      return tok.decode(Array.from(ids), { skip_special_tokens: true });
    },
  };
}

/**
 * Load the tokenizer of a Hugging Face model folder: `tokenizer.json` (required) and `tokenizer_config.json`
 * (optional).
 *
 * @example
 * ```ts ignore
 * import { loadHfTokenizer } from "./hf.ts";
 * const tok = await loadHfTokenizer("/models/tinylm-brown");
 * tok.encode("The jury said", { bos: true }); // Int32Array [1, 477, 504, 1163, 553]
 * ```
 */
export async function loadHfTokenizer(dir: string, defaults: HfTokenizerDefaults = {}): Promise<Tokenizer> {
  const { readFile } = await import("node:fs/promises");
  const { join } = await import("node:path");
  const readJson = async (file: string, optional: boolean): Promise<Record<string, unknown>> => {
    let text: string;
    try {
      text = await readFile(join(dir, file), "utf8");
    } catch (e) {
      if (optional) return {};
      throw new FormatError(
        join(dir, file),
        `load tokenizer: cannot read the file (${(e as Error).message})`,
      );
    }
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new FormatError(join(dir, file), `load tokenizer: not valid JSON (${(e as Error).message})`);
    }
  };
  const json = await readJson("tokenizer.json", false);
  const config = await readJson("tokenizer_config.json", true);
  try {
    return hfTokenizerFromJson(json, config, defaults);
  } catch (e) {
    if (e instanceof FormatError) throw e;
    throw new FormatError(join(dir, "tokenizer.json"), `load tokenizer: ${(e as Error).message}`);
  }
}
