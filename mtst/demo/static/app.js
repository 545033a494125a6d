// mtst demo page. Every piece of user or model text reaches the DOM through textContent
// (never parsed as HTML), so an input like <img src=x onerror=alert(1)> shows as text.
"use strict";

// Batched with the user's sentence to show padding and the attention mask.
const COMPANION = "Shares of Toyota and Honda fell in Tokyo on Friday as the yen rose against the dollar " +
  "and investors waited for the Bank of Japan's decision on interest rates.";
const PAD = "<pad>";

const $ = (id) => document.getElementById(id);

/** Create an element with optional class, text, title and children. */
function el(tag, { cls, text, title, data } = {}, children = []) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  if (title) node.title = title;
  if (data) Object.entries(data).forEach(([k, v]) => { node.dataset[k] = v; });
  children.forEach((child) => node.append(child));
  return node;
}

const codePoints = (s) => Array.from(s); // server offsets count code points, JS strings count UTF-16 units
const pct = (p) => `${(100 * p).toFixed(1)} %`;

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  let data;
  try {
    data = await response.json();
  } catch {
    throw new Error(`${url}: HTTP ${response.status} (no JSON body)`);
  }
  if (!response.ok) throw new Error(data.error || `${url}: HTTP ${response.status}`);
  return data;
}

function renderTopic(result) {
  $("topic-label").textContent = result.topic;
  $("topic-prob").textContent = pct(result.probabilities[result.topic]);
  const bars = $("probabilities");
  bars.replaceChildren();
  for (const [label, p] of Object.entries(result.probabilities)) {
    const fill = el("span", { cls: "bar-fill" });
    fill.style.width = `${(100 * p).toFixed(2)}%`;
    bars.append(el("div", { cls: label === result.topic ? "bar-row top" : "bar-row", data: { label } }, [
      el("span", { cls: "bar-label", text: label }),
      el("span", { cls: "bar-track" }, [fill]),
      el("span", { cls: "bar-value mono", text: pct(p) }),
    ]));
  }
}

/** The text with each entity wrapped in a <mark>; the container's textContent equals the input. */
function renderEntities(text, entities) {
  const chars = codePoints(text);
  const box = $("highlight");
  box.replaceChildren();
  let at = 0;
  for (const ent of [...entities].sort((a, b) => a.start - b.start)) {
    if (ent.start < at) continue; // overlapping spans cannot happen with BIO tags; be safe anyway
    box.append(chars.slice(at, ent.start).join(""));
    box.append(el("mark", {
      cls: `ent ent-${ent.type}`,
      text: chars.slice(ent.start, ent.end).join(""),
      title: `${ent.type} · score ${ent.score.toFixed(3)}`,
      data: { type: ent.type },
    }));
    at = ent.end;
  }
  box.append(chars.slice(at).join(""));
  $("no-entities").hidden = entities.length > 0;
}

/** Diverging blue-white-red colour for v in [-1, 1]. */
function heatColor(v) {
  const t = Math.min(1, Math.abs(v));
  const [r, g, b] = v < 0 ? [37, 99, 235] : [220, 38, 38];
  const mix = (c) => Math.round(255 + (c - 255) * t);
  return `rgb(${mix(r)}, ${mix(g)}, ${mix(b)})`;
}

const heat = { values: [], cols: 1, cell: 1 };

function drawEmbedding(values) {
  const canvas = $("embedding-canvas");
  const width = canvas.clientWidth || 600;
  const cols = [64, 48, 32, 16].find((c) => values.length % c === 0 && width / c >= 8) || 16;
  const rows = Math.ceil(values.length / cols);
  const cell = width / cols;
  const height = Math.max(8, Math.round(Math.min(cell, 14) * rows));
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const scale = Math.max(...values.map(Math.abs)) || 1;
  const rowHeight = height / rows;
  values.forEach((v, i) => {
    ctx.fillStyle = heatColor(v / scale);
    ctx.fillRect((i % cols) * cell, Math.floor(i / cols) * rowHeight, Math.ceil(cell), Math.ceil(rowHeight));
  });
  Object.assign(heat, { values, cols, cell, rowHeight, scale });
}

function renderEmbedding(data) {
  const values = data.embeddings[0];
  const norm = Math.sqrt(values.reduce((s, v) => s + v * v, 0));
  const min = Math.min(...values);
  const max = Math.max(...values);
  $("embedding-meta").textContent =
    `${data.dim} values · ${data.normalized ? "L2-normalised" : "raw"} · norm ${norm.toFixed(3)} · ` +
    `min ${min.toFixed(3)} · max ${max.toFixed(3)}`;
  drawEmbedding(values);
  $("embedding-readout").textContent = "hover a cell to read its value";
}

function onHeatHover(event) {
  if (!heat.values.length) return;
  const rect = event.target.getBoundingClientRect();
  const col = Math.floor((event.clientX - rect.left) / heat.cell);
  const row = Math.floor((event.clientY - rect.top) / heat.rowHeight);
  const i = row * heat.cols + col;
  if (col >= 0 && col < heat.cols && i >= 0 && i < heat.values.length) {
    $("embedding-readout").textContent = `[${i}] = ${heat.values[i].toFixed(5)}`;
  }
}

async function copyEmbedding() {
  const text = JSON.stringify(heat.values);
  const button = $("copy-embedding");
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = `Copied ${heat.values.length} values`;
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1600);
}

function tokenChip(token) {
  const span = token.special ? "special token" : `characters ${token.start}–${token.end}`;
  return el("span", { cls: token.special ? "chip special" : "chip", text: token.token, title: span });
}

/** Two sequences padded to the same length: one column per position, both rows' token and mask bit. */
function renderBatch(first, second) {
  const length = Math.max(first.tokens.length, second.tokens.length);
  const describe = (name, result) => {
    const padded = length - result.tokens.length;
    return `${name}: ${result.tokens.length} tokens` + (padded ? ` + ${padded} <pad>` : "");
  };
  $("batch-legend").replaceChildren(
    el("span", { cls: "batch-key key-first", text: describe("top row, your sentence", first) }),
    el("span", { cls: "batch-key key-second", text: describe("bottom row, second example", second) }),
  );
  const cell = (token) => el("span", { cls: token ? "cell" : "cell pad", title: token ? token.token : PAD }, [
    el("span", { cls: "cell-token", text: token ? token.token : PAD }),
    el("span", { cls: "cell-bit", text: token ? "1" : "0" }),
  ]);
  const columns = [];
  for (let i = 0; i < length; i += 1) {
    columns.push(el("div", { cls: "column" }, [
      el("span", { cls: "column-index", text: String(i) }),
      cell(first.tokens[i]),
      cell(second.tokens[i]),
    ]));
  }
  $("batch").replaceChildren(...columns);
}

function renderTokens(result, companion) {
  $("tokens").replaceChildren(...result.tokens.map(tokenChip));
  $("tokens-meta").textContent = `${result.num_tokens} sub-tokens`;
  $("mask").textContent = `[${result.tokens.map(() => "1").join(", ")}]`;
  renderBatch(result, companion);
}

/** Hide and empty the previous sentence's results, so that an error never sits above stale ones. */
function clearResults() {
  $("results").hidden = true;
  $("truncated").hidden = true;
  ["probabilities", "highlight", "tokens", "batch"].forEach((id) => $(id).replaceChildren());
  heat.values = [];
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function render(text, result, companion, embedding) {
  renderTopic(result);
  renderEntities(text, result.entities);
  const truncated = $("truncated");
  truncated.hidden = !result.truncated;
  truncated.textContent = result.truncated
    ? `This text is longer than ${document.body.dataset.maxSeqLength} sub-tokens: only the first ` +
      `${document.body.dataset.maxSeqLength} were read, so entities are only found in that part.`
    : "";
  $("results").hidden = false; // before drawing, so the canvas has a width
  renderEmbedding(embedding);
  renderTokens(result, companion);
}

async function analyze(event) {
  if (event) event.preventDefault();
  const text = $("text").value;
  showError("");
  if (!text.trim()) {
    showError("Type a sentence first.");
    return;
  }
  const button = $("submit");
  button.disabled = true;
  button.textContent = "Analyzing…";
  document.body.classList.add("busy");
  try {
    const [predicted, embedding] = await Promise.all([
      postJSON("/api/predict", { texts: [text, COMPANION] }),
      postJSON("/api/embed", { text, normalize: true }),
    ]);
    render(text, predicted.results[0], predicted.results[1], embedding);
  } catch (err) {
    clearResults();
    showError(err.message);
  } finally {
    button.disabled = false;
    button.textContent = "Analyze";
    document.body.classList.remove("busy");
  }
}

function updateCount() {
  const n = codePoints($("text").value).length;
  const counter = $("char-count");
  counter.textContent = n.toLocaleString("en");
  counter.classList.toggle("over", n > Number(document.body.dataset.maxChars));
}

document.addEventListener("DOMContentLoaded", () => {
  $("predict-form").addEventListener("submit", analyze);
  $("text").addEventListener("input", updateCount);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) analyze(event);
  });
  document.querySelectorAll("button.example").forEach((button) => {
    button.addEventListener("click", () => {
      $("text").value = button.dataset.text;
      updateCount();
      analyze();
    });
  });
  $("embedding-canvas").addEventListener("mousemove", onHeatHover);
  $("copy-embedding").addEventListener("click", copyEmbedding);
  window.addEventListener("resize", () => { if (heat.values.length) drawEmbedding(heat.values); });
  updateCount();
});
