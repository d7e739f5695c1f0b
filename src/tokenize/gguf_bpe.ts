/**
 * Byte-level BPE vocabularies from GGUF metadata (`tokenizer.ggml.model = "gpt2"`: GPT-2, Llama 3, Qwen2 and
 * most newer models), rebuilt as a Hugging Face tokenizer.json object and run by `@huggingface/tokenizers`.
 * The pre-tokenizer regex is chosen by `tokenizer.ggml.pre`, as llama.cpp does; an unknown one is refused
 * rather than guessed.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import type { GgufValue } from "../io/gguf.ts";
import { checkBpeMerges } from "./bpe_merges.ts";
import { hfTokenizerFromJson } from "./hf.ts";
import { specialId } from "./sentencepiece.ts";
import type { Tokenizer } from "./tokenizer.ts";

const GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const LLAMA3 =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2 =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** `tokenizer.ggml.pre` values → split regex (llama.cpp's names). */
const PRE_REGEX: Readonly<Record<string, string>> = {
  default: GPT2,
  gpt2: GPT2,
  "gpt-2": GPT2,
  "llama-bpe": LLAMA3,
  "llama3": LLAMA3,
  smaug: LLAMA3,
  qwen2: QWEN2,
};

/** GGUF token types that are special (control, user-defined). */
const SPECIAL_TYPES = new Set([3, 4]);

/**
 * A byte-level BPE {@link Tokenizer} from GGUF metadata: `tokenizer.ggml.tokens`, `.merges` ("a b" strings),
 * optional `.token_type`, `.pre`, `.bos_token_id`, `.eos_token_id`.
 */
export function ggufBpeTokenizer(kv: ReadonlyMap<string, GgufValue>, where = "model.gguf"): Tokenizer {
  const tokens = kv.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== "string")) {
    throw new FormatError(where, "GGUF tokenizer.ggml.tokens is missing or not an array of strings");
  }
  const merges = kv.get("tokenizer.ggml.merges");
  if (!Array.isArray(merges) || merges.some((t) => typeof t !== "string")) {
    throw new FormatError(where, "GGUF tokenizer.ggml.merges is missing or not an array of strings");
  }
  checkBpeMerges(merges, new Set(tokens as string[]), `${where}: GGUF tokenizer.ggml.merges`);
  const pre = kv.get("tokenizer.ggml.pre") ?? "default";
  const regex = typeof pre === "string" ? PRE_REGEX[pre] : undefined;
  if (regex === undefined) {
    throw new FormatError(
      where,
      `GGUF tokenizer.ggml.pre ${JSON.stringify(pre)} is not supported (supported: ${
        Object.keys(PRE_REGEX).join(", ")
      })`,
    );
  }
  const types = kv.get("tokenizer.ggml.token_type");
  const vocab: Record<string, number> = {};
  const added: Record<string, unknown>[] = [];
  (tokens as string[]).forEach((t, id) => {
    vocab[t] = id;
    if (types instanceof Int32Array && SPECIAL_TYPES.has(types[id])) {
      added.push({
        id,
        content: t,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      });
    }
  });
  const id = (key: string): number | undefined => {
    const v = specialId(kv, key, tokens.length, where);
    return v < 0 ? undefined : v;
  };
  const json = {
    version: "1.0",
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: pre === "llama-bpe" || pre === "llama3",
      vocab,
      merges,
    },
  };
  const bosId = id("tokenizer.ggml.bos_token_id"), eosId = id("tokenizer.ggml.eos_token_id");
  try {
    return hfTokenizerFromJson(json, { clean_up_tokenization_spaces: false }, { bosId, eosId });
  } catch (e) {
    throw new FormatError(where, `GGUF byte-level BPE tokenizer: ${(e as Error).message}`);
  }
}
