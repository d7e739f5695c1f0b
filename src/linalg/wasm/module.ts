/**
 * Loading the kernel module: base64 → bytes → `WebAssembly.Module`, optionally with its memory import
 * rewritten to a shared memory. No side effects; used by the runtime and by worker threads.
 *
 * Why the rewrite: clang builds the module importing an ordinary (unshared) memory, which every runtime
 * accepts. Threads need the same code over a `shared: true` memory, and a module only links against a shared
 * memory if its import says so; the flag lives in the import section, so we patch those few bytes instead
 * of shipping a second binary.
 *
 * @module
 */
import { WASM_BASE64 } from "./kernels_wasm.ts";

/** Largest wasm32 memory, in 64 KiB pages (4 GiB). */
export const MAX_PAGES = 65536;

/** The module bytes, decoded from the embedded base64. */
export function wasmBytes(): Uint8Array<ArrayBuffer> {
  const bin = atob(WASM_BASE64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function readLeb(b: Uint8Array, pos: { p: number }): number {
  let r = 0, s = 0, byte: number;
  do {
    byte = b[pos.p++];
    r += (byte & 0x7f) * 2 ** s;
    s += 7;
  } while (byte & 0x80);
  return r;
}

function leb(v: number): number[] {
  const o: number[] = [];
  do {
    let byte = v & 0x7f;
    v = Math.floor(v / 128);
    if (v) byte |= 0x80;
    o.push(byte);
  } while (v);
  return o;
}

/**
 * Copy of the module bytes with its memory import declared shared with maximum `maxPages` (a shared memory
 * must declare a maximum, and the host memory's maximum must not exceed it).
 */
export function withSharedMemoryImport(
  bytes: Uint8Array,
  maxPages: number = MAX_PAGES,
): Uint8Array<ArrayBuffer> {
  const out: number[] = Array.from(bytes.subarray(0, 8));
  const pos = { p: 8 };
  let patched = false;
  while (pos.p < bytes.length) {
    const id = bytes[pos.p++];
    const size = readLeb(bytes, pos);
    const start = pos.p;
    if (id !== 2) {
      out.push(id, ...leb(size));
      for (let i = start; i < start + size; i++) out.push(bytes[i]);
      pos.p = start + size;
      continue;
    }
    // Import section: vec(import), import = module name, field name, kind, description.
    const body: number[] = [];
    const n = readLeb(bytes, pos);
    body.push(...leb(n));
    for (let i = 0; i < n; i++) {
      for (let s = 0; s < 2; s++) {
        const len = readLeb(bytes, pos);
        body.push(...leb(len));
        for (let j = 0; j < len; j++) body.push(bytes[pos.p++]);
      }
      const kind = bytes[pos.p++];
      body.push(kind);
      if (kind === 0) body.push(...leb(readLeb(bytes, pos)));
      else if (kind === 1 || kind === 2) {
        if (kind === 1) body.push(bytes[pos.p++]); // reference type of a table
        const flags = bytes[pos.p++];
        const min = readLeb(bytes, pos);
        const max = flags & 1 ? readLeb(bytes, pos) : undefined;
        if (kind === 2) {
          body.push(3, ...leb(min), ...leb(maxPages));
          patched = true;
        } else body.push(flags, ...leb(min), ...(max === undefined ? [] : leb(max)));
      } else if (kind === 3) body.push(bytes[pos.p++], bytes[pos.p++]);
      else throw new Error(`share wasm memory: unknown import kind ${kind}`);
    }
    if (pos.p !== start + size) throw new Error("share wasm memory: import section parse ended off its size");
    out.push(id, ...leb(body.length), ...body);
  }
  if (!patched) throw new Error("share wasm memory: the module imports no memory");
  return new Uint8Array(out);
}

/** Compile the kernels; `shared` selects the shared-memory import. */
export function compileKernels(shared: boolean): Promise<WebAssembly.Module> {
  const bytes = wasmBytes();
  return WebAssembly.compile(shared ? withSharedMemoryImport(bytes) : bytes);
}
