import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import fc from "../_fc.ts";
import { wasmRuntime } from "../../src/linalg/wasm/runtime.ts";
import { wasmBytes, withSharedMemoryImport } from "../../src/linalg/wasm/module.ts";
import { WASM_BYTE_LENGTH, WASM_CLANG_VERSION } from "../../src/linalg/wasm/kernels_wasm.ts";
import { buildWasm, clangVersion, TS_PATH, WASM_PATH } from "../../tools/build_wasm.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

function sectionIds(bytes: Uint8Array): number[] {
  const ids: number[] = [];
  let p = 8;
  while (p < bytes.length) {
    ids.push(bytes[p++]);
    let size = 0, s = 0, b: number;
    do {
      b = bytes[p++];
      size += (b & 0x7f) * 2 ** s;
      s += 7;
    } while (b & 0x80);
    p += size;
  }
  return ids;
}

test("the embedded module equals wasm/svd_llm.wasm and keeps the kernel convention", () => {
  const bytes = wasmBytes();
  assert.equal(bytes.length, WASM_BYTE_LENGTH);
  assert.deepEqual(bytes, new Uint8Array(readFileSync(root + WASM_PATH)));
  // No data section: kernels keep no static state, so instances on one shared memory cannot collide.
  assert.ok(!sectionIds(bytes).includes(11), "a wasm/*.c file has static data (see runtime.ts convention)");
  const mod = new WebAssembly.Module(bytes);
  assert.deepEqual(WebAssembly.Module.imports(mod), [{ module: "env", name: "memory", kind: "memory" }]);
  const names = WebAssembly.Module.exports(mod).map((e) => e.name);
  for (
    const n of ["sgemm", "sgemm_work_size", "dgemm", "dgemm_work_size", "__stack_pointer", "__heap_base"]
  ) {
    assert.ok(names.includes(n), `missing export ${n}`);
  }
});

test("the shared-memory rewrite links against a shared memory only, and the original only against unshared", () => {
  const bytes = wasmBytes();
  const sharedMem = new WebAssembly.Memory(
    { initial: 4, maximum: 100, shared: true } as WebAssembly.MemoryDescriptor,
  );
  const plainMem = new WebAssembly.Memory({ initial: 4 });
  const patched = new WebAssembly.Module(withSharedMemoryImport(bytes));
  assert.ok(new WebAssembly.Instance(patched, { env: { memory: sharedMem } }));
  assert.throws(() => new WebAssembly.Instance(patched, { env: { memory: plainMem } }));
  const plain = new WebAssembly.Module(bytes);
  assert.ok(new WebAssembly.Instance(plain, { env: { memory: plainMem } }));
  assert.throws(() => new WebAssembly.Instance(plain, { env: { memory: sharedMem } }));
  assert.equal(withSharedMemoryImport(bytes).length, bytes.length + 3, "flag + 3-byte LEB maximum");
});

test("allocator: aligned, disjoint, coalescing, grows memory, scoped frees", () => {
  const rt = wasmRuntime();
  assert.ok(rt, "the wasm runtime should load in Deno and Bun");
  const base = rt.bytesInUse();
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 100000 }), fc.boolean()), { maxLength: 40 }),
      (ops) => {
        const live: { p: number; n: number; tag: number }[] = [];
        for (const [n, freeOne] of ops) {
          if (freeOne && live.length) {
            const [x] = live.splice(n % live.length, 1);
            // Its contents survived every other allocation: blocks never overlap.
            const v = rt.i32(x.p, x.n >> 2);
            for (let i = 0; i < v.length; i++) assert.equal(v[i], x.tag);
            rt.free(x.p);
          } else {
            const p = rt.alloc(n);
            assert.equal(p % 64, 0);
            assert.ok(p >= 65536, "the heap starts after the C stack");
            assert.ok(p + n <= rt.memory.buffer.byteLength);
            rt.i32(p, n >> 2).fill(p);
            live.push({ p, n, tag: p });
          }
        }
        for (const x of live) rt.free(x.p);
        assert.equal(rt.bytesInUse(), base);
      },
    ),
    { numRuns: 60 },
  );
  // After everything is freed one range remains: a block as large as all memory past the heap start fits.
  if (base === 0) {
    const p = rt.alloc(rt.memory.buffer.byteLength - 65536);
    assert.equal(p, 65536);
    rt.free(p);
  }
  // Growth: a block larger than the memory grows it, and views taken afterwards see the new buffer.
  const before = rt.memory.buffer.byteLength;
  const big = rt.alloc(before + 1000);
  assert.ok(rt.memory.buffer.byteLength > before);
  rt.f32(big, 4).set([1, 2, 3, 4]);
  assert.deepEqual(Array.from(rt.getF32(big, 4)), [1, 2, 3, 4]);
  rt.free(big);
  assert.throws(() => rt.free(12345), /not an allocated offset/);
  assert.throws(() => rt.fn("no_such_kernel"), /no function "no_such_kernel"/);
  const leaked = rt.bytesInUse();
  assert.throws(() =>
    rt.scoped((s) => {
      s.putF64([1, 2, 3]);
      s.allocF32(1000);
      throw new Error("boom");
    }), /boom/);
  assert.equal(rt.bytesInUse(), leaked);
});

test("the committed wasm is reproduced byte for byte from wasm/*.c", (t) => {
  const have = clangVersion();
  if (have === null) {
    console.log("skip: clang is not installed (apt-get install clang lld) — cannot rebuild the wasm");
    t.skip("clang not installed");
    return;
  }
  if (have !== WASM_CLANG_VERSION) {
    console.log(`skip: clang is "${have}", the committed build used "${WASM_CLANG_VERSION}"`);
    t.skip("different clang version");
    return;
  }
  const b = buildWasm();
  assert.deepEqual(b.wasm, new Uint8Array(readFileSync(root + WASM_PATH)), `${WASM_PATH} is stale: rebuild`);
  assert.equal(b.ts, readFileSync(root + TS_PATH, "utf8"), `${TS_PATH} is stale: run tools/build_wasm.ts`);
});
