/**
 * Float32 GEMM on WebGPU: a tiled WGSL compute shader (64×64 tile of C per workgroup, 16×16 invocations
 * each computing a 4×4 block, k in steps of 16 staged through workgroup memory). Transposes are read in
 * place by the loads; ragged edges are zero-padded in workgroup memory, so any m, n, k works.
 *
 * Asynchronous by nature (device, upload, map-back). Where `navigator.gpu` or an adapter is missing (Bun,
 * Node, most headless browsers) {@link gpuAvailable} resolves false and {@link matmulGpu} rejects; callers
 * use the CPU path. Accumulation is float32, like the wasm kernel.
 *
 * @example
 * ```ts
 * import { closeGpu, gpuAvailable, matmulGpu } from "./gemm_gpu.ts";
 * import { matrix } from "../matrix.ts";
 * if (await gpuAvailable()) {
 *   const a = matrix(2, 2, new Float32Array([1, 2, 3, 4]));
 *   const c = await matmulGpu(a, a, { transB: true }); // [5, 11, 11, 25]
 *   await closeGpu(); // release the device when done
 * }
 * ```
 *
 * @module
 */
import { ShapeError } from "../../errors.ts";
import type { Matrix } from "../matrix.ts";

/** Options of {@link matmulGpu}. */
export interface GpuMatmulOptions {
  /** Use Aᵀ instead of A. */
  transA?: boolean;
  /** Use Bᵀ instead of B. */
  transB?: boolean;
}

/**
 * The GEMM compute shader (WGSL): C = op(A)·op(B), float32, bindings A, B (read), C (write), dims uniform
 * `{m, n, k, flags}` (flags bit 0: A transposed, bit 1: B transposed); dispatch ⌈n/64⌉ × ⌈m/64⌉
 * workgroups. Shared by {@link matmulGpu} and the synchronous GPU worker (`gpu_worker_source.ts`).
 */
export const GEMM_WGSL: string = /* wgsl */ `
struct Dims { m: u32, n: u32, k: u32, flags: u32 }
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
@group(0) @binding(3) var<uniform> d: Dims;

const TS: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> As: array<f32, 1024>; // As[p * TS + i] = op(A)[row0 + i][p0 + p]
var<workgroup> Bs: array<f32, 1024>; // Bs[p * TS + j] = op(B)[p0 + p][col0 + j]

fn loadA(i: u32, p: u32) -> f32 {
  if (i >= d.m || p >= d.k) { return 0.0; }
  if ((d.flags & 1u) != 0u) { return A[p * d.m + i]; }
  return A[i * d.k + p];
}

fn loadB(p: u32, j: u32) -> f32 {
  if (p >= d.k || j >= d.n) { return 0.0; }
  if ((d.flags & 2u) != 0u) { return B[j * d.k + p]; }
  return B[p * d.n + j];
}

fn store(i: u32, j: u32, v: vec4<f32>) {
  if (i >= d.m) { return; }
  for (var c = 0u; c < 4u; c = c + 1u) {
    if (j + c < d.n) { C[i * d.n + j + c] = v[c]; }
  }
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row0 = wg.y * TS;
  let col0 = wg.x * TS;
  let tid = lid.y * 16u + lid.x;
  let ta = (d.flags & 1u) != 0u;
  let tb = (d.flags & 2u) != 0u;
  // Four row accumulators of four columns each: registers, not an indexed (spillable) array.
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var p0 = 0u; p0 < d.k; p0 = p0 + TK) {
    for (var r = 0u; r < 4u; r = r + 1u) {
      let idx = tid + r * 256u;
      // Let consecutive invocations read consecutive addresses of whichever layout the operand has.
      var i = idx / TK;
      var p = idx % TK;
      if (ta) { i = idx % TS; p = idx / TS; }
      As[p * TS + i] = loadA(row0 + i, p0 + p);
      var j = idx % TS;
      var q = idx / TS;
      if (tb) { j = idx / TK; q = idx % TK; }
      Bs[q * TS + j] = loadB(p0 + q, col0 + j);
    }
    workgroupBarrier();
    for (var p = 0u; p < TK; p = p + 1u) {
      let ai = p * TS + lid.y * 4u;
      let bi = p * TS + lid.x * 4u;
      let b = vec4<f32>(Bs[bi], Bs[bi + 1u], Bs[bi + 2u], Bs[bi + 3u]);
      acc0 = acc0 + As[ai] * b;
      acc1 = acc1 + As[ai + 1u] * b;
      acc2 = acc2 + As[ai + 2u] * b;
      acc3 = acc3 + As[ai + 3u] * b;
    }
    workgroupBarrier();
  }
  let i0 = row0 + lid.y * 4u;
  let j0 = col0 + lid.x * 4u;
  store(i0, j0, acc0);
  store(i0 + 1u, j0, acc1);
  store(i0 + 2u, j0, acc2);
  store(i0 + 3u, j0, acc3);
}
`;

interface GpuState {
  device: GPUDevice;
  pipeline: GPUComputePipeline;
  maxBinding: number;
  info: GpuInfo;
}

/** The adapter behind {@link matmulGpu}. */
export interface GpuInfo {
  /** Adapter description (driver name), e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  description: string;
  /** A software adapter (lavapipe, SwiftShader): correct but slower than the wasm kernels. */
  fallback: boolean;
}

let state: Promise<GpuState | null> | null = null;

async function setup(): Promise<GpuState | null> {
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu) return null;
  try {
    const adapter = await gpu.requestAdapter();
    if (!adapter) return null;
    const maxBinding = Math.min(adapter.limits.maxStorageBufferBindingSize, adapter.limits.maxBufferSize);
    const device = await adapter.requestDevice({
      requiredLimits: { maxStorageBufferBindingSize: maxBinding, maxBufferSize: maxBinding },
    });
    const module = device.createShaderModule({ code: GEMM_WGSL });
    const pipeline = await device.createComputePipelineAsync({
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    const ai = (adapter as { info?: { description?: string; isFallbackAdapter?: boolean } }).info;
    const fallback =
      !!(ai?.isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter);
    return { device, pipeline, maxBinding, info: { description: ai?.description ?? "", fallback } };
  } catch {
    return null;
  }
}

function gpuState(): Promise<GpuState | null> {
  state ??= setup();
  return state;
}

/** Whether a WebGPU adapter and device could be obtained (cached after the first call). */
export async function gpuAvailable(): Promise<boolean> {
  return (await gpuState()) !== null;
}

/** The adapter in use, or null when WebGPU is unavailable. */
export async function gpuInfo(): Promise<GpuInfo | null> {
  return (await gpuState())?.info ?? null;
}

/**
 * Release the GPU device (tests; long-lived programs may keep it). A later call sets it up again. Waits for
 * the device's queue first. The device lives on the calling thread. On a process's main thread (`deno run`)
 * its GPU instance outlives the exit: 0 crashes in 90 exits on lavapipe. On a thread the runtime tears down
 * while the process exits (a Worker; a `deno test` module, which runs on a runtime thread) the exit can run
 * an exit handler of the Vulkan driver being unloaded: SIGSEGV or "corrupted size vs. prev_size", about one
 * exit in thirty (2 in 60 under `deno test`). `gpu_worker.ts` waits for its worker's thread to end for
 * that reason; Deno gives no way to wait for a test module's thread.
 */
export async function closeGpu(): Promise<void> {
  const s = state ? await state : null;
  state = null;
  if (!s) return;
  try {
    await s.device.queue.onSubmittedWorkDone();
  } finally {
    s.device.destroy();
  }
}

/**
 * C = op(A)·op(B) in float32 on the GPU. Rejects with a ShapeError on mismatched shapes, and with an Error
 * when WebGPU is unavailable or an operand exceeds the device's storage-buffer limit.
 */
export async function matmulGpu(a: Matrix, b: Matrix, opts: GpuMatmulOptions = {}): Promise<Matrix> {
  const m = opts.transA ? a.cols : a.rows;
  const k = opts.transA ? a.rows : a.cols;
  const kb = opts.transB ? b.cols : b.rows;
  const n = opts.transB ? b.rows : b.cols;
  if (k !== kb) {
    throw new ShapeError(`matmulGpu: inner dimensions differ: op(A) is ${m}×${k}, op(B) is ${kb}×${n}`);
  }
  const out = new Float32Array(m * n);
  if (m === 0 || n === 0 || k === 0) return { rows: m, cols: n, data: out };
  const s = await gpuState();
  if (!s) {
    throw new Error("matmulGpu: no WebGPU adapter in this runtime (navigator.gpu missing or no adapter)");
  }
  const biggest = 4 * Math.max(m * k, k * n, m * n);
  if (biggest > s.maxBinding) {
    throw new Error(
      `matmulGpu: an operand of ${biggest} bytes exceeds the device's ${s.maxBinding}-byte buffer limit`,
    );
  }
  const { device, pipeline } = s;
  const upload = (data: Float32Array) => {
    const buf = device.createBuffer({
      size: data.byteLength,
      usage: GPUBufferUsage.STORAGE,
      mappedAtCreation: true,
    });
    new Float32Array(buf.getMappedRange()).set(data);
    buf.unmap();
    return buf;
  };
  const bufA = upload(a.data), bufB = upload(b.data);
  const bufC = device.createBuffer({
    size: out.byteLength,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
  });
  const dims = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM, mappedAtCreation: true });
  new Uint32Array(dims.getMappedRange()).set([m, n, k, (opts.transA ? 1 : 0) | (opts.transB ? 2 : 0)]);
  dims.unmap();
  const read = device.createBuffer({
    size: out.byteLength,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  try {
    const bind = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [bufA, bufB, bufC, dims].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bind);
    pass.dispatchWorkgroups(Math.ceil(n / 64), Math.ceil(m / 64));
    pass.end();
    enc.copyBufferToBuffer(bufC, 0, read, 0, out.byteLength);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    out.set(new Float32Array(read.getMappedRange()));
    read.unmap();
  } finally {
    for (const buf of [bufA, bufB, bufC, dims, read]) buf.destroy();
  }
  return { rows: m, cols: n, data: out };
}
