/**
 * The runtime table: for Deno, Bun, Node (an esbuild bundle: Node 20 cannot run TypeScript) and Cloudflare
 * workerd, what works (load, eval, compress from Blob/URL, threads, WebGPU), and the wall time and peak
 * resident memory of compressing stories260K and tinylm-brown with svdllm at 20 % removed (16 windows × 256
 * tokens of the bundled text). Each measurement is a fresh process; workerd's is the whole workerd process
 * (its RSS before the request is given too: the runtime's own share). Prints a Markdown table.
 *
 * ```sh
 * nice deno run -A bench/runtimes.ts [--samples 16] [--seqlen 256] [--only deno,bun,node,chromium,workerd]
 * ```
 *
 * The Chromium rows (the page's own thread, and a dedicated Worker) are measured by `runtimes_browser.ts`:
 * wall time in the page, CPU time and peak RSS of the page's renderer process (from /proc).
 *
 * @module
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { buildWorker } from "../examples/workerd/build.ts";
import { startWorkerd, workerdBinary } from "../examples/workerd/harness.ts";
import { serveFiles } from "../examples/workerd/serve_files.ts";
import { parseMultipart } from "../examples/workerd/multipart.ts";
import { measureInChromium } from "./runtimes_browser.ts";

const arg = (k: string, d: number) => {
  const i = Deno.args.indexOf(k);
  return i >= 0 ? Number(Deno.args[i + 1]) : d;
};
const SAMPLES = arg("--samples", 16), SEQLEN = arg("--seqlen", 256);
/** `--only deno,chromium`: these rows only (names' prefixes, comma-separated). */
const ONLY = Deno.args.includes("--only")
  ? Deno.args[Deno.args.indexOf("--only") + 1].toLowerCase().split(",")
  : null;
/** `--gc`: start workerd with V8's --expose-gc, so the pipeline collects after each linear (see build.ts). */
const GC = Deno.args.includes("--gc");
const wanted = (runtime: string) => !ONLY || ONLY.some((o) => runtime.toLowerCase().startsWith(o));
const repo = (p: string) => fileURLToPath(new URL(`../${p}`, import.meta.url));
const TINYLM = "/work/shared/models/tinylm-brown";
const TEXT = repo("data/tinystories-valid.part1.txt");
const models = [
  { name: "stories260K", path: repo("models/stories260K/stories260K.gguf"), url: "stories260K.gguf" },
  ...(existsSync(TINYLM) ? [{ name: "tinylm-brown", path: TINYLM, url: "tinylm-brown/" }] : []),
];

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
    let out = "", err = "";
    c.stdout!.on("data", (b) => (out += b));
    c.stderr!.on("data", (b) => (err += b));
    c.once(
      "exit",
      (code) =>
        code === 0
          ? resolve(out)
          : reject(new Error(`${cmd} ${args.join(" ")} exited ${code}: ${err.slice(-400)}`)),
    );
  });
}

interface Row {
  runtime: string;
  works: Record<string, string>;
  results: Record<string, { seconds: number; cpuSeconds: number; peakMiB: number; baseMiB?: number }>;
}

const mib = (b: number) => b / 2 ** 20;
const tmp = await mkdtemp(join(tmpdir(), "svd-runtimes-"));
const site = join(tmp, "site");
await Deno.mkdir(site);
await Deno.symlink(repo("models/stories260K/stories260K.gguf"), join(site, "stories260K.gguf"));
if (existsSync(TINYLM)) await Deno.symlink(TINYLM, join(site, "tinylm-brown"));
await Deno.symlink(TEXT, join(site, "text.txt"));
const files = await serveFiles(site);
const rows: Row[] = [];
try {
  const nodeBundle = join(tmp, "child.mjs");
  await esbuild.build({
    entryPoints: [repo("bench/runtimes_child.ts")],
    outfile: nodeBundle,
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    logLevel: "error",
  });
  await esbuild.stop();
  const runtimes: [string, string, string[]][] = [
    ["Deno 2.9.6", repo("node_modules/.bin/deno"), ["run", "-A", repo("bench/runtimes_child.ts")]],
    ["Bun 1.4.5", repo("node_modules/.bin/bun"), ["run", repo("bench/runtimes_child.ts")]],
    [`Node ${(await run("node", ["--version"])).trim()} (esbuild bundle)`, "node", [nodeBundle]],
  ];
  for (const [runtime, cmd, pre] of runtimes) {
    if (!wanted(runtime)) continue;
    const row: Row = { runtime, works: {}, results: {} };
    for (const m of models) {
      let r;
      try {
        const out = await run(cmd, [
          ...pre,
          m.path,
          `${files.origin}/${m.url}`,
          TEXT,
          `${SAMPLES}`,
          `${SEQLEN}`,
        ]);
        r = JSON.parse(out.trim().split("\n").pop()!);
      } catch (e) {
        console.error(`${runtime} ${m.name}: ${(e as Error).message}`);
        row.works.error = (e as Error).message.split("\n")[0].slice(0, 120);
        continue;
      }
      row.results[m.name] = { seconds: r.seconds, cpuSeconds: r.cpuSeconds, peakMiB: mib(r.peakRssBytes) };
      for (const [k, v] of Object.entries(r.works as Record<string, string>)) {
        if (!row.works[k] || !row.works[k].startsWith("yes")) row.works[k] = v;
      }
      console.error(`${runtime} ${m.name}: ${r.seconds.toFixed(1)} s, ${mib(r.peakRssBytes).toFixed(0)} MiB`);
    }
    rows.push(row);
  }
  const chromium = ["/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium/chromium"].find(
    existsSync,
  );
  for (const mode of ["page", "worker"] as const) {
    const runtime = `Chromium ${mode === "page" ? "page (main thread)" : "Worker"}`;
    if (!chromium || !wanted(runtime)) continue;
    const bundle = join(tmp, "svd_llm.js");
    if (!existsSync(bundle)) {
      await run(repo("node_modules/.bin/deno"), [
        "bundle",
        "--platform",
        "browser",
        "-o",
        bundle,
        repo("mod.ts"),
      ]);
    }
    const version = (await run(chromium, ["--version"])).trim().replace(/^\D*/, "");
    const row: Row = { runtime: `${runtime}, headless ${version}`, works: {}, results: {} };
    for (const m of models) {
      try {
        const text = await Deno.readTextFile(TEXT);
        const c = await measureInChromium(
          chromium,
          await Deno.readFile(bundle),
          m,
          mode,
          text,
          SAMPLES,
          SEQLEN,
        );
        row.results[m.name] = {
          seconds: c.seconds,
          cpuSeconds: c.cpuSeconds,
          peakMiB: c.peakMiB,
          baseMiB: c.baseMiB,
        };
        for (const [k, v] of Object.entries(c.works)) {
          row.works[k] = row.works[k] && row.works[k] !== v ? `${row.works[k]}; ${v}` : v;
        }
        console.error(`${runtime} ${m.name}: ${c.seconds.toFixed(1)} s, ${c.peakMiB.toFixed(0)} MiB`);
      } catch (e) {
        console.error(`${runtime} ${m.name}: ${(e as Error).message}`);
        row.works.error = (e as Error).message.split("\n")[0].slice(0, 120);
      }
    }
    rows.push(row);
  }
  const binary = workerdBinary();
  if (binary && wanted("workerd")) {
    const build = await buildWorker(join(tmp, "dist"));
    const row: Row = {
      runtime: `workerd (npm workerd, 1 isolate${GC ? ", --expose-gc" : ""})`,
      works: {
        "load+eval (URL)": "load: yes (by Range); eval: not wired in the Worker",
        "compress Blob": "not tried (the Worker takes URLs)",
        "compress URL": "yes",
        threads: "no: workerd has no Worker threads",
        WebGPU: "no",
      },
      results: {},
    };
    for (const m of models) {
      const w = await startWorkerd(binary, build.dir, "worker.js", 30_000, GC ? ["--expose-gc"] : []);
      try {
        const base = await w.rss();
        const t0 = performance.now(), c0 = await w.cpuSeconds();
        const res = await fetch(
          `${w.origin}/compress?model=${files.origin}/${m.url}&text=${files.origin}/text.txt&method=svdllm` +
            `&ratio=0.2&samples=${SAMPLES}&seqlen=${SEQLEN}`,
        );
        const body = new Uint8Array(await res.arrayBuffer());
        if (res.status !== 200) throw new Error(`workerd ${m.name}: ${new TextDecoder().decode(body)}`);
        parseMultipart(body, res.headers.get("content-type") ?? ""); // throws unless complete
        const seconds = (performance.now() - t0) / 1000;
        const cpuSeconds = (await w.cpuSeconds()) - c0;
        row.results[m.name] = { seconds, cpuSeconds, peakMiB: mib(await w.peakRss()), baseMiB: mib(base) };
        console.error(`workerd ${m.name}: ${seconds.toFixed(1)} s, ${mib(await w.peakRss()).toFixed(0)} MiB`);
      } finally {
        await w.close();
      }
    }
    rows.push(row);
  }
} finally {
  await files.close();
  await rm(tmp, { recursive: true, force: true });
}

const keys = ["load+eval (URL)", "compress Blob", "compress URL", "threads", "WebGPU"];
const cell = (r: Row, m: string) => {
  const x = r.results[m];
  if (!x) return "—";
  return `${x.seconds.toFixed(1)} s (CPU ${x.cpuSeconds.toFixed(1)} s), ${x.peakMiB.toFixed(0)} MiB` +
    (x.baseMiB !== undefined ? ` (runtime alone ${x.baseMiB.toFixed(0)})` : "");
};
console.log(`| runtime | ${keys.join(" | ")} | ${models.map((m) => m.name).join(" | ")} |`);
console.log(`|${" --- |".repeat(keys.length + models.length + 1)}`);
for (const r of rows) {
  console.log(
    `| ${r.runtime} | ${keys.map((k) => r.works[k] ?? "—").join(" | ")} | ${
      models.map((m) => cell(r, m.name)).join(" | ")
    } |`,
  );
}
console.log(
  `\nsvdllm, 20 % removed, ${SAMPLES}×${SEQLEN} calibration tokens of data/tinystories-valid.part1.txt, one ` +
    `thread; wall time, CPU time (user+system) and peak RSS (VmHWM) of a fresh process per cell. Deno, Bun, ` +
    `Node keep the output in memory (memorySink); the Worker streams it to the client (multipart). Chromium: ` +
    `wall time measured in the page, CPU time and peak RSS (VmHWM) of the page's renderer process, which ` +
    `holds the page, its Workers and their wasm heaps (the browser and GPU processes are not counted).`,
);
