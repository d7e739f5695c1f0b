// The page: reads the form, starts worker.js (which loads the library and compresses), shows its progress,
// the per-layer summary and an Observable Plot figure, and offers the tar it returns as a download.
// `#status[data-state]` is idle | running | cancelling | done | error | aborted, and `data-stage` the
// current stage: the end-to-end test waits on them. ?gpu=0 unticks WebGPU; ?model=URL, ?text=URL fill the form.
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
for (const k of ["model", "text"]) if (params.get(k)) $(k).value = params.get(k);
if (params.get("gpu") === "0") $("gpu").checked = false;
// Picking a folder or a file selects it as the source.
for (const k of ["folder", "file"]) {
  $(k).addEventListener("change", () => document.querySelector(`input[name=source][value=${k}]`).click());
}

let worker = null;
let downloadUrl = null;

function setStatus(state, text, stage = "") {
  $("status").dataset.state = state;
  $("status").dataset.stage = stage;
  $("status").textContent = text;
}

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

/** What the form asks for: the model (Files, a File or a URL), its display name, and the options. */
function job() {
  const source = document.querySelector("input[name=source]:checked").value;
  const job = {
    method: $("method").value,
    removed: Number($("removed").value) / 100,
    samples: Number($("samples").value),
    seqlen: Number($("seqlen").value),
    text: new URL($("text").value, location.href).href,
    textFile: $("textFile").files[0],
    evaluate: $("evaluate").checked,
    gpu: $("gpu").checked,
  };
  if (source === "bundled") {
    job.model = new URL($("model").value, location.href).href;
    job.name = job.model.split("/").pop().replace(/\.gguf$/i, "");
  } else {
    const files = [...$(source).files];
    if (files.length === 0) throw new Error(`pick a ${source === "folder" ? "model folder" : "file"} first`);
    job.files = files;
    const first = files[0].webkitRelativePath || files[0].name;
    job.name = (source === "folder" ? first.split("/")[0] : first).replace(/\.(gguf|tar)$/i, "");
  }
  return job;
}

/**
 * Figures per block and linear: the fraction of parameters kept (1 = left dense) and, when the method
 * predicts it (svdllm), the relative output error ‖(W − AB)Xᵀ‖/‖WXᵀ‖ on the calibration inputs.
 */
function plot(layers) {
  const rows = layers.map((l) => {
    const m = /layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)$/.exec(l.name);
    return {
      block: m ? Number(m[1]) : l.name,
      linear: m ? m[2] : l.name,
      kept: l.after / l.before,
      loss: l.relativeLoss,
    };
  });
  const figure = (y, label, domain) =>
    Plot.plot({
      height: 200,
      marginLeft: 50,
      x: { axis: null },
      fx: { label: "block" },
      y: { label, domain, grid: true },
      color: { legend: true },
      marks: [
        Plot.barY(rows, { fx: "block", x: "linear", y, fill: "linear", title: (d) => d[y]?.toFixed(4) }),
      ],
    });
  const figures = [figure("kept", "parameters kept", [0, 1])];
  if (rows.some((r) => r.loss !== undefined)) figures.push(figure("loss", "relative output error"));
  $("plot").replaceChildren(...figures);
}

function table(layers) {
  const head = "<tr><th>linear</th><th>shape</th><th>rank</th><th>kept</th><th>rel. loss</th></tr>";
  $("layers").innerHTML = head +
    layers.map((l) =>
      `<tr><td>${l.name.replace(/^model\.layers\./, "")}</td><td>${l.rows}×${l.cols}</td><td>${
        l.rank ?? "dense"
      }</td>` +
      `<td>${(l.after / l.before).toFixed(3)}</td><td>${l.relativeLoss?.toExponential(2) ?? ""}</td></tr>`
    ).join("");
}

function finish(state, text) {
  worker?.terminate(); // also ends its thread pool
  worker = null;
  $("go").disabled = false;
  $("cancel").disabled = true;
  setStatus(state, text, $("status").dataset.stage);
}

function run() {
  $("error").textContent = "";
  $("progress").value = 0;
  $("download").hidden = true;
  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  downloadUrl = null;
  $("download").removeAttribute("href");
  let j;
  try {
    j = job();
  } catch (e) {
    $("error").textContent = e.message;
    setStatus("error", "Nothing to compress.");
    return;
  }
  $("go").disabled = true;
  $("cancel").disabled = false;
  setStatus("running", "Starting…", "start");
  worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
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
    } else if (m.type === "progress") {
      $("progress").value = m.total ? m.done / m.total : 0;
      const where = m.block !== undefined ? ` block ${m.block}` : "";
      const eta = m.etaSeconds !== undefined ? `, ${Math.ceil(m.etaSeconds)} s left` : "";
      if ($("status").dataset.state === "running") {
        setStatus(
          "running",
          `${m.stage}${where} ${m.layer?.replace(/^.*\./, "") ?? ""} ${m.done}/${m.total}${eta}`,
          m.stage,
        );
      }
    } else if (m.type === "cancelling") {
      setStatus("cancelling", "Cancelling…", $("status").dataset.stage);
    } else if (m.type === "done") {
      const r = m.report;
      $("progress").value = 1;
      show({
        result: `${r.method}, ${r.ratioLabel}: linears ${r.params.linears.before.toLocaleString()} → ` +
          `${r.params.linears.after.toLocaleString()} values, model ${
            (r.params.model.removed * 100).toFixed(1)
          } % smaller`,
        seconds: r.seconds.toFixed(2),
        ...(m.ppl
          ? {
            "perplexity of the download": `${
              m.ppl.value.toFixed(4)
            } (${m.ppl.tokens} tokens, window ${m.ppl.window})`,
          }
          : {}),
        download: `${m.fileName}, ${(m.tar.size / 1e6).toFixed(2)} MB (output written to ${m.output})`,
      });
      plot(r.layers);
      table(r.layers);
      downloadUrl = URL.createObjectURL(m.tar);
      Object.assign($("download"), { href: downloadUrl, download: m.fileName, hidden: false });
      globalThis.__svdLlmResult = {
        type: "done",
        ppl: m.ppl?.value,
        info: m.info,
        fileName: m.fileName,
        output: m.output,
      };
      finish("done", `Done: ${m.fileName}`);
    } else if (m.type === "aborted") {
      globalThis.__svdLlmResult = { type: "aborted", message: m.message };
      finish("aborted", "Cancelled: nothing was kept.");
    } else if (m.type === "error") {
      $("error").textContent = m.message;
      globalThis.__svdLlmResult = { type: "error", message: m.message };
      finish("error", "Failed.");
    }
  };
  worker.onerror = (e) => {
    $("error").textContent = `the worker failed: ${e.message}`;
    finish("error", "Failed.");
  };
  worker.postMessage(j);
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  run();
});
$("cancel").addEventListener("click", () => worker?.postMessage({ type: "abort" }));
if (params.has("auto")) run();
