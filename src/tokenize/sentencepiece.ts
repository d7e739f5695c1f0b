/**
 * SentencePiece-style BPE from GGUF metadata (`tokenizer.ggml.model = "llama"`): the vocabulary of pieces with
 * scores, encoded the way llama.cpp and llama2.c do it. A space is prepended, spaces become "▁", the text is cut
 * into characters, and the adjacent pair whose merged piece exists with the highest score is merged again and
 * again (ties: leftmost first); a remaining piece that is not in the vocabulary becomes its UTF-8 bytes as
 * `<0xNN>` tokens. Decoding inverts this exactly, except that a literal "▁" in the text comes back as a space
 * (as in SentencePiece).
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import type { GgufValue } from "../io/gguf.ts";
import type { EncodeOptions, Tokenizer } from "./tokenizer.ts";

/** GGUF token types (llama.cpp's llama_token_type). */
const enum TokenType {
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
}

const SPACE = "\u2581"; // ▁

/**
 * A special token id from GGUF metadata: absent, or llama.cpp's "none" (a negative or 2^32 − 1 value), is -1;
 * an id past the vocabulary of `n` tokens throws a FormatError (it would silently mean "no BOS").
 */
export function specialId(kv: ReadonlyMap<string, GgufValue>, key: string, n: number, where: string): number {
  const v = kv.get(key);
  if (typeof v !== "number" || v < 0 || v >= 0xffffffff) return -1;
  if (!Number.isInteger(v) || v >= n) {
    throw new FormatError(where, `GGUF ${key} is ${v}, outside the vocabulary of ${n} tokens`);
  }
  return v;
}

interface Symbol {
  text: string;
  prev: number;
  next: number;
  /** Set to -1 once merged away; a queued bigram whose sides changed is stale. */
  len: number;
}

interface Bigram {
  left: number;
  right: number;
  score: number;
  /** Combined length when queued: a different length means a side changed since. */
  size: number;
}

/** Max-heap on score, ties to the smaller left index. */
class BigramQueue {
  private h: Bigram[] = [];
  get size(): number {
    return this.h.length;
  }
  private better(a: Bigram, b: Bigram): boolean {
    return a.score > b.score || (a.score === b.score && a.left < b.left);
  }
  push(b: Bigram): void {
    const h = this.h;
    h.push(b);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.better(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }
  pop(): Bigram {
    const h = this.h, top = h[0], last = h.pop()!;
    if (h.length) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && this.better(h[l], h[m])) m = l;
        if (r < h.length && this.better(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

/** A SentencePiece-style tokenizer built from GGUF `tokenizer.ggml.*` metadata. */
export class GgufSentencePieceTokenizer implements Tokenizer {
  /** Piece of each id. */
  readonly pieces: readonly string[];
  /** Score of each id (higher merges first). */
  readonly scores: Float32Array;
  /** GGUF token type of each id (1 normal, 3 control, 6 byte, …). */
  readonly types: Int32Array;
  /** Beginning-of-sequence id, or -1. */
  readonly bosId: number;
  /** End-of-sequence id, or -1. */
  readonly eosId: number;
  /** Id of `<unk>`, or -1. */
  readonly unkId: number;
  /** Prepend a space before encoding (SentencePiece's dummy prefix). */
  readonly addSpacePrefix: boolean;
  private readonly mergeable = new Map<string, number>();
  private readonly byteIds = new Int32Array(256).fill(-1);

  /**
   * Build the tokenizer from GGUF metadata; throws a FormatError for a vocabulary that is not SentencePiece-style.
   *
   * @param kv GGUF metadata with `tokenizer.ggml.tokens`, `.scores`, optional `.token_type`, `.bos_token_id`,
   * `.eos_token_id`, `.unknown_token_id`, `.add_space_prefix`
   * @param where file name for messages
   */
  constructor(kv: ReadonlyMap<string, GgufValue>, where = "model.gguf") {
    const model = kv.get("tokenizer.ggml.model");
    if (model !== "llama") {
      throw new FormatError(
        where,
        `GGUF tokenizer.ggml.model is ${JSON.stringify(model)}; only "llama" (SentencePiece) is read`,
      );
    }
    const tokens = kv.get("tokenizer.ggml.tokens");
    if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== "string")) {
      throw new FormatError(where, "GGUF tokenizer.ggml.tokens is missing or not an array of strings");
    }
    const n = tokens.length;
    const scores = kv.get("tokenizer.ggml.scores");
    if (!(scores instanceof Float32Array) || scores.length !== n) {
      throw new FormatError(where, `GGUF tokenizer.ggml.scores must be ${n} float32 values`);
    }
    const types = kv.get("tokenizer.ggml.token_type");
    if (types !== undefined && (!(types instanceof Int32Array) || types.length !== n)) {
      throw new FormatError(where, `GGUF tokenizer.ggml.token_type must be ${n} int32 values`);
    }
    this.pieces = tokens as string[];
    this.scores = scores;
    this.types = (types as Int32Array | undefined) ?? new Int32Array(n).fill(TokenType.Normal);
    const id = (key: string): number => specialId(kv, key, n, where);
    this.bosId = id("tokenizer.ggml.bos_token_id");
    this.eosId = id("tokenizer.ggml.eos_token_id");
    this.unkId = id("tokenizer.ggml.unknown_token_id");
    this.addSpacePrefix = kv.get("tokenizer.ggml.add_space_prefix") !== false;
    for (let i = 0; i < n; i++) {
      const t = this.types[i], p = this.pieces[i];
      if (t === TokenType.Byte) {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(p);
        if (m) this.byteIds[parseInt(m[1], 16)] = i;
      } else if (t === TokenType.Normal || t === TokenType.UserDefined) {
        if (!this.mergeable.has(p)) this.mergeable.set(p, i);
      }
    }
  }

  /** Number of pieces. */
  get vocabSize(): number {
    return this.pieces.length;
  }

  /** Token ids of `text` (score-ordered merges, byte fallback), with one BOS first if `bos`. */
  encode(text: string, opts: EncodeOptions = {}): Int32Array {
    const out: number[] = [];
    if (opts.bos && this.bosId >= 0) out.push(this.bosId);
    if (text.length === 0) return Int32Array.from(out);
    const s = (this.addSpacePrefix ? " " + text : text).replaceAll(" ", SPACE);
    const sym: Symbol[] = [];
    for (const ch of s) sym.push({ text: ch, prev: sym.length - 1, next: sym.length + 1, len: ch.length });
    sym[sym.length - 1].next = -1;
    const queue = new BigramQueue();
    const tryAdd = (left: number, right: number) => {
      if (left < 0 || right < 0) return;
      const merged = sym[left].text + sym[right].text;
      const id = this.mergeable.get(merged);
      if (id !== undefined) queue.push({ left, right, score: this.scores[id], size: merged.length });
    };
    for (let i = 1; i < sym.length; i++) tryAdd(i - 1, i);
    while (queue.size) {
      const b = queue.pop();
      const l = sym[b.left], r = sym[b.right];
      if (l.len <= 0 || r.len <= 0 || l.len + r.len !== b.size || l.next !== b.right) continue; // stale
      l.text += r.text;
      l.len += r.len;
      r.len = -1;
      l.next = r.next;
      if (r.next >= 0) sym[r.next].prev = b.left;
      tryAdd(l.prev, b.left);
      tryAdd(b.left, l.next);
    }
    const enc = new TextEncoder();
    for (let i = 0; i >= 0; i = sym[i].next) {
      const id = this.mergeable.get(sym[i].text);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      // unknown character: its UTF-8 bytes (merged pieces always exist, so only single characters get here)
      for (const byte of enc.encode(sym[i].text)) {
        const bid = this.byteIds[byte];
        out.push(bid >= 0 ? bid : this.unkId >= 0 ? this.unkId : 0);
      }
    }
    return Int32Array.from(out);
  }

  /** Text of `ids`: "▁" back to spaces, byte tokens reassembled as UTF-8, control tokens dropped; the leading
   * space of the first piece (the dummy prefix) is removed. */
  decode(ids: ArrayLike<number>): string {
    const bytes: number[] = [];
    const enc = new TextEncoder();
    let first = true;
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k];
      if (!(id >= 0 && id < this.pieces.length)) continue;
      const t = this.types[id];
      if (t === TokenType.Control || t === TokenType.Unknown || t === TokenType.Unused) continue;
      if (t === TokenType.Byte) {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(this.pieces[id]);
        if (m) bytes.push(parseInt(m[1], 16));
      } else {
        let p = this.pieces[id].replaceAll(SPACE, " ");
        if (first && this.addSpacePrefix && p.startsWith(" ")) p = p.slice(1);
        for (const b of enc.encode(p)) bytes.push(b);
      }
      first = false;
    }
    return new TextDecoder().decode(new Uint8Array(bytes));
  }
}

/**
 * Rebuild a {@link GgufSentencePieceTokenizer} from a JSON object of GGUF `tokenizer.*` keys (as written beside
 * a compressed GGUF-origin model in `tokenizer_gguf.json`): arrays come back as plain number arrays and are
 * converted to the typed arrays the GGUF metadata holds.
 */
export function sentencePieceFromJson(
  obj: Record<string, unknown>,
  where = "tokenizer_gguf.json",
): GgufSentencePieceTokenizer {
  return new GgufSentencePieceTokenizer(ggufKvFromJson(obj), where);
}

/**
 * GGUF `tokenizer.*` metadata from its JSON copy (`tokenizer_gguf.json`): the scores and token types, which
 * JSON holds as number arrays, restored to the typed arrays a GGUF file gives; every other value as it is.
 */
export function ggufKvFromJson(obj: Record<string, unknown>): Map<string, GgufValue> {
  const kv = new Map<string, GgufValue>();
  for (const [k, v] of Object.entries(obj)) {
    if (k === "tokenizer.ggml.scores" && Array.isArray(v)) kv.set(k, Float32Array.from(v as number[]));
    else if (k === "tokenizer.ggml.token_type" && Array.isArray(v)) kv.set(k, Int32Array.from(v as number[]));
    else kv.set(k, v as GgufValue);
  }
  return kv;
}
