/**
 * Memory benchmark of the streaming compression pipeline. Generates a random-weight LLaMA checkpoint
 * (float32, streamed to a temporary folder one tensor at a time, never committed), compresses it in a
 * **child process** so that the peak resident memory measured is the compression's alone, then does the same
 * with the layer count doubled. The child's RSS is sampled by the parent from `/proc/<pid>/status` (VmRSS
 * every 100 ms, and VmHWM, the kernel's own high-water mark); the child also prints one line per progress
 * event (stage, block, RSS, V8 heap, array buffers, wasm memory) so that a peak can be traced to a stage.
 *
 * Goals checked (issue "Memory"): peak RSS ≤ 25 % of the ~1.5 GB file, and peak RSS flat when the layer
 * count doubles (peak(2N) / peak(N) ≈ 1).
 *
 * Run: `node_modules/.bin/deno run -A bench/compress_memory.ts [--layers N] [--hidden H] [--intermediate F]
 * [--vocab V] [--heads H] [--kv-heads K] [--method svd|asvd|svdllm|fwsvd|soco[,…]] [--soco-steps 3 (at least 3: one per stage)] [--samples S]
 * [--seqlen T] [--keep]
 * [--json] [--verbose] [--gc] [--single] [--model DIR]` (defaults: 13 and 26 layers of hidden 1024, intermediate 2816, 16/8 heads, vocab 32000:
 * 26 layers ≈ 1.47 GB; svdllm, 20 % removed, 8 × 128 random calibration tokens). `--layers N` runs N and 2N.
 * `--single`: N only. `--keep` keeps the generated checkpoints (their folder is printed); `--model DIR`
 * compresses such a kept checkpoint instead of generating one (generating 1.5 GB takes a while).
 * `--verbose` prints every progress event, `--gc` collects garbage before each (what is retained).
 * Several methods (`--method svdllm,soco`) run one after the other on the same checkpoint; with svdllm and
 * soco both, SoCo's peak is compared with svdllm's (issue 16's goal: at most 2×). SoCo trains `--soco-steps`
 * steps (its peak does not depend on their number: every step does the same work) and the time per step is
 * printed.
 * Linux only (reads /proc).
 *
 * @module
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { createSafetensorsWriter, type TensorPlan } from "../src/io/safetensors_writer.ts";
import type { LinearName } from "../src/model/names.ts";

/** Shape of the generated model. */
export interface ModelShape {
  /** Decoder blocks. */
  layers: number;
  /** Hidden size d. */
  hidden: number;
  /** MLP size f. */
  intermediate: number;
  /** Attention heads. */
  heads: number;
  /** Key/value heads (grouped-query attention). */
  kvHeads: number;
  /** Vocabulary size. */
  vocab: number;
}

/** One line of the child's progress log. */
export interface StageSample {
  /** Seconds since the child started compressing. */
  t: number;
  /** Progress stage ("start", "calibrate", "compress", "write", "done", "end"). */
  stage: string;
  /** Block index, when the event names one. */
  block?: number;
  /** Layer name, when the event names one. */
  layer?: string;
  /** VmRSS, bytes. */
  rss: number;
  /** VmHWM (peak RSS so far), bytes. */
  hwm: number;
  /** V8 heap used, bytes. */
  heapUsed: number;
  /** Memory of ArrayBuffers outside the V8 heap (typed arrays), bytes. */
  arrayBuffers: number;
  /** Size of the wasm linear memory, bytes (0 when not loaded). */
  wasm: number;
}

/** What one compression run measured. */
export interface RunResult {
  /** Model shape. */
  shape: ModelShape;
  /** Bytes of model.safetensors. */
  fileBytes: number;
  /** Seconds to generate the checkpoint. */
  generateSeconds: number;
  /** Child's VmHWM at its end (kernel peak RSS), bytes. */
  peakHwm: number;
  /** Highest VmRSS the parent sampled, bytes. */
  peakSampled: number;
  /** Progress event during which the sampled peak was seen. */
  peakStage: string;
  /** The compress report's own `peakRssBytes`. */
  reportPeak: number;
  /** Compression wall time from the report, seconds. */
  seconds: number;
  /** Child wall time (start-up, load, compress), seconds. */
  childSeconds: number;
  /** The child's progress log. */
  stages: StageSample[];
  /** Method compressed with. */
  method?: string;
  /** SoCo: seconds per training step (from the child's progress events). */
  secondsPerStep?: number;
}

// ---------------------------------------------------------------------------------------------------------
// Checkpoint generation

/** The tensors of a LLaMA checkpoint in Hugging Face names (untied lm_head), with their shapes. */
export function llamaTensors(s: ModelShape): TensorPlan[] {
  const d = s.hidden, f = s.intermediate, hd = d / s.heads, kv = s.kvHeads * hd;
  const plan: TensorPlan[] = [{ name: "model.embed_tokens.weight", dtype: "F32", shape: [s.vocab, d] }];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    const t = (n: string, shape: number[]) => plan.push({ name: `${p}.${n}`, dtype: "F32", shape });
    t("input_layernorm.weight", [d]);
    t("self_attn.q_proj.weight", [d, d]);
    t("self_attn.k_proj.weight", [kv, d]);
    t("self_attn.v_proj.weight", [kv, d]);
    t("self_attn.o_proj.weight", [d, d]);
    t("post_attention_layernorm.weight", [d]);
    t("mlp.gate_proj.weight", [f, d]);
    t("mlp.up_proj.weight", [f, d]);
    t("mlp.down_proj.weight", [d, f]);
  }
  plan.push({ name: "model.norm.weight", dtype: "F32", shape: [d] });
  plan.push({ name: "lm_head.weight", dtype: "F32", shape: [s.vocab, d] });
  return plan;
}

/**
 * Fill `out` with approximately normal values of standard deviation `std` (sum of four uniforms of a
 * xorshift32 stream, rescaled: cheap, and the pipeline's memory does not depend on the exact distribution).
 */
function fillNormal(out: Float32Array, seed: number, std: number): number {
  let s = (seed * 2654435761) >>> 0 || 1;
  const k = std * Math.sqrt(3) / 2147483648; // sum of 4 U(-1,1) has variance 4/3
  for (let i = 0; i < out.length; i++) {
    let acc = 0;
    for (let j = 0; j < 4; j++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      acc += s | 0;
    }
    out[i] = acc * k / 2;
  }
  return s;
}

/** Write config.json and a random float32 model.safetensors for `shape` into `dir`; returns the file size. */
export async function generateCheckpoint(dir: string, shape: ModelShape, seed = 1): Promise<number> {
  const config = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_act: "silu",
    hidden_size: shape.hidden,
    intermediate_size: shape.intermediate,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    vocab_size: shape.vocab,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    max_position_embeddings: 2048,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: "float32",
  };
  await writeFile(join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  const plan = llamaTensors(shape);
  const path = join(dir, "model.safetensors");
  const w = await createSafetensorsWriter(path, plan, { metadata: { format: "pt" } });
  try {
    let s = seed;
    for (const t of plan) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(n);
      if (t.name.includes("norm")) data.fill(1);
      else s = fillNormal(data, s + 1, 0.02);
      await w.write(t.name, data);
    }
    await w.close();
  } finally {
    await w.abort();
  }
  return (await stat(path)).size;
}

// ---------------------------------------------------------------------------------------------------------
// Child: compress, printing one JSON line per progress event

/** VmRSS and VmHWM of a process from /proc (bytes), or zeros when unreadable. */
export function procMemory(pid: number | "self"): { rss: number; hwm: number } {
  try {
    const text = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (key: string) =>
      Number(new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, "m").exec(text)?.[1] ?? 0) * 1024;
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
  } catch {
    return { rss: 0, hwm: 0 };
  }
}

const TAG = "@@mem ";

/** What the child process is asked to do. */
export interface ChildJob {
  /** Model folder. */
  input: string;
  /** Output folder. */
  output: string;
  /** Compression method. */
  method: string;
  /** Calibration windows. */
  samples: number;
  /** Tokens per window. */
  seqlen: number;
  /** Collect garbage before each sample. */
  gc?: boolean;
  /** Linears to compress (default all seven). */
  linears?: string[];
  /** SoCo: training steps. */
  socoSteps?: number;
}

async function child(
  job: ChildJob,
) {
  const { compressModel } = await import("../src/pipeline/compress.ts");
  const { openModelWeights } = await import("../src/io/sharded.ts");
  const { specFromHfConfig } = await import("../src/model/spec.ts");
  const { wasmRuntime } = await import("../src/linalg/wasm/runtime.ts");
  const config = JSON.parse(readFileSync(join(job.input, "config.json"), "utf8"));
  const spec = specFromHfConfig(config);
  // Random calibration ids: twice the tokens the windows need (random window starts).
  const ids = new Int32Array(job.samples * job.seqlen * 2);
  let s = 12345;
  for (let i = 0; i < ids.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    ids[i] = s % spec.vocabSize;
  }
  const t0 = performance.now();
  // With --gc, collect before each sample: the profile then shows what is retained, not uncollected garbage.
  const g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  // Twice: V8 sweeps freed array buffers concurrently, and their bytes leave memoryUsage() only once the
  // sweep is done, which the next collection waits for (one collection measured what was just freed, flakily).
  const gc1 = !job.gc ? undefined : g.gc ?? (g.Bun ? () => g.Bun!.gc(true) : undefined);
  const gc = gc1 && (() => (gc1(), gc1()));
  const log = (stage: string, block?: number, layer?: string) => {
    gc?.();
    const m = procMemory("self");
    const u = process.memoryUsage();
    const line: StageSample = {
      t: (performance.now() - t0) / 1000,
      stage,
      block,
      layer,
      rss: m.rss,
      hwm: m.hwm,
      heapUsed: u.heapUsed,
      arrayBuffers: Math.max((u as { arrayBuffers?: number }).arrayBuffers ?? 0, u.external),
      wasm: wasmRuntime()?.memory.buffer.byteLength ?? 0,
    };
    process.stdout.write(TAG + JSON.stringify(line) + "\n");
  };
  log("start");
  // compressModel rather than compress(): the generated folder has no tokenizer.json (calibration is given
  // as ids); everything after loading is the same code path.
  const reader = await openModelWeights(job.input);
  try {
    const report = await compressModel(
      { spec, reader, config, name: "random-llama" },
      job.output,
      {
        method: job.method as "svd" | "asvd" | "svdllm" | "soco" | "fwsvd",
        soco: job.method === "soco" ? { steps: job.socoSteps ?? 3 } : undefined,
        ratio: { removed: 0.2 },
        calibration: { ids, samples: job.samples, seqlen: job.seqlen },
        overwrite: true,
        linears: job.linears as LinearName[] | undefined,
        onProgress: (e) => log(e.stage, e.block, e.layer),
      },
      { inputPath: job.input },
    );
    log("end");
    process.stdout.write(
      TAG + JSON.stringify({ report: { seconds: report.seconds, peakRssBytes: report.peakRssBytes } }) + "\n",
    );
  } finally {
    await reader.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Parent

/** What {@link runChild} measured. */
export type ChildResult = Omit<RunResult, "shape" | "fileBytes" | "generateSeconds">;

/**
 * Compress `job.input` in a child process (this file with `--child`, under the current runtime), sampling
 * its memory from /proc; resolves with the measurements. `quiet`: print nothing; `verbose`: every event.
 */
export async function runChild(
  job: ChildJob,
  opts: { quiet?: boolean; verbose?: boolean } = {},
): Promise<ChildResult> {
  const self = fileURLToPath(import.meta.url);
  const input = job.input;
  const quiet = opts.quiet ?? false;
  const jobText = JSON.stringify(job);
  const isDeno = "Deno" in globalThis;
  const argv = isDeno
    ? ["run", "-A", ...(job.gc ? ["--v8-flags=--expose-gc"] : []), self, "--child", jobText]
    : [self, "--child", jobText]; // Bun: Bun.gc() needs no flag
  const t0 = performance.now();
  const p = spawn(process.execPath, argv, { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env } });
  const stages: StageSample[] = [];
  let report: { seconds: number; peakRssBytes: number } | undefined;
  let peakSampled = 0, peakHwm = 0, peakStage = "start";
  let buf = "";
  p.stdout!.setEncoding("utf8");
  p.stdout!.on("data", (chunk: string) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.startsWith(TAG)) {
        if (line.trim()) console.log(`  [child] ${line}`);
        continue;
      }
      const o = JSON.parse(line.slice(TAG.length));
      if (o.report) report = o.report;
      else {
        stages.push(o);
        if (!quiet && (opts.verbose || ["write", "calibrate", "end"].includes(o.stage))) {
          console.log(
            `  ${o.t.toFixed(1).padStart(7)} s ${o.stage.padEnd(9)} ${o.layer ?? o.block ?? ""}\tRSS ${
              mb(o.rss)
            }  HWM ${mb(o.hwm)}  heap ${mb(o.heapUsed)}  buffers ${mb(o.arrayBuffers)}  wasm ${mb(o.wasm)}`,
          );
        }
      }
    }
  });
  const sample = () => {
    if (!p.pid) return;
    const m = procMemory(p.pid);
    if (m.rss > peakSampled) {
      peakSampled = m.rss;
      const last = stages[stages.length - 1];
      peakStage = last
        ? `after ${last.stage}${
          last.layer ? " " + last.layer : last.block !== undefined ? " " + last.block : ""
        }`
        : "start-up";
    }
    if (m.hwm > peakHwm) peakHwm = m.hwm;
  };
  const timer = setInterval(sample, 100);
  const code: number = await new Promise((resolve, reject) => {
    p.on("error", reject);
    p.on("exit", (c) => resolve(c ?? 1));
  });
  clearInterval(timer);
  if (code !== 0 || !report) {
    throw new Error(`compress_memory: the child compressing ${input} failed (exit ${code})`);
  }
  // The child's own last sample has its final VmHWM (the parent's timer may have missed the very end).
  for (const s of stages) if (s.hwm > peakHwm) peakHwm = s.hwm;
  return {
    peakHwm,
    peakSampled,
    peakStage,
    reportPeak: report.peakRssBytes,
    seconds: report.seconds,
    childSeconds: (performance.now() - t0) / 1000,
    stages,
  };
}

/** Mean seconds per SoCo training step: between the first and the last training event of the child. */
function stepSeconds(stages: readonly StageSample[]): number | undefined {
  // Training events are "soco" events without a block (the bases' events name their block).
  const train = stages.filter((s) => s.stage === "soco" && s.block === undefined);
  return train.length >= 2 ? (train.at(-1)!.t - train[0].t) / (train.length - 1) : undefined;
}

function mb(b: number): string {
  return `${(b / 2 ** 20).toFixed(0)} MiB`;
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

async function main() {
  const ci = process.argv.indexOf("--child");
  if (ci >= 0) {
    await child(JSON.parse(process.argv[ci + 1]));
    return;
  }
  const n = Number(arg("layers", "13"));
  const hidden = Number(arg("hidden", "1024"));
  const shapeOf = (layers: number): ModelShape => ({
    layers,
    hidden,
    intermediate: Number(arg("intermediate", String(Math.round(hidden * 2.75)))),
    heads: Number(arg("heads", String(Math.max(1, hidden / 64)))),
    kvHeads: Number(arg("kv-heads", String(Math.max(1, hidden / 128)))),
    vocab: Number(arg("vocab", "32000")),
  });
  const methods = arg("method", "svdllm").split(",");
  const socoSteps = Number(arg("soco-steps", "3"));
  const samples = Number(arg("samples", "8"));
  const seqlen = Number(arg("seqlen", "128"));
  const keep = process.argv.includes("--keep");
  const json = process.argv.includes("--json");
  const gc = process.argv.includes("--gc");
  const verbose = process.argv.includes("--verbose");
  const single = process.argv.includes("--single");
  const model = arg("model", "");
  const [l1, l2] = await import("node:os").then((os) => os.loadavg());
  console.log(
    `compress_memory: method ${
      methods.join(", ")
    }, removed 0.2, calibration ${samples} × ${seqlen} random ids; ` +
      `load average ${l1.toFixed(2)} ${l2.toFixed(2)} on ${(await import("node:os")).cpus().length} cores`,
  );
  const results: RunResult[] = [];
  const root = await mkdtemp(join(tmpdir(), "svdllm-cmem-"));
  try {
    for (const layers of model ? [0] : single ? [n] : [n, 2 * n]) {
      let shape: ModelShape, dir: string, fileBytes: number, generateSeconds = 0;
      if (model) {
        const c = JSON.parse(readFileSync(join(model, "config.json"), "utf8"));
        shape = {
          layers: c.num_hidden_layers,
          hidden: c.hidden_size,
          intermediate: c.intermediate_size,
          heads: c.num_attention_heads,
          kvHeads: c.num_key_value_heads,
          vocab: c.vocab_size,
        };
        dir = model;
        fileBytes = (await stat(join(model, "model.safetensors"))).size;
      } else {
        shape = shapeOf(layers);
        dir = join(root, `random-${layers}L`);
        await import("node:fs/promises").then((fs) => fs.mkdir(dir));
        const tg = performance.now();
        fileBytes = await generateCheckpoint(dir, shape, layers);
        generateSeconds = (performance.now() - tg) / 1000;
      }
      console.log(
        `${
          model ? "read" : "generated"
        } ${shape.layers} layers (d ${shape.hidden}, f ${shape.intermediate}, ${shape.heads}/${shape.kvHeads} ` +
          `heads, vocab ${shape.vocab}): ${(fileBytes / 1e9).toFixed(3)} GB in ${
            generateSeconds.toFixed(1)
          } s`,
      );
      for (const method of methods) {
        const out = join(root, `out-${shape.layers}L-${method}`);
        const r = await runChild(
          { input: dir, output: out, method, samples, seqlen, gc, socoSteps },
          { quiet: json, verbose },
        );
        const secondsPerStep = method === "soco" ? stepSeconds(r.stages) : undefined;
        results.push({ shape, fileBytes, generateSeconds, ...r, method, secondsPerStep });
        console.log(
          `  ${method}: peak RSS (VmHWM) ${mb(r.peakHwm)}, sampled ${
            mb(r.peakSampled)
          } (${r.peakStage}), report ${mb(r.reportPeak)}, ${r.seconds.toFixed(0)} s${
            secondsPerStep !== undefined ? `, ${secondsPerStep.toFixed(1)} s per training step` : ""
          }`,
        );
        if (!keep) await rm(out, { recursive: true, force: true });
      }
      if (!keep && !model) await rm(dir, { recursive: true, force: true });
    }
  } finally {
    if (!keep) await rm(root, { recursive: true, force: true });
    else console.log(`kept ${root}`);
  }
  if (json) {
    console.log(JSON.stringify(results.map(({ stages: _s, ...r }) => r)));
    return;
  }
  console.log(
    "\n| method | layers | file size | peak RSS (VmHWM) | RSS / file | report peak | compress time |",
  );
  console.log("|---|---:|---:|---:|---:|---:|---:|");
  for (const r of results) {
    console.log(
      `| ${r.method} | ${r.shape.layers} | ${(r.fileBytes / 1e9).toFixed(3)} GB | ${mb(r.peakHwm)} | ${
        (100 * r.peakHwm / r.fileBytes).toFixed(1)
      } % | ${mb(r.reportPeak)} | ${r.seconds.toFixed(0)} s |`,
    );
  }
  for (const layers of new Set(results.map((r) => r.shape.layers))) {
    const of = (m: string) => results.find((r) => r.method === m && r.shape.layers === layers);
    const svdllm = of("svdllm"), soco = of("soco");
    if (!svdllm || !soco) continue;
    const x = soco.peakHwm / svdllm.peakHwm;
    console.log(
      `SoCo (${socoSteps} steps, ${
        soco.secondsPerStep?.toFixed(1)
      } s per step) against svdllm, ${layers} layers, ` +
        `same run: peak ${mb(soco.peakHwm)} / ${mb(svdllm.peakHwm)} = ${x.toFixed(2)}× → ${
          x <= 2 ? "MET" : "NOT MET"
        } (goal ≤ 2×)`,
    );
  }
  if (results.length < 2 || methods.length > 1) return;
  const big = results[results.length - 1];
  const ratio = results[1].peakHwm / results[0].peakHwm;
  const share = big.peakHwm / big.fileBytes;
  console.log(
    `\nGoal 1 (peak RSS ≤ 25 % of a ~1.5 GB file): ${(100 * share).toFixed(1)} % of ${
      (big.fileBytes / 1e9).toFixed(2)
    } GB → ${share <= 0.25 ? "MET" : "NOT MET"}${
      big.fileBytes < 1.4e9 ? " (file smaller than 1.5 GB: indicative only)" : ""
    }`,
  );
  console.log(
    `Goal 2 (flat in layers): peak(${results[1].shape.layers}L) / peak(${results[0].shape.layers}L) = ${
      ratio.toFixed(3)
    } for a file ${(results[1].fileBytes / results[0].fileBytes).toFixed(2)}× larger → ${
      ratio <= 1.1 ? "MET" : "NOT MET"
    } (threshold 1.10); peak grew ${mb(results[1].peakHwm - results[0].peakHwm)} for ${
      mb(results[1].fileBytes - results[0].fileBytes)
    } more weights (${
      (100 * (results[1].peakHwm - results[0].peakHwm) / (results[1].fileBytes - results[0].fileBytes))
        .toFixed(1)
    } %)`,
  );
}

if (import.meta.main) await main();
