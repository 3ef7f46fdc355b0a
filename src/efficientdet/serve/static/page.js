// The page: images chosen or dropped go to POST /v1/detect one request each; the answers are drawn
// over the images. The score slider redraws from the answers kept here: no new request.
"use strict";

const $ = (id) => document.getElementById(id);
const cards = [];
let threshold = Number($("threshold").value);
let apiKey = sessionStorage.getItem("efficientdet-key") || "";

function api(path, options = {}) {
  const headers = apiKey ? { "X-API-Key": apiKey } : {};
  return fetch(path, { ...options, headers });
}

async function describeModel() {
  const response = await api("/v1/model");
  if (response.status === 401) {
    $("key-form").hidden = false;
    $("model").textContent = "this server needs an API key";
    return;
  }
  const info = await response.json();
  $("key-form").hidden = true;
  $("model").textContent = `${info.model} · ${info.backend} · ${info.input_size.join("×")} input · `
    + `${info.classes.length} classes · weights ${info.weights}`;
}

function colour(label) {
  return `hsl(${(label * 47) % 360}, 85%, 45%)`;
}

function draw(card) {
  const { canvas, bitmap, answer } = card;
  const context = canvas.getContext("2d");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  context.drawImage(bitmap, 0, 0);
  const line = Math.max(2, Math.round(Math.max(bitmap.width, bitmap.height) / 300));
  context.lineWidth = line;
  context.font = `${6 * line + 4}px system-ui, sans-serif`;
  context.textBaseline = "bottom";
  const drawn = answer.detections.filter((d) => d.score >= threshold);
  for (const d of drawn) {
    const [x1, y1, x2, y2] = d.box;
    context.strokeStyle = context.fillStyle = colour(d.label);
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${d.name} ${d.score.toFixed(2)}`;
    const width = context.measureText(text).width + 2 * line;
    const height = 6 * line + 8;
    const top = y1 >= height ? y1 : y1 + height;
    context.fillRect(x1 - line / 2, top - height, width, height);
    context.fillStyle = "#fff";
    context.fillText(text, x1 + line, top - 2);
  }
  canvas.dataset.drawn = JSON.stringify(drawn);
  card.element.querySelector(".status").textContent = `${drawn.length} of ${answer.detections.length} `
    + `detections drawn · ${answer.model} · ${card.latency.toFixed(0)} ms round trip `
    + `(server ${answer.timing_ms.total.toFixed(0)} ms, model ${answer.timing_ms.inference.toFixed(0)} ms `
    + `in a batch of ${answer.batch_size})`;
}

async function detect(file) {
  const element = $("result").content.firstElementChild.cloneNode(true);
  element.querySelector(".name").textContent = file.name;
  $("results").prepend(element);
  const form = new FormData();
  form.append("image", file, file.name);
  const start = performance.now();
  try {
    const response = await api("/v1/detect", { method: "POST", body: form });
    const latency = performance.now() - start;
    const answer = await response.json();
    element.querySelector(".json").textContent = JSON.stringify(answer, null, 2);
    if (!response.ok) {
      throw new Error(answer.error || `HTTP ${response.status}`);
    }
    const card = { element, canvas: element.querySelector("canvas"), answer, latency,
                   bitmap: await createImageBitmap(file) };
    cards.push(card);
    draw(card);
    element.dataset.state = "done";
  } catch (error) {
    element.dataset.state = "error";
    element.querySelector(".status").textContent = `failed: ${error.message}`;
  }
}

function detectAll(files) {
  for (const file of files) {
    detect(file);
  }
}

$("files").addEventListener("change", (event) => {
  detectAll(event.target.files);
  event.target.value = "";
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  detectAll(event.dataTransfer.files);
});
$("threshold").addEventListener("input", (event) => {
  threshold = Number(event.target.value);
  $("threshold-value").textContent = threshold.toFixed(2);
  cards.forEach(draw);
});
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("key").value;
  sessionStorage.setItem("efficientdet-key", apiKey);
  describeModel();
});
describeModel();
