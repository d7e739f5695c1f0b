/**
 * A minimal protocol-buffers writer: enough of the wire format (varints, fixed32 floats, length-delimited bytes
 * and nested messages) to write an ONNX model, with **streaming** of large byte fields.
 *
 * Why our own writer and not `protobufjs` / `onnx-proto`: those build the whole message in memory before
 * encoding it, so a model's weights would all be held at once (and a length-delimited field must know its
 * length before its bytes). Here a byte field may be *deferred*: its length is declared up front (a tensor's
 * size follows from its shape and dtype) and its bytes are produced only when the writer reaches it, so the
 * exporter reads one block of weights at a time. The whole format is a hundred lines; no dependency.
 *
 * @example
 * ```ts
 * import { encode, Message } from "./protobuf.ts";
 * const m = new Message().varint(1, 150); // field 1 = 150
 * const bytes = await encode(m);
 * bytes; // Uint8Array [0x08, 0x96, 0x01]
 * ```
 *
 * @module
 */

/** Bytes produced on demand: `length` is known when the message is built, the bytes only when written. */
export interface Deferred {
  /** Exact byte length `bytes()` will return. */
  readonly length: number;
  /** Produce the bytes (called once, when the writer reaches this field). */
  bytes(): Promise<Uint8Array> | Uint8Array;
}

type Field =
  | { no: number; kind: "varint"; v: number | bigint }
  | { no: number; kind: "f32"; v: number }
  | { no: number; kind: "bytes"; v: Uint8Array }
  | { no: number; kind: "msg"; v: Message }
  | { no: number; kind: "deferred"; v: Deferred };

const TEXT = new TextEncoder();

/** Bytes of the varint encoding of a non-negative integer or a 64-bit two's complement negative one. */
function varintSize(v: number | bigint): number {
  let n = typeof v === "bigint" ? BigInt.asUintN(64, v) : v < 0 ? BigInt.asUintN(64, BigInt(v)) : v;
  let size = 1;
  if (typeof n === "bigint") {
    while (n >= 128n) (n >>= 7n, size++);
    return size;
  }
  while (n >= 128) (n = Math.floor(n / 128), size++);
  return size;
}

function writeVarint(out: number[], v: number | bigint): void {
  let n = typeof v === "bigint" ? BigInt.asUintN(64, v) : v < 0 ? BigInt.asUintN(64, BigInt(v)) : v;
  if (typeof n === "bigint") {
    while (n >= 128n) (out.push(Number(n & 127n) | 128), n >>= 7n);
    out.push(Number(n));
    return;
  }
  while (n >= 128) (out.push((n % 128) | 128), n = Math.floor(n / 128));
  out.push(n);
}

/** A message under construction: fields in the order they will be written (repeated fields: call again). */
export class Message {
  #fields: Field[] = [];
  #size = -1;

  /** An integer field (int32/int64/enum/bool), wire type 0; negatives as 64-bit two's complement. */
  varint(no: number, v: number | bigint): this {
    if (typeof v === "number" && !Number.isSafeInteger(v)) {
      throw new RangeError(`protobuf: field ${no} value ${v} is not a safe integer`);
    }
    return this.#add({ no, kind: "varint", v });
  }

  /** A float field, wire type 5. */
  float(no: number, v: number): this {
    return this.#add({ no, kind: "f32", v });
  }

  /** A bytes field. */
  bytes(no: number, v: Uint8Array): this {
    return this.#add({ no, kind: "bytes", v });
  }

  /** A string field (UTF-8). */
  string(no: number, v: string): this {
    return this.#add({ no, kind: "bytes", v: TEXT.encode(v) });
  }

  /** A nested message field. */
  message(no: number, v: Message): this {
    return this.#add({ no, kind: "msg", v });
  }

  /** A bytes field whose bytes are produced when written (see {@link Deferred}). */
  deferred(no: number, v: Deferred): this {
    return this.#add({ no, kind: "deferred", v });
  }

  #add(f: Field): this {
    if (this.#size >= 0) throw new Error("protobuf: a message cannot change after its size was taken");
    this.#fields.push(f);
    return this;
  }

  /** Encoded size in bytes (fixed from then on). */
  get size(): number {
    if (this.#size >= 0) return this.#size;
    let s = 0;
    for (const f of this.#fields) {
      s += varintSize(f.no * 8); // the tag; wire types never carry into another byte beyond the number's
      if (f.kind === "varint") s += varintSize(f.v);
      else if (f.kind === "f32") s += 4;
      else {
        const len = f.kind === "msg" ? f.v.size : f.v.length;
        s += varintSize(len) + len;
      }
    }
    return this.#size = s;
  }

  /** The encoded chunks, in order; deferred fields are produced as they are reached. */
  async *chunks(): AsyncGenerator<Uint8Array> {
    let head: number[] = [];
    const flush = () => {
      const b = Uint8Array.from(head);
      head = [];
      return b;
    };
    for (const f of this.#fields) {
      const wire = f.kind === "varint" ? 0 : f.kind === "f32" ? 5 : 2;
      writeVarint(head, f.no * 8 + wire);
      if (f.kind === "varint") writeVarint(head, f.v);
      else if (f.kind === "f32") {
        const b = new Uint8Array(4);
        new DataView(b.buffer).setFloat32(0, f.v, true);
        head.push(...b);
      } else if (f.kind === "bytes") {
        writeVarint(head, f.v.length);
        if (f.v.length < 256) head.push(...f.v);
        else (yield flush(), yield f.v);
      } else if (f.kind === "msg") {
        writeVarint(head, f.v.size);
        yield flush();
        yield* f.v.chunks();
      } else {
        writeVarint(head, f.v.length);
        yield flush();
        const b = await f.v.bytes();
        if (b.length !== f.v.length) {
          throw new Error(`protobuf: field ${f.no} declared ${f.v.length} bytes but produced ${b.length}`);
        }
        yield b;
      }
    }
    if (head.length) yield flush();
  }
}

/** The whole encoding of `m` in one array (for small messages and tests). */
export async function encode(m: Message): Promise<Uint8Array> {
  const out = new Uint8Array(m.size);
  let o = 0;
  for await (const c of m.chunks()) (out.set(c, o), o += c.length);
  if (o !== out.length) throw new Error(`protobuf: encoded ${o} bytes, sized ${out.length}`);
  return out;
}
