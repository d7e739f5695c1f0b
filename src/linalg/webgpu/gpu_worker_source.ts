/**
 * The WebGPU worker's source text (started by `gpu_worker.ts` through `threads/spawn.ts`). It owns the GPU
 * device, so a caller that may block can use the GPU synchronously: the caller posts a job naming byte
 * offsets in a SharedArrayBuffer, then sleeps in `Atomics.wait` while this worker uploads, dispatches
 * {@link GEMM_WGSL}, maps the result back into the shared buffer and wakes it.
 *
 * Messages (main → worker): `{type: "init", ctrl}`; `{type: "gemm", sab, m, n, k, flags, a, b, c}`;
 * `{type: "gram", sab, t, n, x, s}`; `{type: "close"}`. Replies: `init` and `close` by message
 * (`{type: "ready", description, fallback, maxBinding, tid}` / `{type: "none", reason, tid}` /
 * `{type: "closed"}`; `tid` is this worker's OS thread id where `/proc/thread-self` is readable, else null, so
 * the caller can wait for the thread to end after terminating it), jobs
 * through `ctrl` (Int32Array: word 0 ← 1 done or 2 failed, then notify; the failure's text, UTF-8, from byte
 * 8 with its length in word 1).
 *
 * The Gram job: S (n×n float64) ← Σ over runs of 256 tokens of the float32 product XcᵀXc, each run's n×n
 * partial computed on the GPU (float32 sums over 256 tokens: the precision of the wasm kernel `sgram_acc`)
 * and reduced in float64 here, on the CPU. WGSL has no float64, and summing whole batches in float32 on the
 * GPU would lose digits the wasm path keeps; partials of 256 tokens leave the CPU 1/256 of the additions.
 *
 * @module
 */
import { GEMM_WGSL } from "./gemm_gpu.ts";

/** Tokens per float32 partial of the Gram job (the wasm kernel's block). */
export const GPU_GRAM_BLOCK = 256;

/** The worker's module source (ES module, top-level await). */
export const GPU_WORKER_SOURCE: string = `
const SHADER = ${JSON.stringify(GEMM_WGSL)};
const BLOCK = ${GPU_GRAM_BLOCK};
const READ_BUDGET = 64 << 20; // bytes of partials mapped back at once
let device = null, pipeline = null, maxBinding = 0, ctrl = null;

// A browser worker must listen before any await (a message arriving with no handler set is lost); Node's
// worker_threads (Deno, Bun, Node, where \`process\` exists) queue messages until a listener is attached.
const browser = typeof process === "undefined";
if (browser) self.onmessage = (e) => onMessage(e.data);
const port = browser ? null : (await import("node:worker_threads")).parentPort;
if (port) port.on("message", (m) => onMessage(m));
const send = port ? (m) => port.postMessage(m) : (m) => self.postMessage(m);
// This thread's id (Linux), for the caller's wait until the thread has ended: see threadEnded in gpu_worker.ts.
let tid = null;
if (port) {
  try {
    tid = (await import("node:fs")).readlinkSync("/proc/thread-self").split("/").pop();
  } catch {
    tid = null; // not Linux, or no read permission: the caller cannot wait for the thread
  }
}

async function init() {
  const gpu = globalThis.navigator?.gpu;
  if (!gpu) return { type: "none", reason: "navigator.gpu missing" };
  const adapter = await gpu.requestAdapter();
  if (!adapter) return { type: "none", reason: "no WebGPU adapter" };
  maxBinding = Math.min(adapter.limits.maxStorageBufferBindingSize, adapter.limits.maxBufferSize);
  device = await adapter.requestDevice({
    requiredLimits: { maxStorageBufferBindingSize: maxBinding, maxBufferSize: maxBinding },
  });
  const module = device.createShaderModule({ code: SHADER });
  pipeline = await device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "main" } });
  const info = adapter.info ?? {};
  const fallback = !!(info.isFallbackAdapter ?? adapter.isFallbackAdapter);
  // Chromium leaves description empty (SwiftShader: vendor "google", architecture "swiftshader").
  const description = info.description || [info.vendor, info.architecture, info.device].filter(Boolean).join(" ");
  return { type: "ready", description, fallback, maxBinding };
}

const U = () => GPUBufferUsage;
function storage(bytes) {
  return device.createBuffer({ size: Math.max(4, bytes), usage: U().STORAGE | U().COPY_DST | U().COPY_SRC });
}
function upload(buf, f32) {
  device.queue.writeBuffer(buf, 0, f32.slice()); // a copy: not every runtime writes from shared memory
}
function uniform(m, n, k, flags) {
  const u = device.createBuffer({ size: 16, usage: U().UNIFORM | U().COPY_DST });
  device.queue.writeBuffer(u, 0, new Uint32Array([m, n, k, flags]));
  return u;
}
function dispatch(enc, a, aOff, aSize, b, bOff, bSize, c, u, m, n) {
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: a, offset: aOff, size: aSize } },
      { binding: 1, resource: { buffer: b, offset: bOff, size: bSize } },
      { binding: 2, resource: { buffer: c } },
      { binding: 3, resource: { buffer: u } },
    ],
  });
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(Math.ceil(n / 64), Math.ceil(m / 64));
  pass.end();
}
function tooBig(bytes, what) {
  if (bytes > maxBinding) throw new Error(what + " of " + bytes + " bytes exceeds the device's " + maxBinding + "-byte buffer limit");
}

// C (m×n) = op(A)·op(B), A/B/C float32 at byte offsets of sab.
async function gemm(j) {
  const aLen = j.m * j.k, bLen = j.k * j.n, cLen = j.m * j.n;
  tooBig(4 * Math.max(aLen, bLen, cLen), "an operand");
  const A = storage(4 * aLen), B = storage(4 * bLen), C = storage(4 * cLen);
  const R = device.createBuffer({ size: 4 * cLen, usage: U().MAP_READ | U().COPY_DST });
  const u = uniform(j.m, j.n, j.k, j.flags);
  try {
    upload(A, new Float32Array(j.sab, j.a, aLen));
    upload(B, new Float32Array(j.sab, j.b, bLen));
    const enc = device.createCommandEncoder();
    dispatch(enc, A, 0, 4 * aLen, B, 0, 4 * bLen, C, u, j.m, j.n);
    enc.copyBufferToBuffer(C, 0, R, 0, 4 * cLen);
    device.queue.submit([enc.finish()]);
    await R.mapAsync(GPUMapMode.READ);
    new Float32Array(j.sab, j.c, cLen).set(new Float32Array(R.getMappedRange()));
    R.unmap();
  } finally {
    for (const b of [A, B, C, R, u]) b.destroy();
  }
}

// S (n×n float64 at byte offset s) = Σ over runs of BLOCK tokens of the float32 XcᵀXc, X (t×n) at byte x.
async function gram(j) {
  const { t, n } = j;
  const S = new Float64Array(j.sab, j.s, n * n);
  S.fill(0);
  const runs = Math.ceil(t / BLOCK), nn = n * n;
  tooBig(4 * nn, "the Gram matrix");
  const perGroup = Math.max(1, Math.min(runs, Math.floor(READ_BUDGET / (4 * nn)), Math.floor(maxBinding / (4 * BLOCK * n))));
  const C = storage(4 * nn);
  const uFull = uniform(n, n, BLOCK, 1);
  try {
    for (let r0 = 0; r0 < runs; r0 += perGroup) {
      const r1 = Math.min(runs, r0 + perGroup);
      const rows = Math.min(t, r1 * BLOCK) - r0 * BLOCK;
      const X = storage(4 * rows * n);
      const R = device.createBuffer({ size: 4 * nn * (r1 - r0), usage: U().MAP_READ | U().COPY_DST });
      const uLast = rows % BLOCK ? uniform(n, n, rows % BLOCK, 1) : null;
      try {
        upload(X, new Float32Array(j.sab, j.x + 4 * r0 * BLOCK * n, rows * n));
        const enc = device.createCommandEncoder();
        for (let r = r0; r < r1; r++) {
          const tc = Math.min(BLOCK, t - r * BLOCK), off = 4 * (r - r0) * BLOCK * n;
          // op(A) = Xcᵀ (A stored tc×n, transposed), op(B) = Xc: C = XcᵀXc, n×n.
          dispatch(enc, X, off, 4 * tc * n, X, off, 4 * tc * n, C, tc === BLOCK ? uFull : uLast, n, n);
          enc.copyBufferToBuffer(C, 0, R, 4 * nn * (r - r0), 4 * nn);
        }
        device.queue.submit([enc.finish()]);
        await R.mapAsync(GPUMapMode.READ);
        const P = new Float32Array(R.getMappedRange());
        for (let q = 0; q < r1 - r0; q++) {
          const base = q * nn;
          for (let i = 0; i < nn; i++) S[i] += P[base + i];
        }
        R.unmap();
      } finally {
        X.destroy();
        R.destroy();
        uLast?.destroy();
      }
    }
  } finally {
    C.destroy();
    uFull.destroy();
  }
}

function finish(ok, error) {
  if (!ok) {
    const bytes = new TextEncoder().encode(String(error?.message ?? error)).subarray(0, ctrl.byteLength - 8);
    new Uint8Array(ctrl.buffer, 8, bytes.length).set(bytes);
    Atomics.store(ctrl, 1, bytes.length);
  }
  Atomics.store(ctrl, 0, ok ? 1 : 2);
  Atomics.notify(ctrl, 0);
}

async function onMessage(m) {
  if (m.type === "init") {
    ctrl = m.ctrl;
    try {
      send({ ...(await init()), tid });
    } catch (e) {
      send({ type: "none", reason: String(e?.message ?? e), tid });
    }
  } else if (m.type === "gemm" || m.type === "gram") {
    try {
      await (m.type === "gemm" ? gemm(m) : gram(m));
      finish(true);
    } catch (e) {
      finish(false, e);
    }
  } else if (m.type === "close") {
    // Wait for the queue, then destroy the device here, in its own thread, before the worker is terminated:
    // no GPU work or driver thread outlives the worker into process exit.
    try {
      if (device) {
        await device.queue.onSubmittedWorkDone();
        device.destroy();
      }
    } finally {
      device = null;
      pipeline = null;
      send({ type: "closed" });
    }
  }
}

// Jobs are serialised by the caller (it blocks until each is done), init and close by their replies.
`;
