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
import { existsSync, realpathSync, rmSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type BarEvent, formatDuration, progressBar } from "./src/cli/progress.ts";
import type { ProgressEvent } from "./src/model/llama.ts";
import { compareMethods } from "./src/eval/compare.ts";
import {
  formatBytes,
  formatCompressReport,
  formatInspectReport,
  inspectModel,
  table,
} from "./src/cli/report.ts";
import { compress, type CompressOptions, type CompressProgress } from "./src/pipeline/compress.ts";
import { merge } from "./src/pipeline/merge.ts";
import { FormatError, OptionError } from "./src/errors.ts";
import { checkText, readCalibrationText } from "./src/calib/text.ts";
import { cmdExport } from "./src/cli/export.ts";
import { type LoadedModel, loadModel } from "./src/model/load.ts";
import { perplexity } from "./src/eval/perplexity.ts";
import { generate } from "./src/eval/generate.ts";
import { closeLinalg, initLinalg, linalgInfo } from "./src/linalg/backend.ts";
import type { Ratio } from "./src/methods/ratio.ts";
import { pendingTempPaths } from "./src/io/atomic_write.ts";

const USAGE = `svd-llm — compress LLMs by low-rank factorisation

usage:
  cli.ts demo                                   the bundled stories260K: size, perplexity, generation, compression
  cli.ts eval MODEL [--text FILE] [--window N] [--max-tokens N]
  cli.ts generate MODEL [--prompt TEXT] [--tokens N]
  cli.ts compress IN OUT --method svd|asvd|svdllm|fwsvd|soco (--ratio R | --kept P) [--calib FILE]
                  [--samples N] [--seqlen L] [--seed S] [--update] [--original-activations]
                  [--fisher-side kfac|both|input|output] [--basis svd|whitened] [--steps N] [--lr X]
                  [--checkpoint FILE]
                  [--alpha A] [--allocation uniform|sensitivity|sweep|global] [--kv-cache] [--dtype F32|F16|BF16]
                  [--force] [--overwrite]
  cli.ts inspect MODEL                          per-layer shapes, ranks and singular-value spectra
  cli.ts merge IN OUT                           low-rank factors back to dense weights
  cli.ts export IN OUT --format onnx [--dtype f32|f16|int8] [--kv-cache full|latent] [--overwrite]
  cli.ts COMMAND --help                         the options of one command

Every command takes --threads N|auto (numeric worker threads; default auto = the machine's cores) and
--gpu (large float32 products and Gram matrices on a WebGPU adapter; without one, a one-line note and the CPU).
MODEL/IN is a .gguf file or a Hugging Face folder (config.json + model.safetensors + tokenizer.json).
--ratio is the fraction of each linear's parameters REMOVED (SVD-LLM's convention, 0.2 keeps 80 %);
--kept is the fraction KEPT (ASVD's parameter ratio). Give exactly one.`;

/** Help of each command, printed by `cli.ts COMMAND --help`. */
const HELP: Record<string, string> = {
  demo: `cli.ts demo

The bundled stories260K model: its size and perplexity on the bundled TinyStories text, a greedy continuation,
then each method (svd, asvd, svdllm) at 20 % removed, reloaded and evaluated on the same text.`,
  eval: `cli.ts eval [MODEL] [--text FILE] [--window N] [--max-tokens N]

Perplexity of MODEL (a .gguf file, a Hugging Face folder, or an http(s) URL of either) on the text of FILE.
Without MODEL: the bundled stories260K on the bundled TinyStories text. A model of your own needs --text.
  --text FILE        evaluation text (path or http(s) URL)
  --window N         tokens per window (default: the model's context, at most 2048)
  --max-tokens N     evaluate only the first N tokens`,
  generate: `cli.ts generate [MODEL] [--prompt TEXT] [--tokens N]

Greedy continuation of TEXT (default "Once upon a time") by MODEL (default: the bundled stories260K).
  --tokens N         tokens to generate (default 40)`,
  compress:
    `cli.ts compress IN OUT --method svd|asvd|svdllm|fwsvd|soco (--ratio R | --kept P) [--calib FILE] [options]

Compress IN (a .gguf file, a Hugging Face folder, or an http(s) URL of either) into the folder OUT.
  --method M               svd (no calibration), asvd, svdllm (default), fwsvd (Fisher-weighted SVD:
                           one gradient pass over the calibration windows) or soco (ranks learned by
                           training each linear's spectral scores on the model's own loss)
  --ratio R                fraction of each block linear's parameters REMOVED (SVD-LLM's convention)
  --kept P                 fraction KEPT (ASVD's parameter ratio); give exactly one of --ratio / --kept
  --calib FILE             calibration text (needed by every method but svd)
  --samples N              calibration windows (default 32)
  --seqlen L               tokens per window (default min(256, the model's context))
  --seed S                 seed of the random window starts (and of soco's batches; default 0)
  --update                 svdllm: closed-form update of A on the compressed prefix's activations
  --original-activations   calibrate every block on the original model's activations (not sequentially)
  --alpha A                asvd: scaling exponent (default 0.5)
  --fisher-side S          fwsvd: "kfac" (default: both sides, K-FAC factors E[dy dyᵀ], E[x xᵀ]), "both"
                           (both sides, diagonal), "input" (per input feature) or "output" (per row, the paper's)
  --basis B                soco: "whitened" (default, SVD-LLM's basis) or "svd" (the weights' own)
  --steps N                soco: training steps (default 100)
  --lr X                   soco: learning rate of the scores (default 0.05)
  --checkpoint FILE        soco: resume from FILE when it exists; save the training state there as it goes
  --allocation MODE        ranks per linear: uniform (default); global (any method but soco: least
                           truncation loss under one budget); asvd: sensitivity (fast) or sweep (the paper's
                           full sweep: minutes)
  --kv-cache               asvd: compress only k/v, --kept is the fraction of the KV cache kept
  --dtype F32|F16|BF16     storage type of the factors (default F32)
  --force                  accept ranks that save nothing
  --overwrite              replace OUT if it is a model folder written by this program (nothing else)`,
  inspect: `cli.ts inspect MODEL

Per-layer shapes, ranks and singular-value spectra of MODEL; for a model compressed by this program, also what
its compression recorded (relative loss, damping).`,
  merge: `cli.ts merge IN OUT [--overwrite]

Multiply the low-rank factors of the compressed folder IN back into dense weights, written to the folder OUT.
  --overwrite        replace OUT if it is a model folder written by this program (nothing else)`,
};

/**
 * A file shipped beside cli.ts (the demo model and text), resolved only when used: a path when the CLI runs
 * from files, a URL when it runs from a remote URL (JSR), where there is no local copy.
 */
function bundled(relative: string): string {
  const u = new URL(relative, import.meta.url);
  return u.protocol === "file:" ? fileURLToPath(u) : u.href;
}
const demoModel = () => bundled("./models/stories260K/stories260K.gguf");
const demoText = () => bundled("./data/tinystories-valid.part1.txt");
/** stories260K was trained on 512-token contexts (llama2.c); its GGUF metadata says 2048, so say it explicitly. */
const DEMO_WINDOW = 512;

/** True when `path` names the bundled demo model. */
function isDemoModel(path: string): boolean {
  const demo = demoModel();
  if (/^https?:/i.test(path) || /^https?:/i.test(demo)) return path === demo;
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return resolve(p);
    }
  };
  return real(path) === real(demo);
}

const print = (s = "") => process.stdout.write(s + "\n");
const bar = progressBar();
const onProgress = (e: ProgressEvent) => bar(e);
const onCompressProgress = (e: CompressProgress) =>
  bar(
    {
      stage: e.stage,
      label: e.block === undefined ? e.stage : `${e.stage} block ${e.block}`,
      done: e.done,
      total: e.total,
    } satisfies BarEvent,
  );

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

/**
 * The text of the file given to `--option` (a path or an http(s) URL), checked to be text (not binary, not a
 * model file, not empty: `readCalibrationText`/`checkText`), with the flag and the path named on failure.
 */
async function readText(path: string, option: string): Promise<string> {
  const flag = `--${option}`;
  if (/^https?:\/\//i.test(path)) {
    let text: string;
    try {
      const r = await fetch(path);
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      text = await r.text();
    } catch (e) {
      throw new Error(`${flag} ${path}: cannot read the file (${(e as Error).message})`);
    }
    checkText(text, `${flag} ${path}`);
    return text;
  }
  try {
    return await readCalibrationText(path);
  } catch (e) {
    if (e instanceof FormatError) {
      throw new FormatError(`${flag} ${e.source}`, e.message.slice(e.source.length + 2));
    }
    throw e;
  }
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
  const path = positionals[0] ?? demoModel();
  const max = int(values["max-tokens"], "max-tokens", 2);
  const windowOpt = int(values.window, "window", 2);
  if (values.text === undefined && !isDemoModel(path)) {
    throw new Error(
      `eval: give --text FILE to evaluate ${path} (the bundled TinyStories text is used only with the bundled model)`,
    );
  }
  if (values.text === undefined) process.stderr.write(`text: the bundled TinyStories validation text\n`);
  const text = await readText(values.text ?? demoText(), "text");
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
  const model = await loadModel(positionals[0] ?? demoModel());
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
      "fisher-side": { type: "string" },
      basis: { type: "string" },
      steps: { type: "string" },
      lr: { type: "string" },
      checkpoint: { type: "string" },
      dtype: { type: "string" },
      force: { type: "boolean" },
      overwrite: { type: "boolean" },
    },
  });
  if (positionals.length !== 2) {
    throw new Error("compress: expected two paths, IN and OUT\n\n" + HELP.compress);
  }
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
    fisherSide: values["fisher-side"] as CompressOptions["fisherSide"],
    soco: socoFlags(values),
    dtype: values.dtype as CompressOptions["dtype"],
    force: values.force,
    overwrite: values.overwrite,
    onProgress: onCompressProgress,
  };
  const report = await compress(input, output, opts).catch((e) => {
    throw inFlags(e);
  });
  print(formatCompressReport(report));
}

/** SoCo's flags, or undefined when none is given (any of them with another method is refused by compress). */
function socoFlags(
  v: { basis?: string; steps?: string; lr?: string; checkpoint?: string },
): CompressOptions["soco"] {
  if (v.basis === undefined && v.steps === undefined && v.lr === undefined && v.checkpoint === undefined) {
    return undefined;
  }
  return {
    basis: v.basis as NonNullable<CompressOptions["soco"]>["basis"],
    steps: int(v.steps, "steps", 1),
    lr: num(v.lr, "lr"),
    checkpoint: v.checkpoint,
  };
}

async function cmdInspect(args: string[]): Promise<void> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  if (positionals.length !== 1) throw new Error("inspect: expected one model path\n\n" + HELP.inspect);
  print(formatInspectReport(await inspectModel(positionals[0], { onProgress })));
}

async function cmdMerge(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { overwrite: { type: "boolean" } },
  });
  if (positionals.length !== 2) throw new Error("merge: expected two paths, IN and OUT\n\n" + HELP.merge);
  const r = await merge(positionals[0], positionals[1], { overwrite: values.overwrite }).catch((e) => {
    throw inFlags(e);
  });
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
  const text = await readText(demoText(), "text");
  const model = await loadModel(demoModel());
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
  const samples = new Map<string, string>();
  const results = await compareMethods(demoModel(), {
    ratio: { removed: 0.2 },
    calibration: { text, samples: 16, seqlen: 128 },
    evalIds: ids,
    window: DEMO_WINDOW,
    onProgress: onCompressProgress,
    onEvalProgress: onProgress,
    onModel: async (m, method) => void samples.set(method, await continueText(m, prompt, 24)),
  });
  for (const r of results) {
    rows.push([
      r.method,
      `${(r.report.params.model.removed * 100).toFixed(1)} %`,
      r.ppl.toFixed(4),
      `${r.report.seconds.toFixed(2)} s`,
      samples.get(r.method)!,
    ]);
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

/**
 * The library's error with its option names replaced by the command line's flags ("pass overwrite: true" →
 * "pass --overwrite"), so the user is told what to type.
 */
function inFlags(e: unknown): unknown {
  if (!(e instanceof OptionError)) return e;
  let m = e.message;
  for (const [api, flag] of FLAG_NAMES) m = m.replace(api, flag);
  if (m === e.message) return e;
  const out = new OptionError(m);
  out.stack = `${out.name}: ${m}`;
  return out;
}

/** Library option names and the flags that set them. */
const FLAG_NAMES: [RegExp, string][] = [
  [/pass overwrite: true/g, "pass --overwrite"],
  [/\(calibration\.text or calibration\.ids\)/g, "(--calib FILE)"],
  [/calibration\.text/g, "--calib"],
  [/calibration\.samples/g, "--samples"],
  [/calibration seqlen/g, "--seqlen"],
  [/calibration windows: samples/g, "--samples"],
  [/calibration windows: seqlen/g, "--seqlen"],
  [/calibration windows: seed/g, "--seed"],
  [/compress: method must be/g, "compress: --method must be"],
  [/compress: allocation must be/g, "compress: --allocation must be"],
  [/compress: dtype must be/g, "compress: --dtype must be"],
  [/compress: fisherSide must be/g, "compress: --fisher-side must be"],
  [
    /soco options apply to method "soco" only/g,
    "--basis/--steps/--lr/--checkpoint apply to --method soco only",
  ],
  [/soco: basis must be/g, "soco: --basis must be"],
  [/soco: steps must be/g, "soco: --steps must be"],
  [/soco: learning rate must be/g, "soco: --lr must be"],
  [/fisherSide and fisherBatch apply/g, "--fisher-side applies"],
  [/compress: update applies/g, "compress: --update applies"],
  [/allocation "(sensitivity|sweep)" applies/g, "--allocation $1 applies"],
  [
    /kvCache chooses the linears and ranks itself; drop linears\/allocation/g,
    "--kv-cache chooses the ranks itself; drop --allocation",
  ],
  [/ratio: removed must be/g, "--ratio must be"],
  [/ratio: kept must be/g, "--kept must be"],
  [/force: true/g, "--force"],
];

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
    const { threads, rest: afterThreads } = takeThreads(argv);
    const gpu = afterThreads.includes("--gpu");
    const args = afterThreads.filter((a) => a !== "--gpu");
    const [cmd, ...rest] = args;
    if (cmd !== undefined && HELP[cmd] && (rest.includes("--help") || rest.includes("-h"))) {
      print(HELP[cmd]);
      return 0;
    }
    const info = await initLinalg({ threads, gpu });
    if (gpu) {
      process.stderr.write(
        info.gpu
          ? `gpu: ${info.gpu.adapter}${info.gpu.fallback ? " (a software adapter: correct, not fast)" : ""}\n`
          : `gpu: not used (${info.gpuNote ?? "no WebGPU adapter"}); running on the CPU\n`,
      );
    }
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
      case "export":
        await cmdExport(rest, print);
        break;
      case undefined:
      case "help":
      case "--help":
      case "-h":
        print(rest[0] && HELP[rest[0]] ? HELP[rest[0]] : USAGE);
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
 * On SIGINT (Ctrl-C), SIGTERM or SIGHUP (the terminal closed): remove the temporary files and folders being written (the destination name
 * never holds a partial output, and no `.tmp-…` debris is left beside it), then exit 130 / 143 / 129. The handler
 * runs when the event loop next turns (compress yields between tensor reads and writes).
 */
function exitOnSignal(signal: "SIGINT" | "SIGTERM" | "SIGHUP", code: number): void {
  process.on(signal, () => {
    const removed: string[] = [];
    const pending = pendingTempPaths();
    for (const p of pending) {
      try {
        removeNow(p);
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

/**
 * Remove `p` and everything under it, synchronously (a signal handler exits right after). An asynchronous
 * write still in flight on the runtime's I/O threads can add a file between the removal's listing and its
 * final rmdir (ENOTEMPTY, seen under load): so try again, a few milliseconds apart, up to half a second.
 */
function removeNow(p: string): void {
  for (let attempt = 0;; attempt++) {
    try {
      rmSync(p, { recursive: true, force: true });
      if (!existsSync(p)) return;
    } catch (e) {
      if (attempt >= 100) throw e;
    }
    if (attempt >= 100) throw new Error(`${p} is still there after ${attempt} removals`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
  }
}

/**
 * True when this file is the program being run: `import.meta.main` where the runtime sets it (Deno, Bun),
 * else (Node 20, a Node bundle) when the script named on the command line is this file.
 */
function isMain(): boolean {
  const main = (import.meta as { main?: boolean }).main;
  if (typeof main === "boolean") return main;
  const script = process.argv[1];
  if (!script || !import.meta.url.startsWith("file:")) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  exitOnSignal("SIGINT", 130);
  exitOnSignal("SIGTERM", 143);
  if (process.platform !== "win32") exitOnSignal("SIGHUP", 129);
  const code = await main(process.argv.slice(2));
  // Release the GPU before exit: closeLinalg returns once the GPU worker's thread has ended. A process exit
  // while that thread still unloads the Vulkan driver crashed about one run in thirty (SIGSEGV, glibc abort).
  if (process.argv.includes("--gpu")) await closeLinalg().catch(() => {});
  process.exit(code);
}
