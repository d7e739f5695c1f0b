// The Worker: loads the library (the browser bundle of mod.ts beside this file), starts threads and WebGPU
// where the page allows, compresses the model it is given, packs the folder as one tar Blob and (optionally)
// reloads that tar and evaluates it, reporting to the page. The output files are streamed to the origin-private
// file system (OPFS: on disk, so the output need not fit in memory) where the browser has it, else kept in
// memory. `{ type: "abort" }` cancels a run through its AbortSignal: the sink then discards what it received
// and no tar is made.
// Handlers are set before any await: a message arriving without one is lost.
// The bundle is built, not committed: its URL is computed so `deno check examples/` does not look for it.
const bundle = new URL("./svd_llm.js", import.meta.url).href;
const post = (m) => self.postMessage(m);
let controller;

/** The calibration text: a picked File, or fetched by URL (a failed fetch names the URL and status). */
async function textOf(job) {
  if (job.textFile) return await job.textFile.text();
  const res = await fetch(job.text);
  if (!res.ok) throw new Error(`load calibration text ${job.text}: HTTP status ${res.status}`);
  return await res.text();
}

/** The report without what does not survive structured cloning or is not shown. */
function summary(r) {
  return {
    method: r.method,
    ratioLabel: r.ratioLabel,
    params: r.params,
    layers: r.layers.map((l) => ({
      name: l.name,
      rows: l.rows,
      cols: l.cols,
      rank: l.rank,
      before: l.before,
      after: l.after,
      relativeLoss: l.relativeLoss,
      energyKept: l.energyKept,
    })),
    calibration: r.calibration,
    seconds: r.seconds,
  };
}

const OPFS_FOLDER = "svd-llm-output";

/**
 * Where the output goes: a `streamSink` into an OPFS folder (the previous run's is removed first: its download
 * link was revoked when this run started), or a `memorySink`. `files()` gives each file's parts once the sink
 * has committed; `discard()` removes what a failed run left.
 */
async function outputSink(lib) {
  const root = await navigator.storage?.getDirectory?.().catch(() => undefined);
  if (!root) {
    const sink = lib.memorySink();
    return { sink, where: "memory", files: () => sink.files, discard: async () => {} };
  }
  await root.removeEntry(OPFS_FOLDER, { recursive: true }).catch(() => {});
  const dir = await root.getDirectoryHandle(OPFS_FOLDER, { create: true });
  const handles = new Map();
  const sink = lib.streamSink(async (name) => {
    const h = await dir.getFileHandle(name, { create: true });
    handles.set(name, h);
    return await h.createWritable();
  }, "OPFS");
  return {
    sink,
    where: "the origin-private file system",
    files: async () =>
      new Map(await Promise.all([...handles].map(async ([n, h]) => [n, [await h.getFile()]]))),
    discard: () => root.removeEntry(OPFS_FOLDER, { recursive: true }).catch(() => {}),
  };
}

async function compressJob(job) {
  controller = new AbortController();
  const { signal } = controller;
  let out;
  try {
    const lib = await import(bundle);
    const info = await lib.initLinalg({
      threads: Math.min(4, navigator.hardwareConcurrency || 1),
      gpu: job.gpu,
    });
    post({ type: "info", info });
    const text = await textOf(job);
    const input = job.files ?? new URL(job.model);
    out = await outputSink(lib);
    const sink = out.sink;
    const report = await lib.compress(input, sink, {
      method: job.method,
      ratio: { removed: job.removed },
      calibration: job.method === "svd" ? undefined : { text, samples: job.samples, seqlen: job.seqlen },
      signal,
      url: { signal },
      onProgress: (p) => post({ type: "progress", ...p }),
    });
    // Only a committed sink's files are used; the tar is made from them once the run has succeeded.
    const folder = `${job.name}-${job.method}-${Math.round(job.removed * 100)}`.replace(/[^\w.+-]/g, "_");
    const tar = lib.tarBlob(await out.files(), folder);
    let ppl;
    if (job.evaluate) {
      // Reload what the user downloads (the tar itself) and evaluate it: the download is a loadable model.
      post({ type: "progress", stage: "evaluate", done: 0, total: 1 });
      const m = await lib.loadModel(new File([tar], `${folder}.tar`));
      try {
        const ids = m.tokenizer.encode(text, { bos: true });
        const r = await lib.perplexity(m, ids, {
          window: Math.min(job.seqlen, m.spec.maxPositions),
          onProgress: (p) => post({ type: "progress", stage: "evaluate", done: p.done, total: p.total }),
        });
        ppl = { value: r.ppl, tokens: r.tokens, window: Math.min(job.seqlen, m.spec.maxPositions) };
      } finally {
        await m.close();
      }
    }
    post({
      type: "done",
      report: summary(report),
      tar,
      fileName: `${folder}.tar`,
      ppl,
      output: out.where,
      info: lib.linalgInfo(),
    });
  } catch (e) {
    await out?.discard(); // what a failed or cancelled run streamed to OPFS
    const message = e instanceof Error ? e.message : String(e);
    post(signal.aborted ? { type: "aborted", message } : { type: "error", message });
  }
}

self.onmessage = ({ data: job }) => {
  if (job.type === "abort") {
    post({ type: "cancelling" });
    controller?.abort(new Error("compression cancelled by the user"));
  } else compressJob(job);
};
