/**
 * Calibration and evaluation text checked before it is tokenized: binary data (a model file, an archive,
 * invalid UTF-8 in quantity) would otherwise calibrate or evaluate on garbage without a word.
 *
 * @module
 */
import { FormatError } from "../errors.ts";
import { checkRegularFile } from "../io/text_file.ts";

/** Largest calibration or evaluation text read from a file. */
export const MAX_CALIBRATION_TEXT_BYTES = 1 << 30;

/**
 * Throw a FormatError naming `what` (a path, or "calibration.text") unless `text` is text: no NUL characters,
 * U+FFFD (what invalid UTF-8 decodes to) and other control characters (except tab, line and page breaks) in
 * at most 0.1 % of the characters (and at least 8 are tolerated: a stray Latin-1 byte is not binary), and
 * something other than white space.
 *
 * @example
 * ```ts
 * import { checkText } from "./text.ts";
 * checkText("Once upon a time", "calibration.text"); // fine
 * // checkText("GGUF\u0003\u0000…", "model.gguf") throws: a GGUF model file, not text
 * ```
 */
export function checkText(text: string, what: string): void {
  if (typeof text !== "string") throw new FormatError(what, `expected text, got ${typeof text}`);
  if (text.startsWith("GGUF")) throw new FormatError(what, "this is a GGUF model file, not text");
  const nul = text.indexOf("\0");
  if (nul >= 0) {
    throw new FormatError(what, `holds a NUL character at offset ${nul}: binary data, not text`);
  }
  let bad = 0, firstBad = -1;
  const allowed = Math.max(8, Math.floor(text.length / 1000));
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0xfffd || (c < 32 && c !== 9 && c !== 10 && c !== 12 && c !== 13) || c === 127) {
      if (firstBad < 0) firstBad = i;
      if (++bad > allowed) {
        throw new FormatError(
          what,
          `more than ${allowed} invalid UTF-8 sequences or control characters (the first at offset ${firstBad}): ` +
            `binary data, not text`,
        );
      }
    }
  }
  if (text.trim() === "") throw new FormatError(what, "holds no text (empty or only white space)");
}

/**
 * Read a calibration or evaluation text file: a regular file (not a FIFO) of at most
 * {@link MAX_CALIBRATION_TEXT_BYTES}, decoded as UTF-8 and passed through {@link checkText}. Errors name the
 * path.
 *
 * @example
 * ```ts ignore
 * import { readCalibrationText } from "./text.ts";
 * const text = await readCalibrationText("data/wiki.train.txt");
 * ```
 */
export async function readCalibrationText(path: string): Promise<string> {
  const { readFile, stat } = await import("node:fs/promises");
  const what = "read calibration text";
  const st = await stat(path).catch((e: Error) => {
    throw new FormatError(path, `${what}: cannot read the file (${e.message})`);
  });
  checkRegularFile(path, st, what);
  if (st.size > MAX_CALIBRATION_TEXT_BYTES) {
    throw new FormatError(
      path,
      `${what}: ${st.size} bytes, more than the ${MAX_CALIBRATION_TEXT_BYTES}-byte limit`,
    );
  }
  const bytes = await readFile(path).catch((e: Error) => {
    throw new FormatError(path, `${what}: cannot read the file (${e.message})`);
  });
  const text = new TextDecoder("utf-8").decode(bytes); // invalid bytes → U+FFFD, counted by checkText
  checkText(text, path);
  return text;
}
