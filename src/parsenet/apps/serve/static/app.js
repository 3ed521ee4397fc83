// parsenet serve page: upload -> /api/predict?stream=true (NDJSON progress, then result).
// Every request goes to this server; result images arrive as base64 in the JSON.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let inputUrl = null;
let choice = null;  // the picked model choice's key
let lastFile = null;  // segmented again when another choice is picked

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setBusy(text, done, total) {
  $("busy").hidden = text === null;
  $("status").textContent = text || "";
  const bar = $("bar");
  if (total) { bar.max = total; bar.value = done; } else { bar.removeAttribute("value"); }
}

function megabytes(bytes) { return (bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0) + " MB"; }

// The picked choice's models and its examples (images from those models' own dataset).
function applyChoice(details) {
  choice = details.key;
  $("models-line").textContent = details.models.map((m) => m.checkpoint).join(", ");
  const box = $("examples");
  box.replaceChildren();
  for (const example of details.examples) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.textContent = example.name;
    button.addEventListener("click", async () => {
      const blob = await (await fetch(example.url)).blob();
      segment(new File([blob], example.name + ".png", { type: "image/png" }));
    });
    box.appendChild(button);
  }
  $("examples-source").textContent = details.examples.length
    ? "from " + details.examples_source : "no examples: " + details.examples_source;
}

async function pick(key) {
  showError("");
  setBusy("loading the models of " + key + "…");
  try {
    const response = await fetch("/api/choices/" + encodeURIComponent(key));
    if (!response.ok) { showError(await errorText(response)); return; }
    applyChoice(await response.json());
  } catch (e) {
    showError("could not reach the server: " + e.message);
    return;
  } finally {
    setBusy(null);
  }
  if (lastFile) segment(lastFile);
}

async function loadInfo() {
  const response = await fetch("/api/info");
  info = await response.json();
  const picker = $("model-picker");
  picker.replaceChildren();
  for (const entry of info.choices) {
    const option = document.createElement("option");
    option.value = entry.key;
    option.textContent = entry.title;
    picker.appendChild(option);
  }
  picker.value = info.key;
  picker.disabled = info.choices.length < 2;
  picker.addEventListener("change", () => pick(picker.value));
  applyChoice(info);
  $("limits").textContent = "up to " + megabytes(info.limits.max_bytes) + " and " +
    (info.limits.max_pixels / 1e6) + " megapixels; images over " +
    (info.limits.slide_above_pixels / 1e6) + " MP run in sliding windows";
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.detail || response.statusText;
  } catch (e) {
    return "the server answered " + response.status + " " + response.statusText;
  }
}

async function* lines(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffered.indexOf("\n")) >= 0) {
      yield JSON.parse(buffered.slice(0, cut));
      buffered = buffered.slice(cut + 1);
    }
  }
}

async function segment(file) {
  showError("");
  if (info && file.size > info.limits.max_bytes) {
    showError(file.name + ": " + megabytes(file.size) + " is over the upload limit of " +
              megabytes(info.limits.max_bytes));
    return;
  }
  setBusy("uploading " + file.name + "…");
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const url = "/api/predict?stream=true&choice=" + encodeURIComponent(choice);
    const response = await fetch(url, { method: "POST", body: form });
    if (!response.ok) { showError(await errorText(response)); return; }
    for await (const event of lines(response)) {
      if (event.progress !== undefined) {
        const text = event.progress < event.total
          ? "segmenting: pass " + event.progress + " of " + event.total
          : "drawing the results…";
        setBusy(text, event.progress, event.total);
      } else if (event.error) {
        showError(event.error);
      } else if (event.result) {
        lastFile = file;
        show(file, event.result);
      }
    }
  } catch (e) {
    showError("could not reach the server: " + e.message);
  } finally {
    setBusy(null);
  }
}

function png(base64) { return "data:image/png;base64," + base64; }

// A class on a few pixels of a big image is present, not "0.0%".
function percent(share) { return share < 0.0005 ? "<0.1%" : (100 * share).toFixed(1) + "%"; }

function legendItems(list, legend) {
  for (const entry of legend) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = entry.color;
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(
      entry.name + " " + percent(entry.share)));
    list.appendChild(item);
  }
}

function show(file, result) {
  const panels = $("panels");
  for (const old of panels.querySelectorAll(".model, #disagreement")) old.remove();
  if (inputUrl) URL.revokeObjectURL(inputUrl);
  inputUrl = URL.createObjectURL(file);
  $("input-img").src = inputUrl;
  const stem = file.name.replace(/\.[^.]*$/, "");
  for (const model of result.models) {
    const card = $("model-template").content.firstElementChild.cloneNode(true);
    card.querySelector(".model-name").textContent = model.name;
    card.querySelector(".overlay").src = png(model.overlay_png);
    card.querySelector(".labels").src = png(model.color_png);
    legendItems(card.querySelector(".legend"), model.legend);
    const link = card.querySelector(".download");
    link.href = png(model.label_png);
    link.download = stem + "_" + model.name.replace(/\W+/g, "_") + "_labels.png";
    panels.appendChild(card);
  }
  if (result.disagreement) {
    const card = $("disagree-template").content.firstElementChild.cloneNode(true);
    card.querySelector(".disagree-img").src = png(result.disagreement.png);
    const share = card.querySelector(".disagree-share");
    const strong = document.createElement("span");
    strong.className = "magenta";
    strong.textContent = percent(result.disagreement.share);
    share.append("the models name different classes on ", strong, " of the pixels (magenta)");
    panels.appendChild(card);
  }
  $("summary").textContent = file.name + ": " + result.width + " x " + result.height +
    ", " + result.mode + " inference, " + result.seconds.toFixed(2) + " s";
  $("results").hidden = false;
}

function setUpDrop() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => {
    if (e.target.files[0]) segment(e.target.files[0]);
    e.target.value = "";  // choosing the same file again fires "change" again
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) segment(e.dataTransfer.files[0]);
  });
}

setUpDrop();
loadInfo().catch((e) => showError("could not load the model list: " + e.message));
