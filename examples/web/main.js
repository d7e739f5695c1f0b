// The page: starts worker.js (which loads the library) and shows what it reports. ?model=URL and ?text=URL
// fill the form, ?gpu=0 unticks WebGPU, ?auto evaluates at once, ?report=PATH POSTs the final message as JSON to PATH (the
// end-to-end test reads it there).
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
for (const k of ["model", "text"]) if (params.get(k)) $(k).value = params.get(k);
if (params.get("gpu") === "0") $("gpu").checked = false;

function show(rows) {
  for (const [k, v] of Object.entries(rows)) {
    let dt = [...$("out").querySelectorAll("dt")].find((d) => d.textContent === k);
    if (!dt) {
      dt = document.createElement("dt");
      dt.textContent = k;
      $("out").append(dt, document.createElement("dd"));
    }
    dt.nextElementSibling.textContent = v;
  }
}

function run() {
  $("error").textContent = "";
  $("progress").value = 0;
  const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  const finish = (msg) => {
    worker.terminate();
    globalThis.__svdLlmResult = msg;
    const to = params.get("report");
    if (to) fetch(to, { method: "POST", body: JSON.stringify(msg) });
  };
  worker.onmessage = ({ data: m }) => {
    if (m.type === "info") {
      show({
        "cross-origin isolated": String(crossOriginIsolated),
        backend: `${m.info.backend}${m.info.simd ? " (SIMD)" : ""}`,
        threads: m.info.threads + (m.info.threadsNote ? ` (${m.info.threadsNote})` : ""),
        WebGPU: m.info.gpu
          ? `${m.info.gpu.adapter}${m.info.gpu.fallback ? " (software)" : ""}`
          : m.info.gpuNote ?? "off",
      });
    } else if (m.type === "progress") $("progress").value = m.done / m.total;
    else if (m.type === "done") {
      $("progress").value = 1;
      show({
        model: m.model,
        tokens: String(m.tokens),
        perplexity: m.ppl.toFixed(4),
        seconds: m.seconds.toFixed(2),
      });
      finish(m);
    } else if (m.type === "error") {
      $("error").textContent = m.message;
      finish(m);
    }
  };
  worker.onerror = (e) => {
    $("error").textContent = `the worker failed: ${e.message}`;
    finish({ type: "error", message: e.message });
  };
  worker.postMessage({
    model: new URL($("model").value, location.href).href,
    text: new URL($("text").value, location.href).href,
    gpu: $("gpu").checked,
  });
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  run();
});
if (params.has("auto")) run();
