// What a JSR user gets: the file set `deno publish --dry-run` lists, served from 127.0.0.1 with the bare npm
// specifiers mapped by an import map (JSR rewrites "@huggingface/tokenizers" to the npm: specifier of
// deno.json's "imports"; here it maps to the same pinned version served from node_modules, so the test
// downloads nothing). A child Deno, with no local config, lock or cache, then: imports every export but
// "./cli" from that URL and compresses a layer with `asvd`; runs `cli.ts --help`; runs `cli.ts eval` on the
// served model and text, on local files and on the bundled demo (found beside cli.ts on the server), each
// printing the local CLI's figures; and compresses stories260K with the URL's `compress()` into a folder that
// the local library reloads to the same perplexity, with the same weight bytes as a compression done here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deno, exportsOf, root, run, serveFiles } from "./_deno.ts";
import { compress } from "../../src/pipeline/compress.ts";
import { loadModel } from "../../src/model/load.ts";
import { perplexity } from "../../src/eval/perplexity.ts";

/** Files `deno publish --dry-run` would upload, relative to the root. */
async function publishedFiles(): Promise<string[]> {
  const r = await run(deno, ["publish", "--dry-run", "--allow-dirty", "--no-check", "--allow-slow-types"]);
  assert.equal(r.code, 0, `deno publish --dry-run failed:\n${r.err}`);
  const prefix = new URL(".", `file://${root}`).href;
  return (r.out + r.err).split("\n")
    .map((l) => l.trim().match(/^(file:\/\/\S+)/)?.[1])
    .filter((u): u is string => !!u && u.startsWith(prefix))
    .map((u) => decodeURIComponent(u.slice(prefix.length)));
}

/** Bare specifiers (not relative, not `node:`/`npm:`/URLs) imported by the published TypeScript files. */
function bareImports(files: string[]): Set<string> {
  const out = new Set<string>();
  for (const f of files.filter((f) => f.endsWith(".ts"))) {
    const code = readFileSync(join(root, f), "utf8");
    for (const m of code.matchAll(/(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']/g)) {
      if (!/^(\.|\/|node:|npm:|jsr:|https?:|data:)/.test(m[1])) out.add(m[1]);
    }
  }
  return out;
}

test("the published file set is what users need: sources, kernels, README, LICENSE, the demo model and text", async () => {
  const files = await publishedFiles();
  for (const need of ["mod.ts", "cli.ts", "wasm/svd_llm.wasm", "README.md", "LICENSE"]) {
    assert.ok(files.includes(need), `${need} is not published`);
  }
  // cli.ts demo runs on these two without arguments.
  assert.ok(files.includes("models/stories260K/stories260K.gguf"));
  assert.ok(files.includes("data/tinystories-valid.part1.txt"));
  const stray = files.filter((f) => /^(test|bench|tools|notebooks|examples|node_modules|\.)/.test(f));
  assert.deepEqual(stray, [], "development files would be published");
  for (const [, file] of exportsOf()) assert.ok(files.includes(file.replace(/^\.\//, "")), `${file} missing`);
  const bytes = files.reduce((s, f) => s + readFileSync(join(root, f)).length, 0);
  assert.ok(bytes < 3e6, `the package would be ${bytes} bytes`);
});

const CHILD = `
const origin = ORIGIN;
for (const file of EXPORTS) await import(origin + "/" + file);
const { asvd, matrix } = await import(origin + "/mod.ts");
const w = matrix(6, 5, Float32Array.from({ length: 30 }, (_, i) => Math.sin(i)));
const layer = asvd(w);
layer.addBatch(matrix(16, 5, Float32Array.from({ length: 80 }, (_, i) => Math.cos(i * 0.7))));
const { a, b } = layer.compress({ ratio: { kept: 0.8 } });
console.log(JSON.stringify({ a: [a.rows, a.cols], b: [b.rows, b.cols] }));
`;

/** The published file set served from 127.0.0.1 as JSR serves it, and how a child Deno runs code from it. */
interface JsrSite {
  origin: string;
  /** `deno run` flags: the import map, no local config, lock or cache. */
  flags: string[];
  env: Record<string, string>;
  /** A scratch folder, removed by `close`. */
  dir: string;
  close(): Promise<void>;
}

/** Serve the published files and the npm entries their bare imports need, with the import map JSR makes. */
async function serveJsr(): Promise<JsrSite> {
  const files = await publishedFiles();
  const cfg = JSON.parse(readFileSync(join(root, "deno.json"), "utf8")) as {
    imports: Record<string, string>;
  };
  const served = [...files];
  const imports: Record<string, string> = {};
  for (const name of bareImports(files)) {
    const target = cfg.imports[name];
    assert.ok(
      target?.startsWith("npm:"),
      `published code imports "${name}", which deno.json maps to no npm package`,
    );
    const version = target.match(/@([^@/]+)$/)?.[1];
    const pkgDir = `node_modules/${name}`;
    const pkg = JSON.parse(readFileSync(join(root, pkgDir, "package.json"), "utf8"));
    assert.equal(
      pkg.version,
      version,
      `${name}: node_modules holds ${pkg.version}, deno.json pins ${version}`,
    );
    const entry = `${pkgDir}/${pkg.module ?? pkg.main}`;
    served.push(entry);
    imports[name] = entry;
  }
  const dir = mkdtempSync(join(tmpdir(), "svd-llm-jsr-"));
  const map = { imports: {} as Record<string, string> };
  const server = await serveFiles(root, served, {
    "/import_map.json": { type: "application/json", body: () => JSON.stringify(map) },
  });
  for (const [name, entry] of Object.entries(imports)) map.imports[name] = `${server.origin}/${entry}`;
  return {
    origin: server.origin,
    flags: ["run", "-A", "--no-config", "--no-lock", "--import-map", `${server.origin}/import_map.json`],
    env: { DENO_DIR: join(dir, "deno_dir") }, // nothing from an earlier run's cache
    dir,
    close: async () => {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test("a JSR-like URL: every export imports from http://127.0.0.1, asvd compresses, cli.ts --help runs", async () => {
  const site = await serveJsr();
  try {
    const { origin, flags, env, dir } = site;
    const script = join(dir, "child.mjs");
    const exported = exportsOf().filter(([n]) => n !== "./cli").map(([, f]) => f.replace(/^\.\//, ""));
    writeFileSync(
      script,
      CHILD.replace("ORIGIN", JSON.stringify(origin)).replace("EXPORTS", JSON.stringify(exported)),
    );
    const lib = await run(deno, [...flags, script], { cwd: dir, env });
    assert.equal(lib.code, 0, `importing the library from ${origin} failed:\n${lib.err}`);
    // Rank for 80 % of the parameters of a 6×5 weight: floor(6·5·0.8 / (6 + 5)) = 2.
    assert.deepEqual(JSON.parse(lib.out.trim().split("\n").pop()!), { a: [6, 2], b: [2, 5] });

    const cli = await run(deno, [...flags, `${origin}/cli.ts`, "--help"], { cwd: dir, env });
    assert.equal(cli.code, 0, `cli.ts --help from ${origin} failed:\n${cli.err}`);
    assert.match(cli.out + cli.err, /usage:/);
  } finally {
    await site.close();
  }
});

const MODEL = "models/stories260K/stories260K.gguf";
const TEXT = "data/tinystories-valid.part1.txt";

/** The figures of `cli.ts eval`'s line "NAME: T tokens in W windows of N: mean NLL X, ppl Y [time]". */
function evalLine(out: string, what: string): { tokens: number; windows: number; nll: string; ppl: string } {
  const m = out.match(/: (\d+) tokens in (\d+) windows of \d+: mean NLL ([\d.]+), ppl ([\d.]+)/);
  assert.ok(m, `${what} printed no result line:\n${out}`);
  return { tokens: Number(m[1]), windows: Number(m[2]), nll: m[3], ppl: m[4] };
}

test(
  "a JSR-like URL: cli.ts eval prints the local CLI's perplexity, on the served model and text and on local files",
  {
    timeout: 600_000,
  },
  async () => {
    const site = await serveJsr();
    try {
      const { origin, flags, env, dir } = site;
      const args = ["--window", "512"];
      const local = await run(deno, [
        "run",
        "-A",
        join(root, "cli.ts"),
        "eval",
        join(root, MODEL),
        "--text",
        join(root, TEXT),
        ...args,
      ]);
      assert.equal(local.code, 0, `the local cli.ts eval failed:\n${local.err}`);
      const want = evalLine(local.out, "the local cli.ts eval");
      assert.equal(want.tokens, 5148);
      assert.equal(want.ppl, "5.3885");
      // The model and the text fetched from the same server (HTTP Range for the model), then local paths.
      const inputs = [
        [`${origin}/${MODEL}`, `${origin}/${TEXT}`],
        [join(root, MODEL), join(root, TEXT)],
      ];
      for (const [model, text] of inputs) {
        const r = await run(deno, [...flags, `${origin}/cli.ts`, "eval", model, "--text", text, ...args], {
          cwd: dir,
          env,
        });
        assert.equal(r.code, 0, `cli.ts eval ${model} from ${origin} failed:\n${r.err}`);
        assert.deepEqual(evalLine(r.out, `cli.ts eval ${model} from ${origin}`), want);
      }
      // No arguments: the bundled model and text, found beside cli.ts on the server (no file: URL there).
      const demo = await run(deno, [...flags, `${origin}/cli.ts`, "eval", ...args], { cwd: dir, env });
      assert.equal(demo.code, 0, `cli.ts eval (bundled model) from ${origin} failed:\n${demo.err}`);
      assert.deepEqual(evalLine(demo.out, `cli.ts eval from ${origin}`), want);
      console.log(`cli.ts eval from ${origin}: ppl ${want.ppl} (${want.tokens} tokens), as the local CLI`);
    } finally {
      await site.close();
    }
  },
);

/** svdllm at 20 %, calibrated on 8 windows of 128 tokens of the bundled text (as JSON for the child). */
const OPTS = { method: "svdllm", ratio: { removed: 0.2 }, samples: 8, seqlen: 128 } as const;
const optionsOf = (text: string) => ({
  method: OPTS.method,
  ratio: OPTS.ratio,
  calibration: { text, samples: OPTS.samples, seqlen: OPTS.seqlen },
});

const COMPRESS_CHILD = `
const origin = ORIGIN, out = OUT, o = OPTS;
const { compress, loadModel, perplexity } = await import(origin + "/mod.ts");
const text = await (await fetch(origin + "/TEXT")).text();
const calibration = { text, samples: o.samples, seqlen: o.seqlen };
await compress(origin + "/MODEL", out, { method: o.method, ratio: o.ratio, calibration });
const m = await loadModel(out);
const { ppl } = await perplexity(m, m.tokenizer.encode(text, { bos: true }), { window: 512 });
await m.close();
console.log(JSON.stringify({ ppl }));
`;

test(
  "a JSR-like URL: compress() imported from it writes a folder the local library reloads, equal to a local compress",
  {
    timeout: 600_000,
  },
  async () => {
    const site = await serveJsr();
    try {
      const { origin, flags, env, dir } = site;
      const text = readFileSync(join(root, TEXT), "utf8");
      const remote = join(dir, "from-url"), here = join(dir, "here");
      const script = join(dir, "compress.mjs");
      writeFileSync(
        script,
        COMPRESS_CHILD.replace("ORIGIN", JSON.stringify(origin)).replace("OUT", JSON.stringify(remote))
          .replace("OPTS", JSON.stringify(OPTS)).replace("TEXT", TEXT).replace("MODEL", MODEL),
      );
      const child = await run(deno, [...flags, script], { cwd: dir, env });
      assert.equal(child.code, 0, `compress() imported from ${origin} failed:\n${child.err}`);
      const theirs = JSON.parse(child.out.trim().split("\n").pop()!) as { ppl: number };

      await compress(join(root, MODEL), here, optionsOf(text));
      assert.deepEqual(readdirSync(remote).sort(), readdirSync(here).sort());
      // config.json holds timings; the weights are the same bytes.
      assert.ok(
        readFileSync(join(remote, "model.safetensors")).equals(readFileSync(join(here, "model.safetensors"))),
        "the weights compressed from the URL differ from those compressed here",
      );
      const m = await loadModel(remote);
      let ppl: number;
      try {
        ppl = (await perplexity(m, m.tokenizer.encode(text, { bos: true }), { window: 512 })).ppl;
      } finally {
        await m.close();
      }
      assert.equal(ppl, theirs.ppl, "the local library reads the folder differently from the URL's library");
      assert.ok(ppl > 5.3885 && Number.isFinite(ppl), `compressed ppl ${ppl}`);
      console.log(`compress() from ${origin}: reloaded here, ppl ${ppl.toFixed(6)} (dense 5.3885)`);
    } finally {
      await site.close();
    }
  },
);
