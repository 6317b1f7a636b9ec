"""The research notebook's figures, drawn with matplotlib's object API (no pyplot state, no
display needed). Every function returns a matplotlib Figure; pass path= to also write a PNG
(its pixel size is figsize x dpi exactly)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from attnscope.capture import Capture
from attnscope.report import HEAD_TYPES, METRICS, HeadReport

# The notebook's list of financial terms (the server's default is the same idea).
FINANCIAL_TERMS = ("sales", "revenue", "income", "profit", "earnings", "assets", "liabilities", "equity",
                   "cash", "debt", "expense", "margin", "dividend", "increase", "decrease")


def _figure(figsize, dpi) -> Figure:
    figure = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _finish(figure: Figure, path) -> Figure:
    if path is not None:
        figure.savefig(path, dpi=figure.dpi, format="png")
    return figure


def _label(index: int, token: str, width: int = 12) -> str:
    token = token.replace("\n", "\\n")
    return f"{index}:{token[:width]}"


def heatmap(capture: Capture, layer: int, head: int, max_tokens: int = 40, start: int = 0,
            figsize=(8, 7), dpi=100, path=None) -> Figure:
    """One head's attention over tokens [start, start + max_tokens), rows = queries."""
    matrix = capture.attention(layer)[capture.head_index(head)]
    stop = min(capture.num_tokens, start + max_tokens)
    labels = capture.token_labels()
    figure = _figure(figsize, dpi)
    ax = figure.add_subplot()
    image = ax.imshow(matrix[start:stop, start:stop], cmap="viridis", aspect="auto")
    ticks = np.arange(stop - start)
    tick_labels = [_label(i, labels[i]) for i in range(start, stop)]
    ax.set_xticks(ticks, tick_labels, rotation=90, fontsize=6)
    ax.set_yticks(ticks, tick_labels, fontsize=6)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(f"Layer {layer}, head {head} (tokens {start}..{stop - 1})")
    figure.colorbar(image, ax=ax, shrink=0.8)
    return _finish(figure, path)


def head_grid(capture: Capture, layer: int, last: int = 30, columns: int = 4, figsize=None, dpi=100,
              path=None) -> Figure:
    """Every captured head of `layer`, each showing the last `last` query rows and keys."""
    matrices = capture.attention(layer)
    count = len(capture.heads)
    columns = max(1, min(columns, count))
    rows = (count + columns - 1) // columns
    figure = _figure(figsize or (3 * columns, 3 * rows), dpi)
    start = max(0, capture.num_tokens - last)
    for index, head in enumerate(capture.heads):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.imshow(matrices[index, start:, start:], cmap="viridis", aspect="auto", vmin=0)
        ax.set_title(f"head {head}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(f"Layer {layer}: last {capture.num_tokens - start} tokens")
    return _finish(figure, path)


def find_term_positions(tokens: Sequence[str], terms: Sequence[str] = FINANCIAL_TERMS,
                        end: Optional[int] = None) -> List[tuple]:
    """(position, term) for prompt tokens (before `end`) whose text contains a term."""
    found = []
    for position, token in enumerate(tokens[:end]):
        text = token.lower().replace("ġ", "").replace("▁", "")
        for term in terms:
            if term in text:
                found.append((position, term))
                break
    return found


def _term_positions(capture: Capture, report: Optional[HeadReport]) -> List[tuple]:
    if report is not None and report.terms():
        pairs = {}
        for match in report.terms():
            for position in match.get("positions", []):
                pairs.setdefault(int(position), match.get("term", ""))
        if pairs:
            return sorted(pairs.items())
    return find_term_positions(capture.token_labels(), end=capture.prompt_length)


def term_attention(capture: Capture, report: Optional[HeadReport], layer: int, head: int,
                   figsize=(9, 6), dpi=100, path=None) -> Figure:
    """Attention of the generated tokens (rows) to the positions of financial terms in the
    prompt (columns). Term positions come from the report's matched terms, or from the
    capture's tokens when there is no report."""
    positions = _term_positions(capture, report)
    labels = capture.token_labels()
    rows = list(range(capture.prompt_length, capture.num_tokens))
    matrix = capture.attention(layer)[capture.head_index(head)]
    figure = _figure(figsize, dpi)
    ax = figure.add_subplot()
    if not positions or not rows:
        ax.text(0.5, 0.5, "no term positions or no generated tokens", ha="center", va="center")
        ax.set_axis_off()
        return _finish(figure, path)
    columns = [p for p, _ in positions]
    image = ax.imshow(matrix[np.ix_(rows, columns)], cmap="magma", aspect="auto")
    ax.set_xticks(np.arange(len(columns)), [_label(p, labels[p]) for p in columns], rotation=90, fontsize=7)
    ax.set_yticks(np.arange(len(rows)), [_label(r, labels[r]) for r in rows], fontsize=7)
    ax.set_xlabel("financial term position (prompt)")
    ax.set_ylabel("generated token")
    ax.set_title(f"Layer {layer}, head {head}: generated tokens -> financial terms")
    figure.colorbar(image, ax=ax, shrink=0.8)
    return _finish(figure, path)


def layer_head_map(report, metric: str = "entropy", figsize=(8, 5), dpi=100, path=None) -> Figure:
    """A layers x heads image of `metric` (any HeadReport row key: diagonal, previous_token,
    causal, beginning, sink, entropy, max, their gen_ variants) or of the head types ("type").
    Given a SweepResult (client.sweep), the image is its "delta" (default) or "logit_diff" per
    ablated head, on a diverging scale centred on 0."""
    from attnscope.interventions import SweepResult
    if isinstance(report, SweepResult):
        value = metric if metric in ("delta", "logit_diff") else "delta"
        layers, heads, matrix = report.matrix(value)
        figure = _figure(figsize, dpi)
        ax = figure.add_subplot()
        limit = float(np.nanmax(np.abs(matrix))) if matrix.size and np.isfinite(matrix).any() else 1.0
        centre = 0.0 if value == "delta" else report.clean_logit_diff
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=centre - (limit if value == "delta" else abs(limit - centre) or 1),
                          vmax=centre + (limit if value == "delta" else abs(limit - centre) or 1), aspect="auto",
                          interpolation="nearest")
        figure.colorbar(image, ax=ax, label=value)
        ax.set_xticks(np.arange(len(heads)), heads, fontsize=7)
        ax.set_yticks(np.arange(len(layers)), layers, fontsize=7)
        ax.set_xlabel("ablated head")
        ax.set_ylabel("layer")
        ax.set_title(f"{value} of the logit difference, {report.mode} ablation "
                     f"(clean {report.clean_logit_diff:.3f})")
        return _finish(figure, path)
    if metric != "type" and metric not in METRICS and metric.removeprefix("gen_") not in METRICS:
        raise ValueError(f"metric {metric!r} is not 'type' or one of {METRICS} (optionally gen_-prefixed)")
    layers, heads, matrix = report.metric_matrix(metric)
    figure = _figure(figsize, dpi)
    ax = figure.add_subplot()
    if metric == "type":
        colormap = ListedColormap(["#d62728", "#1f77b4", "#2ca02c", "#bbbbbb"])
        image = ax.imshow(matrix, cmap=colormap, vmin=-0.5, vmax=len(HEAD_TYPES) - 0.5, aspect="auto",
                          interpolation="nearest")
        colorbar = figure.colorbar(image, ax=ax, ticks=range(len(HEAD_TYPES)))
        colorbar.ax.set_yticklabels(HEAD_TYPES)
    else:
        image = ax.imshow(matrix, cmap="viridis", aspect="auto", interpolation="nearest")
        figure.colorbar(image, ax=ax, label=metric)
    ax.set_xticks(np.arange(len(heads)), heads, fontsize=7)
    ax.set_yticks(np.arange(len(layers)), layers, fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"{metric} per head")
    return _finish(figure, path)


def find_query_positions(tokens: Sequence[str], query: str) -> List[int]:
    """Positions of the token that ends each occurrence of `query` (case-insensitive) in the
    concatenated token strings, so a word split over several tokens (or bytes) is found too."""
    starts, text = [], ""
    for token in tokens:
        starts.append(len(text))
        text += token
    lowered, needle = text.lower(), query.lower()
    positions, begin = [], lowered.find(needle)
    while needle and begin >= 0:
        last_char = begin + len(needle) - 1
        position = max(i for i, start in enumerate(starts) if start <= last_char)
        if position not in positions:
            positions.append(position)
        begin = lowered.find(needle, begin + 1)
    return positions


def top_k_keys(capture: Capture, layer: int, query_position: int, head: Optional[int] = None,
               k: int = 10) -> List[tuple]:
    """(position, token, weight) of the k keys `query_position` attends to most (one head, or
    the mean over the captured heads), descending weight, ties by position."""
    attention = capture.attention(layer)
    row = attention[capture.head_index(head), query_position] if head is not None \
        else attention[:, query_position].mean(axis=0)
    row = row[:query_position + 1]
    order = sorted(range(len(row)), key=lambda j: (-float(row[j]), j))[:k]
    labels = capture.token_labels()
    return [(j, labels[j], float(row[j])) for j in order]


def top_k_bar(source: Union[Capture, HeadReport], query: str, layer: int, head: Optional[int] = None,
              k: int = 10, occurrence: int = 0, figsize=(8, 4), dpi=100, path=None) -> Figure:
    """A bar chart of the keys the `occurrence`-th token containing `query` attends to most.
    `source` is a Capture (computed here) or a HeadReport (its top_k lists for `query`)."""
    figure = _figure(figsize, dpi)
    ax = figure.add_subplot()
    keys: List[tuple] = []
    title = f"top-{k} keys of {query!r}, layer {layer}, " + (f"head {head}" if head is not None else "mean of heads")
    if isinstance(source, Capture):
        labels = source.token_labels()
        matches = find_query_positions(labels, query)
        if occurrence < len(matches):
            position = matches[occurrence]
            keys = top_k_keys(source, layer, position, head, k)
            title += f", query {_label(position, labels[position])}"
    else:
        lists = [e for e in source.top_k(query=query, layer=layer) if e.get("head") == head]
        if occurrence < len(lists):
            entry = lists[occurrence]
            keys = [(int(key["position"]), key.get("token", ""), float(key["weight"])) for key in entry["keys"][:k]]
            title += f", query {_label(int(entry['query_position']), entry.get('query_token', ''))}"
    if not keys:
        ax.text(0.5, 0.5, f"no token contains {query!r}", ha="center", va="center")
        ax.set_axis_off()
        return _finish(figure, path)
    ax.bar(np.arange(len(keys)), [w for _, _, w in keys], color="#1f77b4")
    ax.set_xticks(np.arange(len(keys)), [_label(p, t) for p, t, _ in keys], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("attention weight")
    ax.set_title(title, fontsize=9)
    return _finish(figure, path)
