// The selected head's [T, T] matrix on a canvas: zoom (wheel, buttons), pan (drag), token
// labels on both axes at any zoom, and a readout of query, key and weight under the pointer.
//
// Speed at thousands of tokens: the matrix becomes a pyramid of colour-level images, each
// level the 2x2 max of the one below (a lone strong cell stays visible when zoomed out), and
// a frame is one drawImage from the finest level whose texels are at least one screen pixel.
import { WEIGHT_LUT, MASKED_RGB, weightLevel } from "./colors.js";

const LEFT = 118; // room for query labels
const TOP = 96; // room for key labels (rotated)
const LABEL_PX = 13; // minimum label spacing

export function displayToken(text) {
  return text.replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5").replace(/\r/g, "");
}

function shortLabel(position, token) {
  const t = displayToken(token);
  return `${position} ${t.length > 12 ? t.slice(0, 11) + "\u2026" : t}`;
}

// The matrix as colour levels (lower triangle, one byte a cell) and the sizes of its pyramid:
// level k has ceil(T / 2^k) texels a side, each the max of the 2^k x 2^k cells it covers.
// A level's texels are computed on first use, straight from the triangle, so the first frame
// pays only for the level it shows.
function buildPyramid(matrix) {
  const n = matrix.size;
  const values = matrix.values;
  const triangle = new Uint8Array(values.length);
  for (let i = 0; i < values.length; ++i) triangle[i] = weightLevel(values[i]);
  const levels = [];
  for (let k = 0; ; ++k) {
    const size = Math.ceil(n / 2 ** k);
    levels.push({ size, shift: k, cells: 2 ** k, data: null, canvas: null });
    if (size <= 64) break;
  }
  return { n, triangle, levels };
}

function levelData(pyramid, level) {
  if (level.data) return level.data;
  const { n, triangle } = pyramid;
  const m = level.size;
  const k = level.shift;
  const data = new Uint8Array(m * m);
  let at = 0;
  for (let i = 0; i < n; ++i) {
    const row = (i >> k) * m;
    for (let j = 0; j <= i; ++j, ++at) {
      const v = triangle[at];
      const p = row + (j >> k);
      if (v > data[p]) data[p] = v;
    }
  }
  level.data = data;
  return data;
}

function levelCanvas(pyramid, level) {
  if (level.canvas) return level.canvas;
  const totalSize = pyramid.n;
  const data = levelData(pyramid, level);
  const m = level.size;
  const canvas = document.createElement("canvas");
  canvas.width = m;
  canvas.height = m;
  const context = canvas.getContext("2d");
  const image = context.createImageData(m, m);
  const pixels = image.data;
  for (let a = 0; a < m; ++a) {
    const lastRow = Math.min(totalSize - 1, (a + 1) * level.cells - 1);
    for (let b = 0; b < m; ++b) {
      const p = 4 * (a * m + b);
      if (lastRow < b * level.cells) {
        pixels[p] = MASKED_RGB[0];
        pixels[p + 1] = MASKED_RGB[1];
        pixels[p + 2] = MASKED_RGB[2];
      } else {
        const c = 3 * data[a * m + b];
        pixels[p] = WEIGHT_LUT[c];
        pixels[p + 1] = WEIGHT_LUT[c + 1];
        pixels[p + 2] = WEIGHT_LUT[c + 2];
      }
      pixels[p + 3] = 255;
    }
  }
  context.putImageData(image, 0, 0);
  level.canvas = canvas;
  return canvas;
}

function niceStep(minCells) {
  const steps = [1, 2, 5];
  for (let p = 1; ; p *= 10) {
    for (const s of steps) if (s * p >= minCells) return s * p;
  }
}

export class Heatmap {
  constructor(container, tokens, promptLength) {
    this.tokens = tokens;
    this.promptLength = promptLength;
    this.size = tokens.length;
    this.container = container;
    container.classList.add("as-heatmap");
    this.title = el("div", "as-heatmap-title", container);
    const tools = el("div", "as-heatmap-tools", container);
    this.zoomIn = button(tools, "+", "zoom in", () => this.zoomBy(2));
    this.zoomOut = button(tools, "\u2212", "zoom out", () => this.zoomBy(0.5));
    this.fitButton = button(tools, "fit", "show the whole matrix", () => this.fit());
    el("span", "as-hint", tools).textContent = "wheel: zoom \u00b7 drag: pan \u00b7 double-click: fit";
    this.notice = el("div", "as-heatmap-notice", container);
    const stack = el("div", "as-heatmap-stack", container);
    this.canvas = el("canvas", "as-heatmap-canvas", stack);
    // Hover box and the strip's row/column band: a second canvas on top, so a hover redraws
    // only these and never the matrix.
    this.overlay = el("canvas", "as-heatmap-overlay", stack);
    this.readout = el("div", "as-readout", container);
    this.readout.textContent = "\u00a0";
    this.matrix = null;
    this.pyramid = null;
    this.frame = 0;
    this.highlight = null; // {row} or {column}: the token hovered in the strip
    this.hover = null;
    this.resize();
    this.fit();
    this.attachEvents();
  }

  resize() {
    const width = Math.max(420, Math.min(this.container.clientWidth || 760, 820));
    this.cssWidth = width;
    this.cssHeight = width;
    const dpr = window.devicePixelRatio || 1;
    for (const canvas of [this.canvas, this.overlay]) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(width * dpr);
      canvas.style.width = `${width}px`;
      canvas.style.height = `${width}px`;
    }
    this.dpr = dpr;
    this.plot = Math.min(width - LEFT - 8, width - TOP - 8);
  }

  fit() {
    this.scale = this.plot / this.size; // pixels per cell
    this.x0 = 0; // first visible key (cells)
    this.y0 = 0; // first visible query
    this.draw();
  }

  zoomBy(factor, anchorX = this.plot / 2, anchorY = this.plot / 2, coalesce = false) {
    const minScale = this.plot / this.size;
    const next = Math.min(48, Math.max(minScale, this.scale * factor));
    const cx = this.x0 + anchorX / this.scale;
    const cy = this.y0 + anchorY / this.scale;
    this.scale = next;
    this.x0 = cx - anchorX / next;
    this.y0 = cy - anchorY / next;
    this.clamp();
    if (coalesce) this.requestDraw();
    else this.draw();
  }

  clamp() {
    const visible = this.plot / this.scale;
    this.x0 = Math.max(0, Math.min(this.size - visible, this.x0));
    this.y0 = Math.max(0, Math.min(this.size - visible, this.y0));
  }

  // Shows `matrix` (a CausalMatrix) or, when null, the thumbnail with `notice`.
  show(matrix, title, notice = "", thumbnail = null) {
    this.matrix = matrix;
    this.pyramid = matrix ? buildPyramid(matrix) : null;
    this.thumbnail = thumbnail;
    this.title.textContent = title;
    this.notice.textContent = notice;
    this.notice.style.display = notice ? "block" : "none";
    this.draw();
  }

  setHighlight(highlight) {
    this.highlight = highlight;
    this.drawOverlay();
  }

  // Coalesces redraws from wheel and drag events into one per frame.
  requestDraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  px(cell) {
    return LEFT + (cell - this.x0) * this.scale;
  }

  py(cell) {
    return TOP + (cell - this.y0) * this.scale;
  }

  drawOverlay() {
    const context = this.overlay.getContext("2d");
    context.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    context.clearRect(0, 0, this.cssWidth, this.cssHeight);
    const plot = this.plot;
    context.save();
    context.beginPath();
    context.rect(LEFT, TOP, plot, plot);
    context.clip();
    if (this.highlight) {
      context.fillStyle = "rgba(255, 127, 14, 0.3)";
      const band = Math.max(1.5, this.scale);
      if (this.highlight.row !== undefined) context.fillRect(LEFT, this.py(this.highlight.row), plot, band);
      else context.fillRect(this.px(this.highlight.column), TOP, band, plot);
    }
    if (this.hover) {
      context.strokeStyle = "#d62728";
      context.lineWidth = 1.5;
      const s = Math.max(3, this.scale);
      context.strokeRect(this.px(this.hover.key), this.py(this.hover.query), s, s);
    }
    context.restore();
  }

  draw() {
    const context = this.canvas.getContext("2d");
    context.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    context.clearRect(0, 0, this.cssWidth, this.cssHeight);
    context.fillStyle = "#fff";
    context.fillRect(0, 0, this.cssWidth, this.cssHeight);
    const plot = this.plot;
    const visible = plot / this.scale;
    context.save();
    context.beginPath();
    context.rect(LEFT, TOP, plot, plot);
    context.clip();
    context.imageSmoothingEnabled = false;
    if (this.pyramid) {
      const levels = this.pyramid.levels;
      let k = 0;
      // The first level whose texels are at least a screen pixel: none is skipped, so every
      // pixel shows the max of the cells under it.
      while (k + 1 < levels.length && levels[k].cells * this.scale < 1) ++k;
      const level = levels[k];
      const source = levelCanvas(this.pyramid, level);
      const c = level.cells;
      context.drawImage(source, this.x0 / c, this.y0 / c, visible / c, visible / c, LEFT, TOP, plot, plot);
    } else if (this.thumbnail) {
      context.imageSmoothingEnabled = true;
      context.drawImage(this.thumbnail, LEFT, TOP, plot, plot);
    }
    const px = (cell) => LEFT + (cell - this.x0) * this.scale;
    const py = (cell) => TOP + (cell - this.y0) * this.scale;
    // Prompt / generated boundary.
    if (this.promptLength > 0 && this.promptLength < this.size) {
      context.strokeStyle = "rgba(214, 39, 40, 0.85)";
      context.setLineDash([5, 4]);
      context.lineWidth = 1;
      context.beginPath();
      context.moveTo(LEFT, py(this.promptLength));
      context.lineTo(LEFT + plot, py(this.promptLength));
      context.moveTo(px(this.promptLength), TOP);
      context.lineTo(px(this.promptLength), TOP + plot);
      context.stroke();
      context.setLineDash([]);
    }
    context.restore();
    context.strokeStyle = "#9aa3ad";
    context.lineWidth = 1;
    context.strokeRect(LEFT - 0.5, TOP - 0.5, plot + 1, plot + 1);
    this.drawLabels(context, visible, px, py);
    this.drawOverlay();
  }

  drawLabels(context, visible, px, py) {
    const step = niceStep(Math.ceil(LABEL_PX / this.scale));
    const first = Math.ceil(this.y0 / step) * step;
    const last = Math.min(this.size - 1, Math.floor(this.y0 + visible));
    const firstKey = Math.ceil(this.x0 / step) * step;
    const lastKey = Math.min(this.size - 1, Math.floor(this.x0 + visible));
    context.font = "11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
    context.textBaseline = "middle";
    const half = Math.min(this.scale, step * this.scale) / 2;
    for (let i = first; i <= last; i += step) {
      context.fillStyle = i >= this.promptLength ? "#b3361b" : "#333";
      context.textAlign = "right";
      context.fillText(shortLabel(i, this.tokens[i]), LEFT - 5, py(i) + (this.scale >= LABEL_PX ? half : 0));
    }
    for (let j = firstKey; j <= lastKey; j += step) {
      context.save();
      context.translate(px(j) + (this.scale >= LABEL_PX ? half : 0), TOP - 5);
      context.rotate(-Math.PI / 3);
      context.fillStyle = j >= this.promptLength ? "#b3361b" : "#333";
      context.textAlign = "left";
      context.fillText(shortLabel(j, this.tokens[j]), 0, 0);
      context.restore();
    }
    context.fillStyle = "#666";
    context.textAlign = "left";
    context.font = "11px system-ui, sans-serif";
    context.fillText("keys \u2192", 4, 12);
    context.fillText("queries \u2193", 4, 28);
  }

  // CSS pixel centre of cell (query, key) relative to the canvas, when it is in view.
  cellCenter(query, key) {
    return { x: LEFT + (key - this.x0 + 0.5) * this.scale, y: TOP + (query - this.y0 + 0.5) * this.scale };
  }

  cellAt(event) {
    const rect = this.canvas.getBoundingClientRect();
    const x = event.clientX - rect.left - LEFT;
    const y = event.clientY - rect.top - TOP;
    if (x < 0 || y < 0 || x >= this.plot || y >= this.plot) return null;
    return {
      x,
      y,
      key: Math.floor(this.x0 + x / this.scale),
      query: Math.floor(this.y0 + y / this.scale),
    };
  }

  attachEvents() {
    const canvas = this.canvas;
    canvas.addEventListener(
      "wheel",
      (event) => {
        const cell = this.cellAt(event);
        if (!cell) return;
        event.preventDefault();
        this.zoomBy(event.deltaY < 0 ? 1.25 : 0.8, cell.x, cell.y, true);
      },
      { passive: false },
    );
    let drag = null;
    canvas.addEventListener("mousedown", (event) => {
      drag = { x: event.clientX, y: event.clientY, x0: this.x0, y0: this.y0 };
    });
    window.addEventListener("mouseup", () => (drag = null));
    canvas.addEventListener("dblclick", () => this.fit());
    canvas.addEventListener("mousemove", (event) => {
      if (drag) {
        this.x0 = drag.x0 - (event.clientX - drag.x) / this.scale;
        this.y0 = drag.y0 - (event.clientY - drag.y) / this.scale;
        this.clamp();
      }
      const cell = this.cellAt(event);
      this.hover = cell && cell.query < this.size && cell.key < this.size ? cell : null;
      this.updateReadout();
      if (drag) this.requestDraw();
      else this.drawOverlay();
    });
    canvas.addEventListener("mouseleave", () => {
      this.hover = null;
      this.updateReadout();
      this.drawOverlay();
    });
  }

  updateReadout() {
    const r = this.readout;
    if (!this.hover) {
      r.textContent = "\u00a0";
      delete r.dataset.query;
      return;
    }
    const { query, key } = this.hover;
    const q = displayToken(this.tokens[query]);
    const k = displayToken(this.tokens[key]);
    let weight;
    if (key > query) weight = "masked (key after query)";
    else if (this.matrix) weight = this.matrix.get(query, key).toPrecision(4);
    else weight = "not loaded";
    r.dataset.query = query;
    r.dataset.key = key;
    r.dataset.weight = this.matrix && key <= query ? String(this.matrix.get(query, key)) : "";
    r.textContent = `query ${query} \u2039${q}\u203a \u2192 key ${key} \u2039${k}\u203a : ${weight}`;
  }
}

export function el(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

function button(parent, text, title, onClick) {
  const b = el("button", "as-button", parent);
  b.textContent = text;
  b.title = title;
  b.addEventListener("click", onClick);
  return b;
}
