// The same Worker without the precompiled kernels: it says it falls back to TypeScript (for the test).
import { makeWorker } from "./worker.ts";

export default makeWorker();
