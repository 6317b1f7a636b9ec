// The token strip: prompt then generated tokens, the boundary marked, the financial terms
// underlined. Hovering a token highlights the keys it attends to most (or, reversed, the
// queries that attend to it most) for the selected head or the layer's mean. One listener
// on the strip (not one per token) and only the previous highlights are cleared, so a hover
// costs O(T) arithmetic and O(TOP_KEYS) DOM writes.
import { TOP_KEYS, topEntries } from "./data.js";
import { displayToken, el } from "./heatmap.js";

export class TokenStrip {
  constructor(container, tokens, promptLength, termPositions, source) {
    this.tokens = tokens;
    this.source = source; // () => {matrix, label} | {matrix: null, reason}
    this.mode = "keys"; // "keys": what the hovered query attends to; "queries": who attends to it
    this.lit = [];
    this.onHover = null;
    this.info = el("div", "as-strip-info", container);
    this.info.textContent = "Hover a token to see the keys it attends to.";
    this.strip = el("div", "as-strip", container);
    const fragment = document.createDocumentFragment();
    this.spans = tokens.map((token, i) => {
      if (i === promptLength && i > 0) {
        const mark = document.createElement("span");
        mark.className = "as-boundary";
        mark.textContent = "generated \u25b8";
        fragment.appendChild(mark);
      }
      const span = document.createElement("span");
      span.className = i < promptLength ? "as-tok as-prompt" : "as-tok as-generated";
      if (termPositions.has(i)) span.classList.add("as-term");
      span.dataset.pos = i;
      const text = displayToken(token);
      span.textContent = text.length ? text : "\u2400";
      if (token.includes("\n")) span.classList.add("as-newline");
      fragment.appendChild(span);
      return span;
    });
    this.strip.appendChild(fragment);
    this.strip.addEventListener("mouseover", (event) => {
      const target = event.target.closest(".as-tok");
      if (target) this.hover(Number(target.dataset.pos), event.timeStamp);
    });
  }

  setMode(mode) {
    this.mode = mode;
    if (this.current !== undefined) this.hover(this.current);
  }

  clear() {
    for (const span of this.lit) {
      span.classList.remove("as-hit", "as-focus");
      span.style.backgroundColor = "";
      delete span.dataset.rank;
      delete span.dataset.weight;
    }
    this.lit = [];
  }

  // Highlights for position `pos`; returns the [{index, weight}] highlighted.
  hover(pos, eventTime) {
    this.current = pos;
    this.clear();
    const focus = this.spans[pos];
    focus.classList.add("as-focus");
    this.lit.push(focus);
    const { matrix, label, reason } = this.source();
    if (!matrix) {
      this.info.textContent = reason;
      return [];
    }
    const top =
      this.mode === "keys" ? topEntries(matrix.row(pos), TOP_KEYS) : topEntries(matrix.column(pos), TOP_KEYS, pos);
    const strongest = top.length ? top[0].weight : 1;
    top.forEach((entry, rank) => {
      const span = this.spans[entry.index];
      span.classList.add("as-hit");
      span.dataset.rank = rank;
      span.dataset.weight = entry.weight;
      const alpha = strongest > 0 ? 0.3 + 0.6 * (entry.weight / strongest) : 0.3;
      span.style.backgroundColor = `rgba(33, 113, 181, ${alpha.toFixed(3)})`;
      if (span !== focus) this.lit.push(span);
    });
    const what = this.mode === "keys" ? "attends to" : "is attended by";
    const list = top
      .map((e) => `${e.index} \u2039${displayToken(this.tokens[e.index])}\u203a ${e.weight.toFixed(3)}`)
      .join(", ");
    this.info.textContent = `${label}: ${pos} \u2039${displayToken(this.tokens[pos])}\u203a ${what} ${list}`;
    if (this.onHover) this.onHover(pos, eventTime);
    return top;
  }
}
