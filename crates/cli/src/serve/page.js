// fracture serve: upload X-rays, show P(fractured), the label at the model's threshold and the
// Grad-CAM overlay. Everything stays on this server; nothing is fetched from elsewhere.
"use strict";

let model = null;
const queue = [];
let busy = false;

function el(parent, sel) { return parent.querySelector(sel); }

async function loadModel() {
  const facts = el(document, "#model-facts");
  try {
    const r = await fetch("/api/model");
    model = await r.json();
    const rows = [
      ["Architecture", model.architecture + (model.members > 1 ? ` (ensemble of ${model.members})` : "")],
      ["Input", `${model.input_size} x ${model.input_size} px, grayscale (${model.resize_mode.toLowerCase()})`],
      ["Parameters", model.parameters.toLocaleString("en")],
      ["Validation ROC-AUC", model.val_auc == null ? "not recorded" : model.val_auc.toFixed(4)],
      ["Threshold", `${model.threshold.toFixed(4)}: ${model.threshold_rule}`],
      ["Test-time augmentation", model.tta],
      ["Model file", model.file || "?"],
      ["Trained with", `fracture-nn ${model.provenance.crate_version}, ${model.provenance.epochs} epochs (best ${model.provenance.best_epoch}), seed ${model.provenance.seed}`],
    ];
    if (model.warning) {
      const w = el(document, "#model-warning");
      w.textContent = "Warning: " + model.warning;
      w.hidden = false;
    }
    facts.replaceChildren();
    for (const [k, v] of rows) {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v;
      facts.append(dt, dd);
    }
    el(document, "#explain").textContent =
      `Each image gets P(fractured), the model's estimate that it shows a fracture. ` +
      `It is labelled "fractured" when P(fractured) is at least ${model.threshold.toFixed(4)}, ` +
      `the threshold chosen on validation images (${model.threshold_rule}).`;
  } catch (e) {
    facts.textContent = "cannot load the model description: " + e;
  }
}

function addFiles(files) {
  for (const file of files) {
    const card = el(document, "#card").content.firstElementChild.cloneNode(true);
    el(card, ".name").textContent = file.name;
    const img = el(card, ".original");
    img.src = URL.createObjectURL(file);
    img.onerror = () => { el(card, ".orig").hidden = true; }; // e.g. DICOM: no browser preview
    el(document, "#results").prepend(card);
    queue.push({ file, card });
  }
  pump();
}

// One upload at a time, so that several files never fill the server's queue.
async function pump() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const job = queue.shift();
    await classify(job.file, job.card);
  }
  busy = false;
}

async function classify(file, card) {
  const status = el(card, ".status");
  status.textContent = "classifying...";
  const form = new FormData();
  form.append("file", file, file.name);
  const t0 = performance.now();
  for (let attempt = 0; attempt < 5; attempt++) {
    let r, body;
    try {
      r = await fetch("/api/predict?heatmap=1", { method: "POST", body: form });
      body = await r.json();
    } catch (e) {
      status.textContent = "error: " + e;
      status.classList.add("error");
      return;
    }
    if (r.status === 503) {
      const wait = Number(r.headers.get("Retry-After") || "1");
      status.textContent = `server busy, retrying in ${wait} s...`;
      await new Promise((ok) => setTimeout(ok, wait * 1000));
      continue;
    }
    if (!r.ok) {
      status.textContent = "error: " + (body.error || r.status);
      status.classList.add("error");
      return;
    }
    show(card, body, performance.now() - t0);
    return;
  }
  status.textContent = "error: the server stayed busy; try again later";
  status.classList.add("error");
}

function show(card, res, roundTripMs) {
  el(card, ".status").hidden = true;
  el(card, ".score").hidden = false;
  const p = res.p_fractured, t = res.threshold;
  const label = el(card, ".label");
  label.textContent = res.label.replace("_", " ");
  label.classList.add(res.label);
  el(card, ".p-value").textContent = p.toFixed(4);
  el(card, ".fill").style.width = (100 * p).toFixed(2) + "%";
  el(card, ".tick").style.left = `calc(${(100 * t).toFixed(2)}% - 1px)`;
  el(card, ".bar").setAttribute("aria-label", `P(fractured) ${p.toFixed(4)}, threshold ${t.toFixed(4)}`);
  el(card, ".meaning").textContent = p >= t
    ? `At or above the threshold ${t.toFixed(4)} (the dark tick), so labelled fractured.`
    : `Below the threshold ${t.toFixed(4)} (the dark tick), so labelled not fractured.`;
  const warn = el(card, ".atypical");
  if (res.typicality && res.typicality.typical === false) {
    warn.textContent = "Warning: this image is unlike the radiographs the model learned from " +
      `(typicality score ${res.typicality.score.toFixed(3)}). Its probability means little.`;
    warn.hidden = false;
  } else if (res.warning) {
    el(card, ".meaning").textContent = `Warning: ${res.warning}. ` + el(card, ".meaning").textContent;
  }
  el(card, ".time").textContent =
    `${res.ms.toFixed(0)} ms on the server, ${roundTripMs.toFixed(0)} ms with the upload.`;
  if (res.heatmap) {
    el(card, ".overlay").src = res.heatmap;
    if (res.heatmap_kind && res.heatmap_kind !== "Grad-CAM") {
      el(card, ".cam figcaption").textContent =
        `as the model sees it | ${res.heatmap_kind}: where it places a fracture (red), cross: peak`;
    }
    el(card, ".cam").hidden = false;
  }
  card.classList.add("done");
}

document.addEventListener("DOMContentLoaded", () => {
  loadModel();
  const input = el(document, "#files");
  input.addEventListener("change", () => {
    const files = Array.from(input.files);
    input.value = "";
    addFiles(files);
  });
  const drop = el(document, "#drop");
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => addFiles(e.dataTransfer.files));
  // Dropping a file anywhere else must not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
});
