/** Write small GGUF v3 files for tests (F32 tensors, typed metadata). */

/** A typed metadata value. */
export type KvValue =
  | { type: "string"; value: string }
  | { type: "u32"; value: number }
  | { type: "f32"; value: number }
  | { type: "strings"; value: readonly string[] }
  | { type: "f32s"; value: ArrayLike<number> }
  | { type: "i32s"; value: ArrayLike<number> };

/** A tensor in PyTorch order (outermost first), float32. */
export interface GgufTensor {
  name: string;
  shape: readonly number[];
  data: Float32Array;
}

const enc = new TextEncoder();

/** Serialize metadata and tensors as a GGUF v3 file (alignment 32). */
export function writeGguf(kv: Record<string, KvValue>, tensors: readonly GgufTensor[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let size = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    size += b.length;
  };
  const u32 = (v: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    push(b);
  };
  const u64 = (v: number) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
    push(b);
  };
  const str = (s: string) => {
    const b = enc.encode(s);
    u64(b.length);
    push(b);
  };
  push(enc.encode("GGUF"));
  u32(3);
  u64(tensors.length);
  u64(Object.keys(kv).length);
  for (const [key, v] of Object.entries(kv)) {
    str(key);
    if (v.type === "string") {
      u32(8);
      str(v.value);
    } else if (v.type === "u32") {
      u32(4);
      u32(v.value);
    } else if (v.type === "f32") {
      u32(6);
      push(new Uint8Array(new Float32Array([v.value]).buffer));
    } else if (v.type === "strings") {
      u32(9);
      u32(8);
      u64(v.value.length);
      for (const s of v.value) str(s);
    } else {
      u32(9);
      u32(v.type === "f32s" ? 6 : 5);
      u64(v.value.length);
      const arr = v.type === "f32s" ? Float32Array.from(v.value) : Int32Array.from(v.value);
      push(new Uint8Array(arr.buffer));
    }
  }
  let offset = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    str(t.name);
    u32(t.shape.length);
    for (const n of [...t.shape].reverse()) u64(n); // GGUF lists the innermost dimension first
    u32(0); // F32
    u64(offset);
    offsets.push(offset);
    offset = Math.ceil((offset + t.data.byteLength) / 32) * 32;
  }
  push(new Uint8Array((32 - (size % 32)) % 32));
  const dataStart = size;
  tensors.forEach((t, i) => {
    push(new Uint8Array(dataStart + offsets[i] - size));
    push(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  });
  const out = new Uint8Array(size);
  let p = 0;
  for (const b of parts) {
    out.set(b, p);
    p += b.length;
  }
  return out;
}
