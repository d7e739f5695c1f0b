/**
 * The evaluation protocol the method benchmarks share (bench/methods.ts, bench/soco.ts, bench/fwsvd.ts), so
 * that their figures are comparable by construction:
 * - stories260K (bundled GGUF): the TinyStories validation text (../shared's, else the bundled copy) tokenized
 *   once with one BOS; calibration windows from its first half, evaluation on its second half in windows of
 *   512; 32 calibration windows of 256.
 * - tinylm-brown (../shared, methods.md "Peers"): calibration from brown-calib.txt, 64 windows of 256;
 *   evaluation on the first 20,000 tokens of brown-valid.txt in windows of 256, whole windows only (19,968
 *   tokens, as the peers' evaluator drops the partial last window).
 * Also the benchmarks' flags (`--name value`) and one child process per job, so that each job's time and
 * peak RSS are its own.
 *
 * @example
 * ```ts ignore
 * import { protocolData } from "./protocol.ts";
 * const d = await protocolData("stories");
 * console.log(d.path, d.calib.length, d.evalIds.length, d.window, d.samples);
 * ```
 *
 * @module
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import type { Tokenizer } from "../src/tokenize/tokenizer.ts";

/** The repository's root folder. */
export const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** The value of flag `--name`, or `fallback` when it is not given. */
export function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

/** The shared material (models, texts): `--shared DIR`, default ../shared beside the checkout. */
export const SHARED = arg("shared", join(ROOT, "../shared"));

/** The protocol's models: the bundled stories260K and ../shared's tinylm-brown. */
export type ProtocolModel = "stories" | "brown";

/** Tokens and settings of one model's protocol. */
export interface ProtocolTokens {
  /** Calibration token ids (windows are cut from these). */
  calib: Int32Array;
  /** Evaluation token ids. */
  evalIds: Int32Array;
  /** Evaluation window, tokens. */
  window: number;
  /** Calibration windows of 256 tokens (SVD-LLM's protocol; ASVD's is 32 on both models). */
  samples: number;
}

/** Path of the protocol's `model`: the bundled GGUF file or ../shared's Hugging Face folder. */
export function modelPath(model: ProtocolModel): string {
  return model === "stories"
    ? join(ROOT, "models/stories260K/stories260K.gguf")
    : join(SHARED, "models/tinylm-brown");
}

/** The calibration and evaluation tokens of `model`'s protocol, tokenized with its `tokenizer`. */
export async function protocolTokens(model: ProtocolModel, tokenizer: Tokenizer): Promise<ProtocolTokens> {
  if (model === "stories") {
    const shared = join(SHARED, "data/tinystories-valid.part1.txt");
    const text = await readFile(
      existsSync(shared) ? shared : join(ROOT, "data/tinystories-valid.part1.txt"),
      "utf8",
    );
    const ids = tokenizer.encode(text, { bos: true });
    const half = Math.floor(ids.length / 2);
    return { calib: ids.slice(0, half), evalIds: ids.slice(half), window: 512, samples: 32 };
  }
  const calib = tokenizer.encode(await readFile(join(SHARED, "data/brown-calib.txt"), "utf8"), { bos: true });
  const valid = tokenizer.encode(await readFile(join(SHARED, "data/brown-valid.txt"), "utf8"), { bos: true });
  // The peers' evaluator keeps whole windows only: 78 × 256 = 19,968 of the first 20,000 tokens.
  return { calib, evalIds: valid.slice(0, Math.floor(20000 / 256) * 256), window: 256, samples: 64 };
}

/** `model`'s path and protocol tokens (the model is loaded for its tokenizer, then closed). */
export async function protocolData(model: ProtocolModel): Promise<ProtocolTokens & { path: string }> {
  const { loadModel } = await import("../src/model/load.ts");
  const path = modelPath(model);
  const m = await loadModel(path);
  try {
    return { path, ...await protocolTokens(model, m.tokenizer) };
  } finally {
    await m.close();
  }
}

/**
 * Run `deno run -A ...argv` from the root in a child process and resolve with the JSON of its last stdout
 * line; its stderr is echoed live when `echo` (default: with `--verbose`), and its tail is in the error when
 * it fails.
 */
export function childJson<T>(argv: string[], echo = process.argv.includes("--verbose")): Promise<T> {
  return new Promise((resolve, reject) => {
    const p = spawn(join(ROOT, "node_modules/.bin/deno"), ["run", "-A", ...argv], {
      cwd: ROOT,
      env: { ...process.env, NO_COLOR: "1" },
    });
    let out = "", err = "";
    p.stdout.on("data", (b) => (out += b));
    p.stderr.on("data", (b) => {
      err += b;
      if (echo) process.stderr.write(b);
    });
    p.on("close", (code) => {
      const last = out.trim().split("\n").at(-1) ?? "";
      if (code === 0 && last.startsWith("{")) resolve(JSON.parse(last));
      else reject(new Error(`${argv.slice(1).join(" ")} failed (${code}): ${err.slice(-2000)}`));
    });
  });
}
