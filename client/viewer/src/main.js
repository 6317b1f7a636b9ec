// attnscope's attention viewer. `mount(root, doc)` builds the page from a view data document
// (see data.js); `attnscope view` (HTML file and --serve) and the Python client's
// Capture.show() embed this same bundle.
import css from "./style.css";
import { ViewData, headKey, TOP_KEYS } from "./data.js";
import { Heatmap, el } from "./heatmap.js";
import { HeadGrid } from "./grid.js";
import { TokenStrip } from "./strip.js";
import { reportMetrics, renderMetricMaps } from "./metrics.js";

function injectStyle() {
  if (document.getElementById("attnscope-style")) return;
  const style = document.createElement("style");
  style.id = "attnscope-style";
  style.textContent = css;
  document.head.appendChild(style);
}

function describeBudget(doc) {
  const e = doc.embedded || {};
  if (doc.serve) return "Served by attnscope view --serve: every head's full matrix is fetched on demand.";
  if (e.heads_full >= e.heads_total) return "";
  const mb = (n) => (n / 1e6).toFixed(1);
  return (
    `This page holds the full matrix of ${e.heads_full} of ${e.heads_total} heads (${mb(e.bytes)} MB, limit ` +
    `${mb(e.max_bytes)} MB) plus a thumbnail of every head. ${e.note || ""} Heads without their matrix are ` +
    `faded in the grid; pick them with --heads L:H,... or open the capture with attnscope view --serve.`
  );
}

export function mount(root, doc) {
  injectStyle();
  const data = new ViewData(doc);
  root.classList.add("attnscope");
  root.textContent = "";
  const T = data.size;
  const P = doc.prompt_length;
  el("h1", "", root).textContent = "attnscope \u00b7 attention viewer";
  el("div", "as-sub", root).textContent =
    `${doc.model || "capture"} \u00b7 ${T} tokens (${P} prompt + ${T - P} generated) \u00b7 ` +
    `${data.layers.length} layers \u00d7 ${data.heads.length} heads captured`;
  const budget = describeBudget(doc);
  if (budget) el("div", "as-banner", root).textContent = budget;

  const controls = el("div", "as-controls", root);
  const state = { layer: data.layers[0], head: data.heads[0], stripHeads: "head" };
  const metrics = reportMetrics(doc.report);

  const layerSelect = labelled(controls, "layer", "select");
  data.layers.forEach((l) => option(layerSelect, l, `L${l}`));
  const headSelect = labelled(controls, "head", "select");
  data.heads.forEach((h) => option(headSelect, h, `H${h}`));
  const stripSelect = labelled(controls, "token strip uses", "select");
  option(stripSelect, "head", "the selected head");
  option(stripSelect, "mean", "the mean of the layer's heads");
  const modeSelect = labelled(controls, "hover shows", "select");
  option(modeSelect, "keys", `the ${TOP_KEYS} keys it attends to most`);
  option(modeSelect, "queries", `the ${TOP_KEYS} queries attending to it most`);
  const overlaySelect = labelled(controls, "colour grid by", "select");
  option(overlaySelect, "", metrics.length ? "nothing" : "nothing (no --report)");
  metrics.forEach((m, i) => option(overlaySelect, String(i), m.name));

  const top = el("div", "as-top", root);
  const gridBox = el("div", "as-grid", top);
  el("h2", "", gridBox).textContent = "Layer \u00d7 head (click to select)";
  const heatBox = el("div", "", top);
  heatBox.className = "as-heatmap";
  const heatmap = new Heatmap(heatBox, doc.tokens, P);

  el("h2", "", root).textContent = "Tokens (prompt, then generated; underlined: financial terms)";
  const stripBox = el("div", "", root);
  const termPositions = new Set();
  for (const t of doc.terms || []) for (const p of t.positions) termPositions.add(p);

  const stripSource = () => {
    const head = state.stripHeads === "mean" ? "mean" : state.head;
    const matrix = data.cached(state.layer, head);
    const label = head === "mean" ? `L${state.layer} mean` : `L${state.layer} H${state.head}`;
    if (matrix) return { matrix, label };
    return {
      matrix: null,
      reason: data.available(state.layer, head)
        ? `${label}: loading\u2026`
        : `${label}: full matrix not in this page (see the note at the top); hover needs it.`,
    };
  };
  const strip = new TokenStrip(stripBox, doc.tokens, P, termPositions, stripSource);
  strip.onHover = (pos, eventTime) => {
    heatmap.setHighlight(strip.mode === "keys" ? { row: pos } : { column: pos });
    if (eventTime !== undefined) {
      requestAnimationFrame(() =>
        setTimeout(() => (viewer.stats.lastHoverMs = performance.now() - eventTime), 0),
      );
    }
  };

  const grid = new HeadGrid(gridBox, data, (layer, head) => select(layer, head));

  if (metrics.length) {
    el("h2", "", root).textContent = "Analysis report: one map per metric (hover for values, click to select)";
    renderMetricMaps(el("div", "as-maps", root), metrics, (layer, head) => select(layer, head));
  }

  let generation = 0;
  async function select(layer, head) {
    state.layer = layer;
    state.head = head;
    layerSelect.value = String(layer);
    headSelect.value = String(head);
    grid.select(layer, head);
    const ticket = ++generation;
    const title = `Layer ${layer} \u00b7 head ${head}`;
    heatBox.dataset.layer = layer;
    heatBox.dataset.head = head;
    const li = data.layers.indexOf(layer);
    const hi = data.heads.indexOf(head);
    const wanted = [data.load(layer, head)];
    if (state.stripHeads === "mean") wanted.push(data.load(layer, "mean"));
    let matrix = data.cached(layer, head);
    if (!matrix && data.available(layer, head)) heatmap.show(null, title, "loading\u2026", grid.thumbs[li][hi]);
    try {
      [matrix] = await Promise.all(wanted);
    } catch (error) {
      if (ticket === generation) heatmap.show(null, title, String(error), grid.thumbs[li][hi]);
      return;
    }
    if (ticket !== generation) return;
    if (matrix) heatmap.show(matrix, title);
    else
      heatmap.show(null, title, "Thumbnail only: this head's full matrix is not in the page.", grid.thumbs[li][hi]);
    heatBox.dataset.ready = `${headKey(layer, head)}`;
    if (strip.current !== undefined) strip.hover(strip.current);
  }

  layerSelect.addEventListener("change", () => select(Number(layerSelect.value), state.head));
  headSelect.addEventListener("change", () => select(state.layer, Number(headSelect.value)));
  stripSelect.addEventListener("change", async () => {
    state.stripHeads = stripSelect.value;
    if (state.stripHeads === "mean") await data.load(state.layer, "mean");
    if (strip.current !== undefined) strip.hover(strip.current);
  });
  modeSelect.addEventListener("change", () => strip.setMode(modeSelect.value));
  overlaySelect.addEventListener("change", () =>
    grid.setOverlay(overlaySelect.value === "" ? null : metrics[Number(overlaySelect.value)]),
  );

  const viewer = {
    data,
    grid,
    heatmap,
    strip,
    state,
    select,
    stats: { firstRenderMs: null, lastHoverMs: null },
  };
  // Start on the first head whose matrix is at hand.
  let start = { layer: data.layers[0], head: data.heads[0] };
  outer: for (const l of data.layers) {
    for (const h of data.heads) {
      if (data.available(l, h)) {
        start = { layer: l, head: h };
        break outer;
      }
    }
  }
  const firstSelect = select(start.layer, start.head);
  firstSelect.then(() =>
    requestAnimationFrame(() =>
      setTimeout(() => {
        viewer.stats.firstRenderMs = performance.now();
        root.dataset.rendered = "true";
      }, 0),
    ),
  );
  return viewer;
}

function labelled(parent, text, tag) {
  const label = el("label", "", parent);
  label.appendChild(document.createTextNode(text));
  return el(tag, "", label);
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = String(value);
  o.textContent = text;
  select.appendChild(o);
}

// The standalone page: <div id="attnscope"> and <script type="application/json" id="attnscope-data">.
export function mountPage() {
  const source = document.getElementById("attnscope-data");
  const root = document.getElementById("attnscope");
  try {
    const scriptStart = performance.now();
    const doc = JSON.parse(source.textContent);
    const parsed = performance.now();
    window.attnscopeViewer = mount(root, doc);
    Object.assign(window.attnscopeViewer.stats, { scriptStartMs: scriptStart, parsedMs: parsed, mountedMs: performance.now() });
  } catch (error) {
    root.textContent = `attnscope viewer: ${error.message}`;
    root.dataset.error = error.message;
    throw error;
  }
}
