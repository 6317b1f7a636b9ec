// Per-head metrics of an analysis report (`attnscope analyze --json`, docs/analysis.md) as
// layer x head maps: the grid's colour overlay and the analysis section draw from these.
import { HEAD_TYPE_COLORS, scaleCss } from "./colors.js";
import { el } from "./heatmap.js";

const HEAD_METRICS = ["diagonal", "previous_token", "causal", "beginning", "sink", "entropy", "max"];

function numberMap(name, description, entries) {
  const table = new Map(entries.map(([l, h, v]) => [`${l}:${h}`, v]));
  const values = entries.map((e) => e[2]).filter((v) => Number.isFinite(v));
  if (values.length === 0) return null;
  return {
    name,
    description,
    kind: "number",
    range: [Math.min(...values), Math.max(...values)],
    layers: [...new Set(entries.map((e) => e[0]))].sort((a, b) => a - b),
    heads: [...new Set(entries.map((e) => e[1]))].sort((a, b) => a - b),
    value: (l, h) => table.get(`${l}:${h}`),
  };
}

// [{name, description, kind: "number"|"category", value(layer, head), range?, layers, heads}]
export function reportMetrics(report) {
  if (!report) return [];
  const maps = [];
  const heads = [];
  for (const layer of report.layers || []) {
    for (const head of layer.heads || []) heads.push([layer.layer, head]);
  }
  if (heads.length) {
    const types = new Map(heads.map(([l, h]) => [`${l}:${h.head}`, h.type]));
    maps.push({
      name: "type",
      description: "head type (self, beginning-focused, focused, distributed)",
      kind: "category",
      layers: [...new Set(heads.map((e) => e[0]))],
      heads: [...new Set(heads.map((e) => e[1].head))].sort((a, b) => a - b),
      value: (l, h) => types.get(`${l}:${h}`),
    });
    for (const metric of HEAD_METRICS) {
      const m = numberMap(metric, `${metric} (all rows)`, heads.map(([l, h]) => [l, h.head, h[metric]]));
      if (m) maps.push(m);
    }
  }
  const detectors = report.detectors || {};
  for (const name of ["previous_token", "duplicate_token", "induction"]) {
    const list = detectors[name] || [];
    if (list.length) {
      const m = numberMap(`${name} detector`, `${name} detector score`, list.map((s) => [s.layer, s.head, s.score]));
      if (m) maps.push(m);
    }
  }
  const terms = report.term_attention || [];
  if (terms.length) {
    const m = numberMap("term attention", "mean attention from generated rows to the financial terms",
      terms.map((t) => [t.layer, t.head, t.mean]));
    if (m) maps.push(m);
  }
  return maps;
}

// One small canvas per metric, cells coloured by value, a tooltip and click-to-select.
export function renderMetricMaps(container, maps, onSelect) {
  const tooltip = el("div", "as-tooltip", document.body);
  tooltip.style.display = "none";
  for (const map of maps) {
    const card = el("div", "as-map", container);
    el("div", "as-map-title", card).textContent = map.name;
    const canvas = el("canvas", "as-map-canvas", card);
    const nH = map.heads.length;
    const nL = map.layers.length;
    const cell = Math.max(6, Math.min(18, Math.floor(180 / Math.max(nH, nL))));
    const dpr = window.devicePixelRatio || 1;
    canvas.width = nH * cell * dpr;
    canvas.height = nL * cell * dpr;
    canvas.style.width = `${nH * cell}px`;
    canvas.style.height = `${nL * cell}px`;
    const context = canvas.getContext("2d");
    context.setTransform(dpr, 0, 0, dpr, 0, 0);
    map.layers.forEach((l, li) =>
      map.heads.forEach((h, hi) => {
        const v = map.value(l, h);
        context.fillStyle =
          v === undefined ? "#f4f4f4" : map.kind === "number" ? scaleCss(v, map.range[0], map.range[1]) : HEAD_TYPE_COLORS[v] || "#000";
        context.fillRect(hi * cell, li * cell, cell - 1, cell - 1);
      }),
    );
    const footer = el("div", "as-map-range", card);
    footer.textContent =
      map.kind === "number"
        ? `${map.range[0].toPrecision(3)} \u2013 ${map.range[1].toPrecision(3)} \u00b7 rows: layers, columns: heads`
        : "rows: layers, columns: heads";
    const hit = (event) => {
      const rect = canvas.getBoundingClientRect();
      const hi = Math.floor((event.clientX - rect.left) / cell);
      const li = Math.floor((event.clientY - rect.top) / cell);
      if (hi < 0 || li < 0 || hi >= nH || li >= nL) return null;
      return { layer: map.layers[li], head: map.heads[hi] };
    };
    canvas.addEventListener("mousemove", (event) => {
      const h = hit(event);
      if (!h) return void (tooltip.style.display = "none");
      const v = map.value(h.layer, h.head);
      tooltip.textContent = `layer ${h.layer}, head ${h.head} \u00b7 ${map.description}: ${
        v === undefined ? "n/a" : typeof v === "number" ? v.toPrecision(4) : v
      }`;
      tooltip.style.display = "block";
      tooltip.style.left = `${event.pageX + 12}px`;
      tooltip.style.top = `${event.pageY + 12}px`;
    });
    canvas.addEventListener("mouseleave", () => (tooltip.style.display = "none"));
    canvas.addEventListener("click", (event) => {
      const h = hit(event);
      if (h) onSelect(h.layer, h.head);
    });
  }
}
