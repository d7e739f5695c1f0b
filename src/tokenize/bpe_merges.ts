/**
 * Validation of a byte-level BPE merge list against its vocabulary, shared by tokenizer.json and GGUF
 * vocabularies: a merge that is not two tokens, or names a token the vocabulary lacks, would be skipped or
 * misread without a word and the model would see different ids than it was trained on.
 *
 * @module
 */
import { FormatError } from "../errors.ts";

/**
 * Throw a FormatError naming `where`, the merge's index and the problem unless every merge is two tokens
 * (`"a b"`, or `["a", "b"]` as newer tokenizer.json files write them) that are in `vocab`, as is their
 * concatenation.
 *
 * @example
 * ```ts
 * import { checkBpeMerges } from "./bpe_merges.ts";
 * checkBpeMerges(["a b", "ab c"], new Set(["a", "b", "c", "ab", "abc"]), "tokenizer.json"); // fine
 * ```
 */
export function checkBpeMerges(merges: readonly unknown[], vocab: ReadonlySet<string>, where: string): void {
  for (let i = 0; i < merges.length; i++) {
    const m = merges[i];
    let pair: unknown[];
    if (typeof m === "string") pair = m.split(" ");
    else if (Array.isArray(m)) pair = m;
    else pair = [];
    const show = JSON.stringify(m)?.slice(0, 80);
    if (pair.length !== 2 || pair.some((t) => typeof t !== "string" || t === "")) {
      throw new FormatError(where, `BPE merge ${i} is ${show}: expected two tokens ("a b")`);
    }
    const [a, b] = pair as [string, string];
    for (const t of [a, b, a + b]) {
      if (!vocab.has(t)) {
        throw new FormatError(
          where,
          `BPE merge ${i} (${show}) ${t === a + b ? "makes" : "names"} the token ${
            JSON.stringify(t)
          }, which is not in the vocabulary`,
        );
      }
    }
  }
}
