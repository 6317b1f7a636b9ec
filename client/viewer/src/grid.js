// The layer x head grid: one downsampled pattern per head (max-pooled on the writer side),
// a click selects the head, and a metric from the analysis report can frame every cell in
// its colour.
import { WEIGHT_LUT, MASKED_RGB, HEAD_TYPE_COLORS, scaleCss } from "./colors.js";
import { el } from "./heatmap.js";

const LABEL_W = 34;
const LABEL_H = 18;

// Thumbnail block a covers rows [floor(a*T/S), floor((a+1)*T/S)) (the writers' rule).
export function thumbnailCanvas(bytes, size, total) {
  const canvas = document.createElement("canvas");
  canvas.width = size;
  canvas.height = size;
  const context = canvas.getContext("2d");
  const image = context.createImageData(size, size);
  const bound = (a) => Math.floor((a * total) / size);
  for (let a = 0; a < size; ++a) {
    const lastRow = bound(a + 1) - 1;
    for (let b = 0; b < size; ++b) {
      const p = 4 * (a * size + b);
      const rgb =
        lastRow < bound(b) ? MASKED_RGB : WEIGHT_LUT.subarray(3 * bytes[a * size + b], 3 * bytes[a * size + b] + 3);
      image.data[p] = rgb[0];
      image.data[p + 1] = rgb[1];
      image.data[p + 2] = rgb[2];
      image.data[p + 3] = 255;
    }
  }
  context.putImageData(image, 0, 0);
  return canvas;
}

export class HeadGrid {
  constructor(container, data, onSelect) {
    this.data = data;
    this.onSelect = onSelect;
    this.container = container;
    this.canvas = el("canvas", "as-grid-canvas", container);
    this.legend = el("div", "as-legend", container);
    this.thumbs = data.layers.map((_, li) =>
      data.heads.map((_, hi) => thumbnailCanvas(data.thumbnail(li, hi), data.thumbSize, data.size)),
    );
    this.selected = { layer: data.layers[0], head: data.heads[0] };
    this.overlay = null; // {name, value(layer, head) -> number|string|undefined, kind}
    this.layout();
    this.canvas.addEventListener("click", (event) => {
      const hit = this.cellAt(event);
      if (hit) this.onSelect(hit.layer, hit.head);
    });
    this.canvas.addEventListener("mousemove", (event) => {
      const hit = this.cellAt(event);
      this.canvas.title = hit ? this.tooltip(hit.layer, hit.head) : "";
    });
  }

  layout() {
    const nH = this.data.heads.length;
    const nL = this.data.layers.length;
    const width = 470; // the grid column's width (cells grow to fill it, 14..72 px)
    this.cell = Math.max(14, Math.min(72, Math.floor((width - LABEL_W) / nH)));
    const dpr = window.devicePixelRatio || 1;
    const cssW = LABEL_W + nH * this.cell;
    const cssH = LABEL_H + nL * this.cell;
    this.canvas.width = Math.round(cssW * dpr);
    this.canvas.height = Math.round(cssH * dpr);
    this.canvas.style.width = `${cssW}px`;
    this.canvas.style.height = `${cssH}px`;
    this.dpr = dpr;
    this.draw();
  }

  // CSS pixel centre of a cell, relative to the canvas (the browser test clicks there).
  cellCenter(layer, head) {
    const li = this.data.layers.indexOf(layer);
    const hi = this.data.heads.indexOf(head);
    return { x: LABEL_W + (hi + 0.5) * this.cell, y: LABEL_H + (li + 0.5) * this.cell };
  }

  cellAt(event) {
    const rect = this.canvas.getBoundingClientRect();
    const hi = Math.floor((event.clientX - rect.left - LABEL_W) / this.cell);
    const li = Math.floor((event.clientY - rect.top - LABEL_H) / this.cell);
    if (hi < 0 || li < 0 || hi >= this.data.heads.length || li >= this.data.layers.length) return null;
    return { layer: this.data.layers[li], head: this.data.heads[hi] };
  }

  tooltip(layer, head) {
    let text = `layer ${layer}, head ${head}`;
    if (this.overlay) {
      const v = this.overlay.value(layer, head);
      if (v !== undefined) text += `\n${this.overlay.name}: ${typeof v === "number" ? v.toPrecision(3) : v}`;
    }
    if (!this.data.available(layer, head)) text += "\n(thumbnail only: full matrix not in this page)";
    return text;
  }

  select(layer, head) {
    this.selected = { layer, head };
    this.draw();
  }

  setOverlay(overlay) {
    this.overlay = overlay;
    this.draw();
  }

  draw() {
    const context = this.canvas.getContext("2d");
    const c = this.cell;
    context.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    context.fillStyle = "#fff";
    context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    context.font = "11px system-ui, sans-serif";
    context.fillStyle = "#555";
    context.textBaseline = "middle";
    context.textAlign = "center";
    const labelEvery = Math.ceil(18 / c);
    this.data.heads.forEach((h, hi) => {
      if (hi % labelEvery === 0) context.fillText(`H${h}`, LABEL_W + (hi + 0.5) * c, LABEL_H / 2);
    });
    context.textAlign = "right";
    this.data.layers.forEach((l, li) => {
      if (li % labelEvery === 0) context.fillText(`L${l}`, LABEL_W - 4, LABEL_H + (li + 0.5) * c);
    });
    context.imageSmoothingEnabled = c < this.data.thumbSize;
    let range = null;
    if (this.overlay && this.overlay.kind === "number") range = this.overlay.range;
    this.data.layers.forEach((l, li) => {
      this.data.heads.forEach((h, hi) => {
        const x = LABEL_W + hi * c;
        const y = LABEL_H + li * c;
        context.drawImage(this.thumbs[li][hi], x + 1, y + 1, c - 2, c - 2);
        if (!this.data.available(l, h)) {
          context.fillStyle = "rgba(255,255,255,0.35)";
          context.fillRect(x + 1, y + 1, c - 2, c - 2);
        }
        if (this.overlay) {
          const v = this.overlay.value(l, h);
          if (v !== undefined) {
            context.strokeStyle =
              this.overlay.kind === "number" ? scaleCss(v, range[0], range[1]) : HEAD_TYPE_COLORS[v] || "#000";
            context.lineWidth = Math.max(2, Math.min(5, c / 10));
            const inset = context.lineWidth / 2 + 1;
            context.strokeRect(x + inset, y + inset, c - 2 * inset, c - 2 * inset);
          }
        }
      });
    });
    const s = this.cellCenter(this.selected.layer, this.selected.head);
    context.strokeStyle = "#d62728";
    context.lineWidth = 2;
    context.strokeRect(s.x - c / 2, s.y - c / 2, c, c);
    this.drawLegend();
  }

  drawLegend() {
    const o = this.overlay;
    this.legend.textContent = "";
    if (!o) return;
    if (o.kind === "number") {
      const [lo, hi] = o.range;
      this.legend.innerHTML = `<span>${o.name}:</span> <span class="as-swatch" style="background:${scaleCss(lo, lo, hi)}"></span>${lo.toPrecision(3)} <span class="as-swatch" style="background:${scaleCss((lo + hi) / 2, lo, hi)}"></span> <span class="as-swatch" style="background:${scaleCss(hi, lo, hi)}"></span>${hi.toPrecision(3)} (frame colour)`;
    } else {
      this.legend.innerHTML =
        `<span>${o.name}:</span> ` +
        Object.entries(HEAD_TYPE_COLORS)
          .map(([name, color]) => `<span class="as-swatch" style="background:${color}"></span>${name}`)
          .join(" ");
    }
  }
}
