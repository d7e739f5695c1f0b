// The Worker: loads the library (the browser bundle of mod.ts beside this file), starts threads and WebGPU
// where the page allows, loads the model by URL and evaluates its perplexity, reporting to the page.
// Loaded on the first message (a handler set before any await: a message arriving without one is lost).
// The bundle is built, not committed: its URL is computed so `deno check examples/` does not look for it.
const bundle = new URL("./svd_llm.js", import.meta.url).href;

self.onmessage = async ({ data: job }) => {
  const post = (m) => self.postMessage(m);
  try {
    const { initLinalg, linalgInfo, loadModel, perplexity } = await import(bundle);
    const info = await initLinalg({ threads: Math.min(4, navigator.hardwareConcurrency || 1), gpu: job.gpu });
    post({ type: "info", info });
    const model = await loadModel(new URL(job.model));
    try {
      const res = await fetch(job.text);
      if (!res.ok) throw new Error(`load text ${job.text}: HTTP status ${res.status}`);
      const ids = model.tokenizer.encode(await res.text(), { bos: true });
      const t0 = performance.now();
      const r = await perplexity(model, ids, {
        window: 512,
        onProgress: (p) => post({ type: "progress", done: p.done, total: p.total }),
      });
      const seconds = (performance.now() - t0) / 1000;
      post({ type: "done", model: job.model, ppl: r.ppl, tokens: r.tokens, seconds, info: linalgInfo() });
    } finally {
      await model.close();
    }
  } catch (e) {
    post({ type: "error", message: e instanceof Error ? e.message : String(e) });
  }
};
