// The page: asks /v1/translate for the translation and the per-token gates of one or two
// models, and draws them: per token the mean over the units and the shares of units below
// 0.1 and above 0.9 (a table, darker = nearer 1), and every unit at every token (a canvas,
// units sorted by their mean, darker = gate nearer 1).
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error + (body.field ? ` (field: ${body.field})` : ""));
  return body;
}

function option(value, text) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = text;
  return element;
}

function describe(model) {
  return `${model.id} — ${model.source}→${model.target}, ${model.gates.mode} gates`;
}

function fillLayers() {
  const chosen = [models.find((m) => m.id === $("model").value), models.find((m) => m.id === $("compare").value)];
  const layers = Math.min(...chosen.filter(Boolean).map((m) => m.layers));
  $("layer").replaceChildren(...Array.from({ length: layers }, (_, k) => option(k, String(k))));
}

async function start() {
  const [health, listing] = await Promise.all([getJSON("/health"), getJSON("/v1/models")]);
  models = listing.models;
  $("model").replaceChildren(...models.map((m) => option(m.id, describe(m))));
  $("compare").append(...models.map((m) => option(m.id, describe(m))));
  $("key-label").hidden = !health.api_key_required;
  $("model").addEventListener("change", fillLayers);
  $("compare").addEventListener("change", fillLayers);
  fillLayers();
}

// Gate value in [0, 1] -> a blue whose darkness grows with the value.
function color(value) {
  const v = Math.max(0, Math.min(1, value));
  return `hsl(215, 70%, ${Math.round(97 - 62 * v)}%)`;
}

function showToken(token) {
  return token.replace(/\u2581/g, "\u2423");  // sentencepiece's word-start mark, shown as a visible space
}

function heatmap(title, tokens, rows, side) {
  const table = document.createElement("table");
  table.className = `heatmap ${side}`;
  table.dataset.side = side;
  table.createCaption().textContent = title;
  const head = table.createTHead().insertRow();
  head.append(document.createElement("th"));
  for (const token of tokens) {
    const th = document.createElement("th");
    th.textContent = showToken(token);
    head.append(th);
  }
  const body = table.createTBody();
  for (const [label, values, kind] of rows) {
    const row = body.insertRow();
    if (kind) row.className = kind;
    const th = document.createElement("th");
    th.textContent = label;
    row.append(th);
    values.forEach((value, k) => {
      const cell = row.insertCell();
      cell.style.background = color(value);
      cell.style.color = value > 0.6 ? "white" : "black";
      cell.dataset.value = value.toFixed(4);
      cell.title = `${label} gate at ${showToken(tokens[k])}: ${value.toFixed(3)}`;
      cell.textContent = value.toFixed(1);
    });
  }
  return table;
}

function gateRows(layers) {
  const rows = [];
  for (const [name, gates] of Object.entries(layers)) {
    const direction = name.endsWith(".reverse") ? " (reverse)" : "";
    for (const gate of ["input", "forget"]) {
      rows.push([`${gate}${direction}`, gates[gate], "mean"],
                [`${gate}${direction} < 0.1`, gates[`${gate}_below`], "share below"],
                [`${gate}${direction} > 0.9`, gates[`${gate}_above`], "share above"]);
    }
  }
  return rows;
}

// One layer's gate, units x tokens: a row of pixels per unit (sorted by mean), a column per token.
function unitCanvas(title, units, tokens, side, gate) {
  const cell = { width: 24, height: units.length > 128 ? 1 : 2 };
  const canvas = document.createElement("canvas");
  canvas.width = tokens.length * cell.width;
  canvas.height = units.length * cell.height;
  canvas.className = `units ${side} ${gate}`;
  canvas.dataset.units = units.length;
  canvas.dataset.tokens = tokens.length;
  canvas.title = `${title}: ${units.length} units (rows, sorted by mean) x ${tokens.length} tokens (columns)`;
  const context = canvas.getContext("2d");
  units.forEach((values, u) => values.forEach((value, t) => {
    context.fillStyle = color(value);
    context.fillRect(t * cell.width, u * cell.height, cell.width, cell.height);
  }));
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = `${gate} gate, every unit`;
  figure.append(caption, canvas);
  return figure;
}

function unitMaps(title, layers, tokens, side) {
  const [name, gates] = Object.entries(layers)[0];  // the forward direction where there are two
  const box = document.createElement("div");
  box.className = `units ${side}`;
  box.title = `${title} (${name})`;
  box.append(unitCanvas(title, gates.input_units, tokens, side, "input"),
             unitCanvas(title, gates.forget_units, tokens, side, "forget"));
  return box;
}

function render(answer) {
  const section = document.createElement("section");
  section.className = "result";
  section.dataset.model = answer.model;
  const translation = answer.translations[0];
  const heading = document.createElement("h2");
  heading.textContent = `${answer.model} (beam ${answer.beam}${answer.hard_gates ? ", hard gates" : ""})`;
  const text = document.createElement("p");
  text.className = "translation";
  text.textContent = translation.text;
  section.append(heading, text);
  const gates = translation.gates;
  const sourceTitle = `source: encoder layer ${gates.layer}`;
  const targetTitle = `target: decoder layer ${gates.layer} (column = token read)`;
  section.append(
    heatmap(sourceTitle, gates.source.tokens, gateRows(gates.source.layers), "source"),
    unitMaps(sourceTitle, gates.source.layers, gates.source.tokens, "source"),
    heatmap(targetTitle, gates.target.reads, gateRows(gates.target.layers), "target"),
    unitMaps(targetTitle, gates.target.layers, gates.target.reads, "target"));
  const legend = document.createElement("p");
  legend.className = "legend";
  legend.textContent = "Tables: per token, the mean gate over the layer's hidden units, and the shares of units " +
    "below 0.1 and above 0.9 (0 = closed, 1 = open). Pictures: every unit (a row each, sorted by its mean) at " +
    "every token (a column each); dark = open.";
  section.append(legend);
  return section;
}

async function translate(event) {
  event.preventDefault();
  const text = $("source").value.trim();
  if (!text) return;
  const chosen = [$("model").value, $("compare").value].filter((id, k, all) => id && all.indexOf(id) === k);
  $("translate").disabled = true;
  $("status").className = "";
  $("status").textContent = "translating…";
  try {
    const answers = await Promise.all(chosen.map((model) => getJSON("/v1/translate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        q: text, model, beam: Number($("beam").value), gates: true, gate_layer: Number($("layer").value),
        hard_gates: $("hard").checked, ...($("api-key").value ? { api_key: $("api-key").value } : {}),
      }),
    })));
    $("results").replaceChildren(...answers.map(render));
    $("status").textContent = "";
  } catch (error) {
    $("status").className = "error";
    $("status").textContent = error.message;
  } finally {
    $("translate").disabled = false;
  }
}

$("form").addEventListener("submit", translate);
start().catch((error) => {
  $("status").className = "error";
  $("status").textContent = `cannot reach the server: ${error.message}`;
});
