/**
 * The one tokenizer interface every model speaks, whatever the vocabulary's origin (tokenizer.json or GGUF).
 *
 * @module
 */

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Put one BOS id first (default false: the caller decides where BOS goes). */
  bos?: boolean;
}

/** Text ↔ token ids. */
export interface Tokenizer {
  /** Token ids of `text`; no special tokens are added except BOS when asked. */
  encode(text: string, opts?: EncodeOptions): Int32Array;
  /** Text of `ids`; special tokens (BOS, EOS) are left out. */
  decode(ids: ArrayLike<number>): string;
  /** Beginning-of-sequence id, or -1. */
  readonly bosId: number;
  /** End-of-sequence id, or -1. */
  readonly eosId: number;
  /** Number of ids (the largest id + 1). */
  readonly vocabSize: number;
}
