// The caimx web page: submit movies, follow jobs, look at results. Plain ES module, no build.
// It reads the same API as every other client: /v1/jobs, /v1/jobs/{id}/preview and /export.

const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 1500;
const $ = (selector) => document.querySelector(selector);
const state = { selectedJob: null, preview: null, selectedNeuron: null };

function svgElement(name, attrs = {}) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, value);
  return element;
}

// ---- API key: kept in this browser's localStorage, sent as "Authorization: Bearer KEY" ---------

const KEY_STORAGE = "caimx-api-key";

function authHeaders() {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function api(path, options = {}) {
  return fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
}

function setupKeyField() {
  const field = $("#api-key");
  field.value = localStorage.getItem(KEY_STORAGE) || "";
  field.addEventListener("change", () => {
    const key = field.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    refreshJobs();
  });
}

async function download(event) {
  // A plain link cannot send the key: fetch the file, then save it from a blob.
  event.preventDefault();
  const link = event.currentTarget;
  const response = await api(link.getAttribute("href"));
  if (!response.ok) {
    $("#result-summary").textContent = `Download failed: ${await problemText(response)}`;
    return;
  }
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] || "download";
  const url = URL.createObjectURL(await response.blob());
  const save = document.createElement("a");
  save.href = url;
  save.download = name;
  document.body.append(save);
  save.click();
  save.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function problemText(response) {
  try {
    const body = await response.json();
    return body.detail || body.title || response.statusText;
  } catch {
    return response.statusText;
  }
}

// ---- jobs list -------------------------------------------------------------------------------

function jobRow(job) {
  const row = document.createElement("tr");
  row.dataset.jobId = job.id;
  row.dataset.state = job.state;
  const fraction = job.progress?.fraction ?? (job.state === "succeeded" ? 1 : 0);
  const cells = [
    job.movie?.name ?? "",
    job.state + (job.error ? `: ${job.error}` : ""),
    null,
    new Date(job.created_at).toLocaleString(),
    null,
  ];
  cells.forEach((text, i) => {
    const cell = document.createElement("td");
    if (i === 1) cell.className = `state state-${job.state}`;
    if (i === 2) {
      const bar = document.createElement("progress");
      bar.max = 1;
      bar.value = fraction;
      const done = job.progress?.chunks_done ?? 0;
      const total = job.progress?.chunks_total ?? 0;
      bar.title = total ? `${done} of ${total} chunks` : "waiting";
      cell.append(bar);
    } else if (i === 4) {
      const code = document.createElement("code");
      code.textContent = job.id.slice(0, 8);
      cell.append(code);
    } else {
      cell.textContent = text;
    }
    row.append(cell);
  });
  if (job.id === state.selectedJob) row.classList.add("selected");
  row.addEventListener("click", () => {
    if (job.state === "succeeded") showResult(job);
  });
  return row;
}

async function refreshJobs() {
  try {
    const response = await api("/v1/jobs?limit=50");
    if (!response.ok) throw new Error(await problemText(response));
    const { jobs } = await response.json();
    $("#jobs tbody").replaceChildren(...jobs.map(jobRow));
    $("#jobs-error").hidden = true;
  } catch (error) {
    $("#jobs-error").textContent = `Could not list jobs: ${error.message}`;
    $("#jobs-error").hidden = false;
  }
}

// ---- upload --------------------------------------------------------------------------------

function upload(event) {
  event.preventDefault();
  const file = $("#upload-file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  const model = $("#upload-model").value.trim();
  if (model) form.append("model", model);
  if ($("#upload-denoised").checked) {
    form.append("params", JSON.stringify({ outputs: ["footprints", "traces", "images", "denoised"] }));
  }
  const request = new XMLHttpRequest();  // fetch() cannot report upload progress
  const bar = $("#upload-progress");
  bar.hidden = false;
  bar.value = 0;
  $("#upload-button").disabled = true;
  $("#upload-status").textContent = `uploading ${file.name}...`;
  request.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) bar.value = e.loaded / e.total;
  });
  request.addEventListener("loadend", () => {
    $("#upload-button").disabled = false;
    bar.hidden = true;
    let body = {};
    try { body = JSON.parse(request.responseText); } catch { /* not JSON */ }
    if (request.status === 202) {
      $("#upload-status").textContent = `queued as ${body.id.slice(0, 8)}`;
      $("#upload-form").reset();
      refreshJobs();
    } else {
      const why = body.detail || body.title || request.statusText || "network error";
      $("#upload-status").textContent = `refused: ${why}`;
    }
  });
  request.open("POST", "/v1/jobs");
  for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
  request.send(form);
}

// ---- result view -----------------------------------------------------------------------------

async function showResult(job) {
  state.selectedJob = job.id;
  state.selectedNeuron = null;
  document.querySelectorAll("#jobs tbody tr").forEach((row) =>
    row.classList.toggle("selected", row.dataset.jobId === job.id));
  $("#result").hidden = false;
  $("#result-title").textContent = job.movie?.name ?? job.id;
  $("#result-summary").textContent = "loading...";
  for (const format of ["nwb", "suite2p", "tiff"]) {
    $(`#download-${format}`).href = `/v1/jobs/${job.id}/export/${format}`;
  }
  const response = await api(`/v1/jobs/${job.id}/preview`);
  if (!response.ok) {
    $("#result-summary").textContent = `No preview: ${await problemText(response)}`;
    return;
  }
  state.preview = await response.json();
  drawImage(state.preview);
  drawTrace(null);
}

const BACKGROUND_LABELS = {
  mean: "mean image",
  correlation: "correlation image",
  max: "max projection",
};

function backgrounds(preview) {
  // previews cached before `images` existed hold the mean image alone
  return preview.images ?? { mean: preview.image };
}

function fillBackgroundChoice(preview) {
  const select = $("#background");
  const choices = Object.keys(backgrounds(preview)).map((name) => {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = BACKGROUND_LABELS[name] ?? name;
    return option;
  });
  select.replaceChildren(...choices);
  select.value = "mean";
}

function showBackground(name) {
  const { png } = backgrounds(state.preview)[name];
  $("#image image").setAttribute("href", `data:image/png;base64,${png}`);
}

function drawImage(preview) {
  fillBackgroundChoice(preview);
  const { width, height, png } = preview.image;
  const [frames] = preview.shape;
  const rate = preview.fs ? `${preview.fs} frames/s` : "frame rate not recorded";
  $("#result-summary").textContent =
    `${preview.neurons.length} neurons in ${frames} frames of ${height} x ${width} pixels ` +
    `(${rate}); model ${preview.model?.name ?? "?"} ${preview.model?.version ?? ""}`;
  const svg = $("#image");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const image = svgElement("image", {
    href: `data:image/png;base64,${png}`, x: 0, y: 0, width, height,
    preserveAspectRatio: "none",
  });
  const outlines = preview.neurons.flatMap((neuron) =>
    neuron.contours.map((polygon) => {
      // Contours run through pixel centres; pixel (x, y) covers [x, x+1) in the SVG.
      const points = polygon.map(([x, y]) => `${x + 0.5},${y + 0.5}`).join(" ");
      const shape = svgElement("polygon", { points, class: "contour" });
      shape.dataset.neuron = neuron.id;
      const title = svgElement("title");
      title.textContent = `neuron ${neuron.id}`;
      shape.append(title);
      shape.addEventListener("click", () => selectNeuron(neuron.id));
      return shape;
    }));
  svg.replaceChildren(image, ...outlines);
}

function selectNeuron(id) {
  state.selectedNeuron = id;
  document.querySelectorAll("#image polygon.contour").forEach((shape) =>
    shape.classList.toggle("selected", Number(shape.dataset.neuron) === id));
  drawTrace(state.preview.neurons[id]);
}

function drawTrace(neuron) {
  const svg = $("#trace");
  if (!neuron) {
    $("#trace-title").textContent = "Click a neuron to see its trace";
    $("#neuron-facts").textContent = "";
    svg.replaceChildren();
    return;
  }
  const preview = state.preview;
  const [W, H, pad] = [600, 240, 28];
  const values = neuron.trace;
  const denoised = neuron.denoised_trace ?? null;
  const range = (series) => {
    const low = Math.min(...series);
    return [low, Math.max(...series) - low || 1];
  };
  const [low, span] = range(values);
  const high = low + span;
  const step = preview.trace_step;
  const seconds = (i) => (preview.fs ? (i * step) / preview.fs : i * step);
  const x = (i) => pad + ((W - 2 * pad) * i) / Math.max(values.length - 1, 1);
  // Each series is drawn in its own range (the denoised movie has other units).
  const line = (series) => {
    const [base, size] = range(series);
    const y = (v) => H - pad - ((H - 2 * pad) * (v - base)) / size;
    return series.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  };
  const unit = preview.fs ? "s" : "frames";
  const last = seconds(values.length - 1);
  const label = (text, attrs) => {
    const element = svgElement("text", attrs);
    element.textContent = text;
    return element;
  };
  const parts = [
    svgElement("line", { class: "axis", x1: pad, y1: H - pad, x2: W - pad, y2: H - pad }),
    svgElement("line", { class: "axis", x1: pad, y1: pad, x2: pad, y2: H - pad }),
  ];
  if (denoised) {
    const [dLow, dSpan] = range(denoised);
    const text = "denoised movie under the footprint, " +
      `${dLow.toPrecision(3)} to ${(dLow + dSpan).toPrecision(3)}`;
    parts.push(
      svgElement("polyline", { points: line(denoised), class: "denoised" }),
      label(text, { x: W - pad, y: 26, "text-anchor": "end", class: "legend-denoised" }),
    );
  }
  parts.push(
    svgElement("polyline", { points: line(values), class: "trace", "data-neuron": neuron.id }),
    label("network trace", { x: W - pad, y: 12, "text-anchor": "end", class: "legend-trace" }),
    label("0", { x: pad, y: H - 8 }),
    label(`${Number(last.toPrecision(4))} ${unit}`, { x: W - pad, y: H - 8, "text-anchor": "end" }),
    label(high.toPrecision(3), { x: 2, y: pad }),
    label(low.toPrecision(3), { x: 2, y: H - pad }),
  );
  svg.replaceChildren(...parts);
  $("#trace-title").textContent = `Neuron ${neuron.id}`;
  const [cy, cx] = neuron.centroid;
  $("#neuron-facts").textContent =
    `centre (y ${cy}, x ${cx}), ${neuron.area} pixels, SNR ${neuron.snr}` +
    (step > 1 ? `; each point is the mean of ${step} frames` : "");
}

// ---- start -------------------------------------------------------------------------------------

setupKeyField();
$("#upload-form").addEventListener("submit", upload);
$("#background").addEventListener("change", (e) => showBackground(e.target.value));
for (const format of ["nwb", "suite2p", "tiff"]) {
  $(`#download-${format}`).addEventListener("click", download);
}
refreshJobs();
setInterval(refreshJobs, POLL_MS);
