/**
 * The tokenizer of a GGUF file, whichever kind its metadata holds: SentencePiece-style ("llama") or
 * byte-level BPE ("gpt2").
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import type { GgufValue } from "../io/gguf.ts";
import { ggufBpeTokenizer } from "./gguf_bpe.ts";
import { ggufKvFromJson, GgufSentencePieceTokenizer } from "./sentencepiece.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Build the tokenizer `tokenizer.ggml.model` names; a FormatError for a kind not read here. */
export function tokenizerFromGguf(kv: ReadonlyMap<string, GgufValue>, where = "model.gguf"): Tokenizer {
  const kind = kv.get("tokenizer.ggml.model");
  if (kind === "llama") return new GgufSentencePieceTokenizer(kv, where);
  if (kind === "gpt2") return ggufBpeTokenizer(kv, where);
  throw new FormatError(
    where,
    `GGUF tokenizer.ggml.model ${JSON.stringify(kind)} is not supported (supported: "llama", "gpt2")`,
  );
}

/**
 * The tokenizer of a JSON copy of GGUF `tokenizer.*` keys (`tokenizer_gguf.json`, kept beside a compressed
 * GGUF-origin model): scores and token types come back as number arrays and are restored to typed arrays.
 */
export function tokenizerFromGgufJson(
  obj: Record<string, unknown>,
  where = "tokenizer_gguf.json",
): Tokenizer {
  return tokenizerFromGguf(ggufKvFromJson(obj), where);
}
