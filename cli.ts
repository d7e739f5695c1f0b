/**
 * The command line: a thin door onto the library (no logic of its own).
 *
 * ```sh
 * deno run -A cli.ts demo
 * deno run -A cli.ts eval models/stories260K/stories260K.gguf --text data/tinystories-valid.part1.txt
 * deno run -A cli.ts generate models/stories260K/stories260K.gguf --prompt "Once upon a time"
 * deno run -A cli.ts compress --method svdllm --ratio 0.2 --calib data/tinystories-valid.part1.txt IN OUT
 * deno run -A cli.ts inspect OUT
 * deno run -A cli.ts merge OUT DENSE_OUT
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { readFile } from "node:fs/promises";
import { rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { formatDuration, progressBar, type ProgressEvent } from "./src/cli/progress.ts";
import {
  formatBytes,
  formatCompressReport,
  formatInspectReport,
  inspectModel,
  table,
} from "./src/cli/report.ts";
import { compress, type CompressOptions, type CompressProgress } from "./src/pipeline/compress.ts";
import { merge } from "./src/pipeline/merge.ts";
import { type LoadedModel, loadModel } from "./src/model/load.ts";
import { perplexity } from "./src/eval/perplexity.ts";
import { generate } from "./src/eval/generate.ts";
import { initLinalg, linalgInfo } from "./src/linalg/backend.ts";
import type { Ratio } from "./src/methods/ratio.ts";
import { pendingTempPaths } from "./src/io/atomic_write.ts";

const USAGE = `svd-llm — compress LLMs by low-rank factorisation

usage:
  cli.ts demo                                   the bundled stories260K: size, perplexity, generation, compression
  cli.ts eval MODEL [--text FILE] [--window N] [--max-tokens N]
  cli.ts generate MODEL [--prompt TEXT] [--tokens N]
  cli.ts compress IN OUT --method svd|asvd|svdllm (--ratio R | --kept P) [--calib FILE]
                  [--samples N] [--seqlen L] [--seed S] [--update] [--original-activations]
                  [--alpha A] [--allocation uniform|sensitivity|sweep|global] [--kv-cache] [--dtype F32|F16|BF16]
                  [--force] [--overwrite]
  cli.ts inspect MODEL                          per-layer shapes, ranks and singular-value spectra
  cli.ts merge IN OUT                           low-rank factors back to dense weights

Every command takes --threads N|auto (numeric worker threads; default auto = the machine's cores).
MODEL/IN is a .gguf file or a Hugging Face folder (config.json + model.safetensors + tokenizer.json).
--ratio is the fraction of each linear's parameters REMOVED (SVD-LLM's convention, 0.2 keeps 80 %);
--kept is the fraction KEPT (ASVD's parameter ratio). Give exactly one.`;

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const DEFAULT_MODEL = here("./models/stories260K/stories260K.gguf");
const DEFAULT_TEXT = here("./data/tinystories-valid.part1.txt");
/** stories260K was trained on 512-token contexts (llama2.c); its GGUF metadata says 2048, so say it explicitly. */
const DEMO_WINDOW = 512;

const print = (s = "") => process.stdout.write(s + "\n");
const bar = progressBar();
const onProgress = (e: ProgressEvent) => bar(e);
const onCompressProgress = (e: CompressProgress) =>
  bar({
    stage: e.block === undefined ? e.stage : `${e.stage} block ${e.block}`,
    done: e.done,
    total: e.total,
  });

function num(v: string | undefined, name: string, fallback?: number): number | undefined {
  if (v === undefined) return fallback;
  const x = v.trim() === "" ? NaN : Number(v); // Number("") is 0
  if (!Number.isFinite(x)) throw new Error(`--${name}: expected a number, got ${JSON.stringify(v)}`);
  return x;
}

/** A whole-number option, at least `min`. */
function int(v: string | undefined, name: string, min: number, fallback?: number): number | undefined {
  const x = num(v, name, fallback);
  if (x !== undefined && (!Number.isInteger(x) || x < min)) {
    throw new Error(`--${name}: expected a whole number ≥ ${min}, got ${JSON.stringify(v)}`);
  }
  return x;
}

/** The text of the file given to `--option`, with the option and the path named if it cannot be read or is empty. */
async function readText(path: string, option: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    const err = e as { code?: string; message: string };
    const why = err.code === "EISDIR" ? "it is a folder, not a text file" : err.message;
    throw new Error(`--${option} ${path}: cannot read the file (${why})`);
  }
  if (text.trim() === "") throw new Error(`--${option} ${path}: the file is empty`);
  return text;
}

/** Refuse more positional arguments than a command takes (a mistyped option value would be ignored). */
function atMost(cmd: string, positionals: string[], n: number): void {
  if (positionals.length > n) {
    throw new Error(
      `${cmd}: unexpected argument ${JSON.stringify(positionals[n])} (takes at most ${n} path${
        n > 1 ? "s" : ""
      })`,
    );
  }
}

async function cmdEval(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { text: { type: "string" }, window: { type: "string" }, "max-tokens": { type: "string" } },
  });
  atMost("eval", positionals, 1);
  const path = positionals[0] ?? DEFAULT_MODEL;
  const max = int(values["max-tokens"], "max-tokens", 2);
  const windowOpt = int(values.window, "window", 2);
  const text = await readText(values.text ?? DEFAULT_TEXT, "text");
  const model = await loadModel(path);
  try {
    let ids = model.tokenizer.encode(text, { bos: true });
    if (max !== undefined) ids = ids.subarray(0, max);
    const window = windowOpt ?? Math.min(model.spec.maxPositions, 2048);
    const t0 = performance.now();
    const r = await perplexity(model, ids, { window, onProgress });
    print(
      `${model.name}: ${r.tokens} tokens in ${r.windows} windows of ${window}: mean NLL ${
        r.meanNll.toFixed(6)
      }, ` +
        `ppl ${r.ppl.toFixed(4)}${r.nonFinite ? ` (${r.nonFinite} non-finite positions!)` : ""} ` +
        `[${formatDuration((performance.now() - t0) / 1000)}]`,
    );
  } finally {
    await model.close();
  }
}

/** Greedy continuation, decoded together with the prompt so the tokenizer places spaces right. */
async function continueText(model: LoadedModel, prompt: string, tokens: number): Promise<string> {
  const promptIds = model.tokenizer.encode(prompt, { bos: true });
  const ids = await generate(model, promptIds, tokens);
  const all = new Int32Array(promptIds.length + ids.length);
  all.set(promptIds);
  all.set(ids, promptIds.length);
  return model.tokenizer.decode(all);
}

async function cmdGenerate(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { prompt: { type: "string" }, tokens: { type: "string" } },
  });
  atMost("generate", positionals, 1);
  const tokens = int(values.tokens, "tokens", 1, 40)!;
  const model = await loadModel(positionals[0] ?? DEFAULT_MODEL);
  try {
    const prompt = values.prompt ?? "Once upon a time";
    print(await continueText(model, prompt, tokens));
  } finally {
    await model.close();
  }
}

function ratioFrom(values: { ratio?: string; kept?: string }): Ratio {
  if ((values.ratio === undefined) === (values.kept === undefined)) {
    throw new Error("compress: give exactly one of --ratio (fraction removed) or --kept (fraction kept)");
  }
  return values.ratio !== undefined
    ? { removed: num(values.ratio, "ratio")! }
    : { kept: num(values.kept, "kept")! };
}

async function cmdCompress(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      method: { type: "string", default: "svdllm" },
      ratio: { type: "string" },
      kept: { type: "string" },
      calib: { type: "string" },
      samples: { type: "string" },
      seqlen: { type: "string" },
      seed: { type: "string" },
      update: { type: "boolean" },
      "original-activations": { type: "boolean" },
      alpha: { type: "string" },
      allocation: { type: "string" },
      "kv-cache": { type: "boolean" },
      dtype: { type: "string" },
      force: { type: "boolean" },
      overwrite: { type: "boolean" },
    },
  });
  if (positionals.length !== 2) throw new Error("compress: expected two paths, IN and OUT\n\n" + USAGE);
  const [input, output] = positionals;
  const opts: CompressOptions = {
    method: values.method as CompressOptions["method"],
    ratio: ratioFrom(values),
    calibration: values.calib
      ? {
        text: await readText(values.calib, "calib"),
        samples: int(values.samples, "samples", 1),
        seqlen: int(values.seqlen, "seqlen", 1),
        seed: int(values.seed, "seed", 0),
      }
      : undefined,
    update: values.update,
    sequential: !values["original-activations"],
    alpha: num(values.alpha, "alpha"),
    allocation: values.allocation as CompressOptions["allocation"],
    kvCache: values["kv-cache"],
    dtype: values.dtype as CompressOptions["dtype"],
    force: values.force,
    overwrite: values.overwrite,
    onProgress: onCompressProgress,
  };
  const report = await compress(input, output, opts);
  print(formatCompressReport(report));
}

async function cmdInspect(args: string[]): Promise<void> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  if (positionals.length !== 1) throw new Error("inspect: expected one model path\n\n" + USAGE);
  print(formatInspectReport(await inspectModel(positionals[0], { onProgress })));
}

async function cmdMerge(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { overwrite: { type: "boolean" } },
  });
  if (positionals.length !== 2) throw new Error("merge: expected two paths, IN and OUT\n\n" + USAGE);
  const r = await merge(positionals[0], positionals[1], { overwrite: values.overwrite });
  print(
    `merged ${r.merged.length} low-rank linears into dense weights: ${
      positionals[1]
    } (${r.params} parameters)`,
  );
}

/** The main job on the bundled model: what it is, how good it is, what compression does to it. */
async function cmdDemo(): Promise<void> {
  const info = linalgInfo();
  print(`numerics: ${info.backend}${info.threads > 1 ? `, ${info.threads} threads` : ""}`);
  const { mkdtemp, rm } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const text = await readFile(DEFAULT_TEXT, "utf8");
  const model = await loadModel(DEFAULT_MODEL);
  const s = model.spec;
  let params = 0;
  for (const t of model.reader.tensors()) params += t.shape.reduce((a, b) => a * b, 1);
  print(
    `model: ${model.name} — LLaMA, ${s.numLayers} layers, hidden ${s.hiddenSize}, ${s.numHeads} heads / ` +
      `${s.numKvHeads} KV heads, vocab ${s.vocabSize}: ${params.toLocaleString("en")} parameters ` +
      `(${formatBytes(params * 4)} as float32)`,
  );
  const ids = model.tokenizer.encode(text, { bos: true });
  const prompt = "Once upon a time";
  const rows: string[][] = [];
  const dense = await perplexity(model, ids, { window: DEMO_WINDOW, onProgress });
  rows.push(["dense", "0 %", dense.ppl.toFixed(4), "-", await continueText(model, prompt, 24)]);
  await model.close();
  print(
    `perplexity on ${dense.tokens} tokens of TinyStories (windows of ${DEMO_WINDOW}): ${
      dense.ppl.toFixed(4)
    }`,
  );

  const dir = await mkdtemp(join(tmpdir(), "svd-llm-demo-"));
  try {
    for (const method of ["svd", "asvd", "svdllm"] as const) {
      const out = join(dir, method);
      const report = await compress(DEFAULT_MODEL, out, {
        method,
        ratio: { removed: 0.2 },
        calibration: { text, samples: 16, seqlen: 128 },
        onProgress: onCompressProgress,
      });
      const m = await loadModel(out);
      try {
        const r = await perplexity(m, m.tokenizer.encode(text, { bos: true }), {
          window: DEMO_WINDOW,
          onProgress,
        });
        rows.push([
          method,
          `${(report.params.model.removed * 100).toFixed(1)} %`,
          r.ppl.toFixed(4),
          `${report.seconds.toFixed(2)} s`,
          await continueText(m, prompt, 24),
        ]);
      } finally {
        await m.close();
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  print(
    "\n20 % of every block linear's parameters removed (calibration: 16 windows × 128 tokens of the same text):",
  );
  print(
    table(
      ["model", "model params removed", "ppl", "compress", "greedy continuation"],
      rows.map((r) => {
        r[4] = JSON.stringify(r[4].replace(/\s+/g, " ").slice(0, 70));
        return r;
      }),
    ),
  );
}

/** `--threads N|auto` may stand anywhere; it sets the numeric worker threads (default: auto). */
function takeThreads(argv: string[]): { threads: number | "auto"; rest: string[] } {
  const i = argv.indexOf("--threads");
  if (i < 0) return { threads: "auto", rest: argv };
  const v = argv[i + 1];
  const threads = v === "auto" ? "auto" : Number(v);
  if (threads !== "auto" && !Number.isInteger(threads)) {
    throw new Error(`--threads: expected a whole number or "auto", got ${JSON.stringify(v)}`);
  }
  return { threads, rest: [...argv.slice(0, i), ...argv.slice(i + 2)] };
}

async function main(argv: string[]): Promise<number> {
  try {
    const { threads, rest: args } = takeThreads(argv);
    const [cmd, ...rest] = args;
    await initLinalg({ threads });
    switch (cmd) {
      case "demo":
        await cmdDemo();
        break;
      case "eval":
        await cmdEval(rest);
        break;
      case "generate":
        await cmdGenerate(rest);
        break;
      case "compress":
        await cmdCompress(rest);
        break;
      case "inspect":
        await cmdInspect(rest);
        break;
      case "merge":
        await cmdMerge(rest);
        break;
      case undefined:
      case "help":
      case "--help":
      case "-h":
        print(USAGE);
        break;
      default:
        process.stderr.write(`unknown command ${JSON.stringify(cmd)}\n\n${USAGE}\n`);
        return 2;
    }
    return 0;
  } catch (e) {
    const err = e as Error & { code?: string };
    // node:util parseArgs reports a bad command line as a TypeError: it is the user's, not a bug
    const name = err.code?.startsWith("ERR_PARSE_ARGS") ? "" : err.name;
    process.stderr.write(`\nerror: ${name && name !== "Error" ? `${name}: ` : ""}${err.message}\n`);
    return 1;
  }
}

/**
 * On SIGINT (Ctrl-C) or SIGTERM: remove the temporary files and folders being written (the destination name
 * never holds a partial output, and no `.tmp-…` debris is left beside it), then exit 130 / 143. The handler
 * runs when the event loop next turns (compress yields between tensor reads and writes).
 */
function exitOnSignal(signal: "SIGINT" | "SIGTERM", code: number): void {
  process.on(signal, () => {
    const removed: string[] = [];
    const pending = pendingTempPaths();
    for (const p of pending) {
      try {
        rmSync(p, { recursive: true, force: true });
        // name only the outermost (a compress output folder holds its own temporary model.safetensors)
        if (!pending.some((q) => p.startsWith(q + "/") || p.startsWith(q + "\\"))) removed.push(p);
      } catch (e) {
        process.stderr.write(`\ninterrupted: could not remove ${p}: ${(e as Error).message}\n`);
      }
    }
    process.stderr.write(
      `\ninterrupted (${signal})${removed.length ? `: removed the unfinished ${removed.join(", ")}` : ""}\n`,
    );
    process.exit(code);
  });
}

if (import.meta.main) {
  exitOnSignal("SIGINT", 130);
  exitOnSignal("SIGTERM", 143);
  const code = await main(process.argv.slice(2));
  process.exit(code);
}
