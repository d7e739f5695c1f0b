/**
 * Bundle the Worker for workerd: `deno run -A examples/workerd/build.ts [outDir]` (default
 * `examples/workerd/dist`) writes `worker.js` (esbuild, browser platform, ES module), `worker_nowasm.js`
 * (the same without the kernels), `svd_llm.wasm` and a `config.capnp` serving on 127.0.0.1:8787. Fails when
 * the bundle keeps a static `node:` import (workerd would refuse the script); the lazily imported `node:`
 * modules behind path-only entry points stay as dynamic imports and are listed.
 *
 * @module
 */
import * as esbuild from "esbuild";
import { copyFile, mkdir, stat, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

/** What {@link buildWorker} wrote. */
export interface WorkerBuild {
  /** The folder holding worker.js, worker_nowasm.js, svd_llm.wasm, config.capnp. */
  dir: string;
  /** Size of worker.js, bytes. */
  bytes: number;
  /** `node:` modules still imported dynamically (reached only from path inputs), sorted. */
  dynamicNode: string[];
}

/**
 * The workerd config serving `worker` (worker.js or worker_nowasm.js) on 127.0.0.1:`port`, with V8 flags
 * (e.g. `--expose-gc`, which lets the pipeline collect after each linear so the resident set shows what is
 * alive; the hosted runtime collects by itself as the isolate nears its limit).
 */
export function workerdConfig(port: number, worker = "worker.js", v8Flags: readonly string[] = []): string {
  const flags = v8Flags.length ? `\n  v8Flags = ${JSON.stringify(v8Flags)},` : "";
  return `using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .compressor),
    # The default outbound network allows public addresses only; the models are served from 127.0.0.1.
    (name = "net", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "main")],${flags}
);

const compressor :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "${worker}"),
    (name = "svd_llm.wasm", wasm = embed "svd_llm.wasm"),
  ],
  compatibilityDate = "2025-01-01",
  globalOutbound = "net",
);
`;
}

/**
 * The Worker's entry modules (kept here, not as files: `deno check` cannot resolve a `.wasm` default import).
 * workerd compiles `svd_llm.wasm` ahead of time (a CompiledWasm module in config.capnp), the only way
 * WebAssembly runs there; the second entry, without it, shows the TypeScript fallback.
 */
const ENTRIES = [
  [
    `import wasm from "./svd_llm.wasm";\nimport { makeWorker } from "./worker.ts";\nexport default makeWorker(wasm);\n`,
    "worker.js",
  ],
  [`import { makeWorker } from "./worker.ts";\nexport default makeWorker();\n`, "worker_nowasm.js"],
] as const;

/** Bundle the Worker into `dir` (see the module doc). */
export async function buildWorker(
  dir = fileURLToPath(new URL("./dist", import.meta.url)),
): Promise<WorkerBuild> {
  await mkdir(dir, { recursive: true });
  const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
  const dynamicNode = new Set<string>();
  for (const [entry, out] of ENTRIES) {
    const r = await esbuild.build({
      stdin: { contents: entry, resolveDir: here("."), sourcefile: out, loader: "js" },
      outfile: `${dir}/${out}`,
      bundle: true,
      format: "esm",
      platform: "browser",
      target: "es2022",
      external: ["*.wasm", "node:*"],
      metafile: true,
      logLevel: "error",
    });
    for (const o of Object.values(r.metafile.outputs)) {
      for (const imp of o.imports) {
        if (!imp.path.startsWith("node:")) continue;
        if (imp.kind !== "dynamic-import") {
          throw new Error(
            `build worker: ${out} keeps a static import of ${imp.path}; workerd cannot load it`,
          );
        }
        dynamicNode.add(imp.path);
      }
    }
  }
  await esbuild.stop();
  await copyFile(here("../../wasm/svd_llm.wasm"), `${dir}/svd_llm.wasm`);
  await writeFile(`${dir}/config.capnp`, workerdConfig(8787));
  const bytes = (await stat(`${dir}/worker.js`)).size;
  return { dir, bytes, dynamicNode: [...dynamicNode].sort() };
}

if (import.meta.main) {
  const b = await buildWorker(Deno.args[0]);
  console.log(`built ${b.dir}/worker.js (${(b.bytes / 1024).toFixed(0)} KiB)`);
  console.log(`dynamic node: imports left (path inputs only): ${b.dynamicNode.join(", ") || "none"}`);
}
