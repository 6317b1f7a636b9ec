"""The attention viewer in Jupyter: `Capture.show()` and `Capture._repr_html_()`.

The page is the one `attnscope view` writes: the same view data document
("attnscope.view.v1", read by client/viewer/src/data.js) and the same JavaScript bundle
(client/viewer, bundled by esbuild when the C++ build is configured). This module only packs
a capture that is already in memory into that document; it draws nothing itself.

The bundle is looked up in $ATTNSCOPE_VIEWER_JS, next to this file (viewer.js, for installed
copies), then in <build>/client/viewer/viewer.js for $ATTNSCOPE_BUILD_DIR, the repository's
build/ and /work/main/build.
"""

from __future__ import annotations

import base64
import html
import json
import os
import uuid
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from attnscope import safetensors_io

FORMAT = "attnscope.view.v1"
THUMBNAIL_CELLS = 48              # as kThumbnailCells in client/cpp/view_page.h
DEFAULT_MAX_BYTES = 20_000_000    # smaller than the command line's 50 MB: notebooks keep outputs
LAYER_MEAN = "mean"

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.abspath(os.path.join(_HERE, "..", "..", ".."))


def bundle_candidates() -> List[str]:
    candidates = []
    if os.environ.get("ATTNSCOPE_VIEWER_JS"):
        candidates.append(os.environ["ATTNSCOPE_VIEWER_JS"])
    candidates.append(os.path.join(_HERE, "viewer.js"))
    builds = [os.environ.get("ATTNSCOPE_BUILD_DIR"), os.path.join(_REPO, "build"), "/work/main/build"]
    candidates += [os.path.join(b, "client", "viewer", "viewer.js") for b in builds if b]
    return candidates


def load_bundle() -> str:
    for path in bundle_candidates():
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return f.read()
    raise FileNotFoundError(
        "the viewer bundle (viewer.js) was not found; build it with the C++ build "
        "(cmake --build build: it bundles client/viewer) or set ATTNSCOPE_VIEWER_JS. Looked in: "
        + ", ".join(bundle_candidates()))


def _base64_size(n: int) -> int:
    return 4 * ((n + 2) // 3)


def thumbnails(capture) -> Tuple[int, np.ndarray]:
    """uint8 [layers, heads, S, S]: floor(255 * sqrt(block max) + 0.5), block a covering
    [floor(a*T/S), floor((a+1)*T/S)) — the command line's rule, so both write the same bytes."""
    t = capture.num_tokens
    cells = min(t, THUMBNAIL_CELLS)
    starts = (np.arange(cells, dtype=np.int64) * t) // cells
    out = np.zeros((len(capture.layers), len(capture.heads), cells, cells), dtype=np.uint8)
    for li, layer in enumerate(capture.layers):
        attention = capture.attention(layer)
        for hi in range(len(capture.heads)):
            pooled = np.maximum.reduceat(np.maximum.reduceat(attention[hi], starts, axis=0), starts, axis=1)
            values = np.clip(pooled.astype(np.float64), 0.0, 1.0)
            out[li, hi] = np.floor(255.0 * np.sqrt(values) + 0.5).astype(np.uint8)
    return cells, out


def lower_triangle_bytes(capture, layer: int, head) -> Tuple[str, bytes]:
    """(dtype, bytes) of one head's lower triangle (row i: keys 0..i) in the capture's dtype,
    or of the layer mean in float32 (summed head by head in float32, as the command line does)."""
    attention = capture.attention(layer)
    rows, cols = np.tril_indices(capture.num_tokens)
    if head == LAYER_MEAN:
        total = np.zeros(attention.shape[1:], dtype=np.float32)
        for h in range(attention.shape[0]):
            total += attention[h]
        total *= np.float32(1.0 / attention.shape[0])
        return "float32", np.ascontiguousarray(total[rows, cols], dtype="<f4").tobytes()
    values = attention[capture.head_index(head)][rows, cols]
    if capture.dtype == "float16":
        return "float16", values.astype("<f2").tobytes()
    if capture.dtype == "bfloat16":
        return "bfloat16", safetensors_io.float32_to_bfloat16_bits(values).astype("<u2").tobytes()
    return "float32", np.ascontiguousarray(values, dtype="<f4").tobytes()


def _report_document(report) -> Optional[dict]:
    if report is None:
        return None
    if hasattr(report, "data"):
        return report.data
    if isinstance(report, (str, bytes, os.PathLike)) and os.path.exists(os.fspath(report)):
        with open(os.fspath(report), encoding="utf-8") as f:
            return json.load(f)
    if isinstance(report, (str, bytes)):
        return json.loads(report)
    return dict(report)


def view_document(capture, report=None, heads: Optional[Iterable[Tuple[int, Union[int, str]]]] = None,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """The view data document of `capture`. `heads`: (layer, head | "mean") pairs to embed in
    full (an error past `max_bytes`); without it, the layer mean then the heads of each layer in
    order until `max_bytes` (base64 bytes) is spent. `report`: a HeadReport, its JSON document
    (dict or text) or a path to one; its matched terms are highlighted in the token strip."""
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    t = capture.num_tokens
    element = {"float32": 4, "float16": 2, "bfloat16": 2}.get(capture.dtype, 4)
    triangle = t * (t + 1) // 2
    wanted: List[Tuple[int, Union[int, str]]]
    if heads is not None:
        wanted = []
        for layer, head in heads:
            if layer not in capture.layers:
                raise ValueError(f"heads: layer {layer} is not in the capture (layers {capture.layers})")
            if head != LAYER_MEAN and head not in capture.heads:
                raise ValueError(f"heads: head {head} is not in the capture (heads {capture.heads})")
            wanted.append((int(layer), head if head == LAYER_MEAN else int(head)))
    else:
        wanted = [(layer, h) for layer in capture.layers for h in [LAYER_MEAN] + list(capture.heads)]
    matrices, used, heads_full, first_left_out = {}, 0, 0, ""
    for layer, head in wanted:
        cost = _base64_size(triangle * (4 if head == LAYER_MEAN else element))
        label = f"{layer}:{head}"
        if used + cost > max_bytes:
            if heads is not None:
                raise ValueError(f"heads: head {label} would bring the embedded matrices to {used + cost} "
                                 f"bytes, over max_bytes {max_bytes}")
            first_left_out = first_left_out or label
            continue
        dtype, data = lower_triangle_bytes(capture, layer, head)
        matrices[label] = {"dtype": dtype, "data": base64.b64encode(data).decode("ascii")}
        used += cost
        heads_full += head != LAYER_MEAN
    note = "The heads given with heads= are embedded." if heads is not None else ""
    if first_left_out:
        note = ("Matrices are embedded in layer order until the budget ran out (first left out: "
                f"{first_left_out}).")
    cells, thumbs = thumbnails(capture)
    report_doc = _report_document(report)
    terms = []
    if report_doc is not None:
        if len(report_doc.get("tokens", [])) != t:
            raise ValueError(f"report: the report has {len(report_doc.get('tokens', []))} tokens, "
                             f"the capture has {t}")
        terms = [{"term": m["term"], "word": m["word"], "positions": m["positions"]}
                 for m in report_doc.get("terms", [])]
    return {
        "format": FORMAT,
        "model": capture.model,
        "tokens": capture.token_labels(),
        "token_ids": [int(i) for i in capture.ids],
        "prompt_length": int(capture.prompt_length),
        "layers": [int(x) for x in capture.layers],
        "heads": [int(x) for x in capture.heads],
        "thumbnails": {"size": cells, "data": base64.b64encode(thumbs.tobytes()).decode("ascii")},
        "matrices": matrices,
        "embedded": {"max_bytes": max_bytes, "bytes": used,
                     "heads_total": len(capture.layers) * len(capture.heads),
                     "heads_full": heads_full, "note": note},
        "serve": False,
        "report": report_doc,
        "terms": terms,
    }


def _script_json(document: dict) -> str:
    # "<" only occurs inside JSON strings; \u003c keeps "</script>" and "<!--" out of the page.
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def inline_html(document: dict) -> str:
    """A fragment for a notebook cell: its own root element, the bundle, and the mount call."""
    root = f"attnscope-{uuid.uuid4().hex}"
    return (f'<div id="{root}"></div>\n'
            f'<script type="application/json" id="{root}-data">{_script_json(document)}</script>\n'
            f"<script>{load_bundle()}\n"
            f"AttnScopeViewer.mount(document.getElementById('{root}'), "
            f"JSON.parse(document.getElementById('{root}-data').textContent));</script>\n")


def page_html(document: dict) -> str:
    """A whole self-contained page, like `attnscope view --out`."""
    title = "attnscope viewer" + (f" \u00b7 {html.escape(document['model'])}" if document.get("model") else "")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<title>{title}</title></head>\n<body style=\"margin:0\"><div id=\"attnscope\"></div>\n"
            f'<script type="application/json" id="attnscope-data">{_script_json(document)}</script>\n'
            f"<script>{load_bundle()}\nAttnScopeViewer.mountPage();</script>\n</body></html>\n")


class ViewerHTML:
    """What Capture.show() returns: Jupyter renders it through _repr_html_."""

    def __init__(self, fragment: str):
        self.fragment = fragment

    def _repr_html_(self) -> str:
        return self.fragment
