/**
 * The tokenizer room's public API: one {@link Tokenizer} interface, Hugging Face tokenizer.json tokenizers and
 * GGUF SentencePiece-style vocabularies.
 *
 * @module
 */
export type { EncodeOptions, Tokenizer } from "./tokenizer.ts";
export { type HfTokenizerDefaults, hfTokenizerFromJson, loadHfTokenizer } from "./hf.ts";
export { GgufSentencePieceTokenizer, sentencePieceFromJson } from "./sentencepiece.ts";
export { ggufBpeTokenizer } from "./gguf_bpe.ts";
export { tokenizerFromGguf, tokenizerFromGgufJson } from "./from_gguf.ts";
export { checkBpeMerges } from "./bpe_merges.ts";
// Types the exported functions name, re-exported so this entry point documents them (deno doc --lint).
export type { GgufNumberArray, GgufValue } from "../io/gguf.ts";
