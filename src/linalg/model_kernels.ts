/**
 * The wasm kernels of `wasm/model.c` (fused attention, SwiGLU, row log-sum-exp), when the wasm backend is
 * active and the loaded build has them; `null` means "use the TypeScript path".
 *
 * @example
 * ```ts
 * import { modelKernels } from "./model_kernels.ts";
 * const rt = modelKernels(); // null before initLinalg, or on the "ts" backend
 * ```
 *
 * @module
 */
import { activeBackend } from "./backend.ts";
import { type WasmRuntime, wasmRuntime } from "./wasm/runtime.ts";

/** The runtime holding the model kernels, or null when they are not to be used. */
export function modelKernels(): WasmRuntime | null {
  if (activeBackend() !== "wasm") return null;
  const rt = wasmRuntime();
  return rt && rt.has("sattend") ? rt : null;
}
