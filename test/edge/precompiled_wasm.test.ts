// Runtimes that forbid compiling WebAssembly from bytes (Cloudflare workerd; pages whose CSP lacks
// 'wasm-unsafe-eval'): simulated in a child Deno by making every compiling entry point throw the way workerd
// does, after compiling wasm/svd_llm.wasm once beforehand (what workerd's module import gives a Worker).
// Without the precompiled module the library loads, runs products in TypeScript and warns once, in one line;
// with `initLinalg({ wasmModule })` it is back on the wasm kernels; a wrong module is refused by name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { deno, root, run } from "./_deno.ts";

const CHILD = `
const precompiled = new WebAssembly.Module(await Deno.readFile(WASM_PATH));
const notOurs = new WebAssembly.Module(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]));
const Module = WebAssembly.Module;
const forbidden = () => new WebAssembly.CompileError("WebAssembly.compile(): Wasm code generation disallowed by embedder");
WebAssembly.compile = () => Promise.reject(forbidden());
WebAssembly.compileStreaming = () => Promise.reject(forbidden());
WebAssembly.validate = () => { throw forbidden(); };
WebAssembly.Module = new Proxy(Module, { construct() { throw forbidden(); } });
const instantiate = WebAssembly.instantiate;
WebAssembly.instantiate = (src, imports) =>
  src instanceof Module ? instantiate(src, imports) : Promise.reject(forbidden());

const { initLinalg, linalgInfo, matmul, matrix } = await import(LIB);
const out = {};
out.before = linalgInfo();
const fill = (n, s) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + s));
const a = matrix(64, 48, fill(64 * 48, 1)), b = matrix(40, 48, fill(40 * 48, 2));
const ts = matmul(a, b, { transB: true }).data;
matmul(b, a, { transB: true }); // a second fallback product: still one warning
console.error("--- products done ---");
for (const bad of [{}, notOurs]) {
  try {
    await initLinalg({ wasmModule: bad });
    out.badAccepted = true;
  } catch (e) {
    (out.badErrors ??= []).push(e.constructor.name + ": " + e.message);
  }
}
out.after = await initLinalg({ wasmModule: precompiled, threads: 2 });
const wasm = matmul(a, b, { transB: true }).data;
out.maxDiff = Math.max(...ts.map((v, i) => Math.abs(v - wasm[i])));
out.maxAbs = Math.max(...ts.map(Math.abs));
console.log(JSON.stringify(out));
`;

test("compiling forbidden: TypeScript fallback with one warning line; initLinalg({ wasmModule }) restores wasm", async () => {
  const dir = mkdtempSync(join(tmpdir(), "svd-llm-precompiled-"));
  try {
    const script = join(dir, "child.mjs");
    writeFileSync(
      script,
      CHILD.replace("WASM_PATH", JSON.stringify(join(root, "wasm/svd_llm.wasm")))
        .replace("LIB", JSON.stringify(pathToFileURL(join(root, "src/linalg/mod.ts")).href)),
    );
    const r = await run(deno, ["run", "-A", script]);
    assert.equal(r.code, 0, `child failed:\n${r.err}`);
    const out = JSON.parse(r.out.trim().split("\n").pop()!);
    assert.equal(out.before.backend, "ts");
    assert.equal(out.before.simd, false);
    const [beforeProducts] = r.err.split("--- products done ---");
    const warnings = beforeProducts.split("\n").filter((l: string) =>
      l.includes("@svd/llm: WebAssembly unavailable")
    );
    assert.equal(warnings.length, 1, `expected one warning line, got:\n${r.err}`);
    assert.match(warnings[0], /disallowed by embedder/);
    assert.match(warnings[0], /initLinalg\(\{ wasmModule \}\)/);
    assert.equal(r.err.split("\n").filter((l: string) => l.includes("WebAssembly unavailable")).length, 1);
    assert.equal(out.badAccepted, undefined, "a wrong wasmModule was accepted");
    assert.equal(out.badErrors.length, 2);
    assert.match(out.badErrors[0], /^TypeError: .*not a WebAssembly\.Module/);
    assert.match(out.badErrors[1], /^TypeError: .*not @svd\/llm's wasm\/svd_llm\.wasm \(exports no sgemm/);
    assert.equal(out.after.backend, "wasm");
    assert.equal(out.after.simd, true);
    // The committed module imports an unshared memory: no threads from it, and the note says why.
    assert.equal(out.after.threads, 1);
    assert.ok(out.after.threadsNote, "threads refused without a note");
    // wasm accumulates in float32, the TypeScript path in float64: k·ε₃₂·max|a|·max|b| bounds the difference.
    assert.ok(out.maxDiff <= 48 * 2 ** -23 * 4, `wasm and TypeScript products differ by ${out.maxDiff}`);
    assert.ok(out.maxAbs > 1, "the product is trivially small");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
