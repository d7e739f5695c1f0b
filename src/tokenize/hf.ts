/**
 * Hugging Face `tokenizer.json` tokenizers through `@huggingface/tokenizers`, behind the common
 * {@link Tokenizer} interface.
 *
 * @module
 */
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { FormatError } from "../errors.ts";
import { parseJsonObject, readTextFile } from "../io/text_file.ts";
import { checkBpeMerges } from "./bpe_merges.ts";
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

/** A BPE model's merges checked against its vocabulary and added tokens ({@link checkBpeMerges}). */
function checkBpeModel(json: Record<string, unknown>, where: string): void {
  const model = json.model as Record<string, unknown> | undefined;
  if (!model || model.type !== "BPE" || !Array.isArray(model.merges)) return;
  const vocab = new Set<string>(
    typeof model.vocab === "object" && model.vocab !== null ? Object.keys(model.vocab) : [],
  );
  if (Array.isArray(json.added_tokens)) {
    for (const t of json.added_tokens) {
      const c = (t as { content?: unknown })?.content;
      if (typeof c === "string") vocab.add(c);
    }
  }
  checkBpeMerges(model.merges, vocab, where);
}

/**
 * Wrap parsed `tokenizer.json` and `tokenizer_config.json` objects (works anywhere, browsers included).
 * `encode` never lets the post-processor add special tokens; BOS is added only when asked. A BPE merge that
 * is not two tokens of the vocabulary is refused with a FormatError naming `where` and the merge.
 */
export function hfTokenizerFromJson(
  tokenizerJson: Record<string, unknown>,
  tokenizerConfig: Record<string, unknown> = {},
  defaults: HfTokenizerDefaults = {},
  where = "tokenizer.json",
): Tokenizer {
  checkBpeModel(tokenizerJson, where);
  const tok = new HfTokenizer(tokenizerJson, tokenizerConfig);
  const idOf = (key: string, fallback: number | undefined): number => {
    const content = tokenContent(tokenizerConfig[key]);
    const id = content === undefined ? undefined : tok.token_to_id(content);
    if (content !== undefined && id === undefined) {
      // named but absent: silently falling back would mean "no BOS" or another token
      throw new FormatError(
        where,
        `tokenizer_config.json ${key} ${JSON.stringify(content)} is not a token of this vocabulary`,
      );
    }
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
  const { join } = await import("node:path");
  const readJson = async (file: string, optional: boolean): Promise<Record<string, unknown>> => {
    const text = await readTextFile(join(dir, file), "load tokenizer", optional);
    return text === undefined ? {} : parseJsonObject(text, join(dir, file), `load tokenizer: ${file}`);
  };
  const json = await readJson("tokenizer.json", false);
  const config = await readJson("tokenizer_config.json", true);
  try {
    return hfTokenizerFromJson(json, config, defaults, join(dir, "tokenizer.json"));
  } catch (e) {
    if (e instanceof FormatError) throw e;
    throw new FormatError(join(dir, "tokenizer.json"), `load tokenizer: ${(e as Error).message}`);
  }
}
