/**
 * A GGUF SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`, as in stories260K) as a Hugging Face
 * `tokenizer.json` + `tokenizer_config.json`, so `AutoTokenizer` and transformers.js read a GGUF-sourced output.
 * The encoding is the one `GgufSentencePieceTokenizer` (src/tokenize/sentencepiece.ts) does: a "▁" prepended (when
 * `add_space_prefix`), spaces → "▁", characters merged by the score of the merged piece, leftovers as
 * `<0xNN>` bytes. As a BPE tokenizer.json that is: a `Prepend` + `Replace` normalizer, no pre-tokenizer, every
 * split `(a, b)` of a piece whose parts are pieces as a merge ranked by the piece's score (highest first), and
 * `byte_fallback`. This is transformers' own LlamaConverter layout; it equals the score-ordered encoding as
 * long as no two different merges share a score and meet at one place, which the id-exactness test checks on
 * the bundled text.
 *
 * @example
 * ```ts
 * import { ggufToHfTokenizer } from "./gguf_to_hf.ts";
 * const kv = new Map<string, unknown>([
 *   ["tokenizer.ggml.model", "llama"],
 *   ["tokenizer.ggml.tokens", ["<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab", "▁ab"]],
 *   ["tokenizer.ggml.scores", new Float32Array([0, 0, 0, -1, -2, -3, -4, -5, -6])],
 *   ["tokenizer.ggml.token_type", new Int32Array([2, 3, 3, 1, 1, 1, 1, 1, 1])],
 *   ["tokenizer.ggml.bos_token_id", 1],
 *   ["tokenizer.ggml.eos_token_id", 2],
 * ]);
 * const { tokenizerJson } = ggufToHfTokenizer(kv as never);
 * console.log((tokenizerJson.model as { merges: string[][] }).merges); // [ [ "▁", "a" ], [ "a", "b" ], [ "▁", "ab" ], [ "▁a", "b" ] ]
 * ```
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import type { GgufValue } from "../io/gguf.ts";

const SPACE = "\u2581"; // ▁

/** GGUF token types (llama.cpp's llama_token_type) that matter here. */
const NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4;

/** A Hugging Face tokenizer as the two JSON files that describe it. */
export interface HfTokenizerFiles {
  /** `tokenizer.json` (tokenizers' serialisation). */
  tokenizerJson: Record<string, unknown>;
  /** `tokenizer_config.json` (special tokens, tokenizer class). */
  tokenizerConfig: Record<string, unknown>;
}

/**
 * Build `tokenizer.json` and `tokenizer_config.json` from GGUF tokenizer metadata. Throws an OptionError naming
 * the problem for a vocabulary that is not SentencePiece-style ("gpt2" and others: not converted), for
 * missing or mis-sized tokens/scores, and for a piece that appears twice (a tokenizer.json vocabulary maps each
 * piece to one id).
 */
export function ggufToHfTokenizer(kv: ReadonlyMap<string, GgufValue>): HfTokenizerFiles {
  const what = "write tokenizer.json from GGUF metadata";
  const model = kv.get("tokenizer.ggml.model");
  if (model !== "llama") {
    throw new OptionError(
      `${what}: tokenizer.ggml.model ${JSON.stringify(model)} is not supported (only "llama", SentencePiece)`,
    );
  }
  const tokens = kv.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== "string")) {
    throw new OptionError(`${what}: tokenizer.ggml.tokens is missing or not an array of strings`);
  }
  const pieces = tokens as string[], n = pieces.length;
  const scores = kv.get("tokenizer.ggml.scores");
  if (!(scores instanceof Float32Array) || scores.length !== n) {
    throw new OptionError(`${what}: tokenizer.ggml.scores must be ${n} float32 values`);
  }
  const rawTypes = kv.get("tokenizer.ggml.token_type");
  const types = rawTypes instanceof Int32Array && rawTypes.length === n
    ? rawTypes
    : new Int32Array(n).fill(NORMAL);
  const id = (key: string): number => {
    const v = kv.get(key);
    return typeof v === "number" && v >= 0 && v < n ? v : -1;
  };
  const bos = id("tokenizer.ggml.bos_token_id"), eos = id("tokenizer.ggml.eos_token_id");
  let unk = id("tokenizer.ggml.unknown_token_id");
  if (unk < 0) unk = types.indexOf(UNKNOWN);
  const prefix = kv.get("tokenizer.ggml.add_space_prefix") !== false;

  const vocab: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const p = pieces[i];
    if (Object.hasOwn(vocab, p)) {
      throw new OptionError(`${what}: piece ${JSON.stringify(p)} appears at ids ${vocab[p]} and ${i}`);
    }
    vocab[p] = i;
  }
  const mergeable = (p: string) => Object.hasOwn(vocab, p) && isMergeable(types[vocab[p]]);
  const merges: { pair: [string, string]; score: number; id: number }[] = [];
  for (let i = 0; i < n; i++) {
    if (!isMergeable(types[i])) continue;
    const chars = [...pieces[i]];
    for (let k = 1; k < chars.length; k++) {
      const a = chars.slice(0, k).join(""), b = chars.slice(k).join("");
      if (mergeable(a) && mergeable(b)) merges.push({ pair: [a, b], score: scores[i], id: i });
    }
  }
  merges.sort((x, y) => y.score - x.score || x.id - y.id || x.pair[0].length - y.pair[0].length);

  const special = [...new Set([unk, bos, eos].filter((i) => i >= 0))].sort((a, b) => a - b);
  for (let i = 0; i < n; i++) if (types[i] === CONTROL && !special.includes(i)) special.push(i);
  const tokenizerJson: Record<string, unknown> = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: special.map((i) => ({
      id: i,
      content: pieces[i],
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: {
      type: "Sequence",
      normalizers: [
        ...(prefix ? [{ type: "Prepend", prepend: SPACE }] : []),
        { type: "Replace", pattern: { String: " " }, content: SPACE },
      ],
    },
    pre_tokenizer: null,
    post_processor: bos >= 0 ? bosTemplate(pieces[bos], bos) : null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: SPACE }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        ...(prefix ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: unk >= 0 ? pieces[unk] : null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: merges.map((m) => m.pair),
    },
  };
  const tokenizerConfig: Record<string, unknown> = {
    tokenizer_class: "PreTrainedTokenizerFast",
    add_bos_token: bos >= 0,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    ...(bos >= 0 ? { bos_token: pieces[bos] } : {}),
    ...(eos >= 0 ? { eos_token: pieces[eos] } : {}),
    ...(unk >= 0 ? { unk_token: pieces[unk] } : {}),
  };
  return { tokenizerJson, tokenizerConfig };
}

/** Pieces the SentencePiece encoder merges into (the others are control, unknown, unused or byte tokens). */
function isMergeable(type: number): boolean {
  return type === NORMAL || type === USER_DEFINED;
}

/** A post-processor that puts BOS first when special tokens are asked for, as LLaMA's tokenizer does. */
function bosTemplate(piece: string, id: number): Record<string, unknown> {
  const bos = { SpecialToken: { id: piece, type_id: 0 } };
  return {
    type: "TemplateProcessing",
    single: [bos, { Sequence: { id: "A", type_id: 0 } }],
    pair: [bos, { Sequence: { id: "A", type_id: 0 } }, bos, { Sequence: { id: "B", type_id: 1 } }],
    special_tokens: { [piece]: { id: piece, ids: [id], tokens: [piece] } },
  };
}
