// The Worker's entry module: workerd compiles `svd_llm.wasm` ahead of time (a CompiledWasm module in
// config.capnp), which is the only way WebAssembly runs there.
import wasm from "./svd_llm.wasm";
import { makeWorker } from "./worker.ts";

export default makeWorker(wasm);
