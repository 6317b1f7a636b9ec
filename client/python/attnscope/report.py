"""`HeadReport`: the result of AnalyzeHeads as Python rows (and a pandas DataFrame)."""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

import numpy as np

METRICS = ("diagonal", "previous_token", "causal", "beginning", "sink", "entropy", "max")
HEAD_TYPES = ("self", "beginning-focused", "focused", "distributed")


class HeadReport:
    """Per-layer and per-head numbers of one analysed generation.

    rows: one dict per (layer, head): layer, head, type, the metrics over all rows, and the
    same metrics over the generated rows prefixed "gen_" (None when nothing was generated).
    layer_stats: one dict per layer (num_heads, seq_length, mean_attention, max_attention,
    attention_entropy). data: the full report JSON document (terms, term_attention, top_k,
    detectors, tokens), exactly what `attnscope analyze --json` prints.
    """

    def __init__(self, rows: List[dict], layer_stats: List[dict], data: dict, token_ids: List[int],
                 prompt_length: int, generated_text: str, stop_reason: str = "", request_id: str = ""):
        self.rows = rows
        self.layer_stats = layer_stats
        self.data = data
        self.token_ids = token_ids
        self.prompt_length = prompt_length
        self.generated_text = generated_text
        self.stop_reason = stop_reason
        self.request_id = request_id

    @classmethod
    def from_response(cls, response) -> "HeadReport":
        rows = []
        for head in response.heads:
            row = {"layer": head.layer, "head": head.head, "type": head.type}
            for metric in METRICS:
                row[metric] = getattr(head.all_rows, metric)
            has_generated = head.HasField("generated_rows")
            for metric in METRICS:
                row["gen_" + metric] = getattr(head.generated_rows, metric) if has_generated else None
            rows.append(row)
        layer_stats = [{"layer": s.layer, "num_heads": s.num_heads, "seq_length": s.seq_length,
                        "mean_attention": s.mean_attention, "max_attention": s.max_attention,
                        "attention_entropy": s.attention_entropy} for s in response.layers]
        data = json.loads(response.report_json) if response.report_json else {}
        return cls(rows, layer_stats, data, list(response.token_ids), response.prompt_length,
                   response.generated_text, response.stop_reason, response.request_id)

    @classmethod
    def from_json(cls, doc) -> "HeadReport":
        """From the report JSON document (a dict or its text), e.g. `attnscope analyze --json`."""
        data = json.loads(doc) if isinstance(doc, (str, bytes)) else doc
        rows, layer_stats = [], []
        for layer in data.get("layers", []):
            layer_stats.append({k: layer.get(k) for k in
                                ("layer", "num_heads", "seq_length", "mean_attention", "max_attention",
                                 "attention_entropy")})
            for head in layer.get("heads", []):
                row = {"layer": layer["layer"], "head": head["head"], "type": head.get("type", "")}
                generated = head.get("generated_rows")
                for metric in METRICS:
                    row[metric] = head.get(metric)
                for metric in METRICS:
                    row["gen_" + metric] = generated.get(metric) if generated else None
                rows.append(row)
        return cls(rows, layer_stats, data, [], int(data.get("prompt_length", 0)),
                   data.get("generated_text", ""))

    # ---- views -------------------------------------------------------------------------------

    @property
    def tokens(self) -> List[str]:
        return list(self.data.get("tokens", []))

    @property
    def layers(self) -> List[int]:
        return sorted({row["layer"] for row in self.rows})

    @property
    def heads(self) -> List[int]:
        return sorted({row["head"] for row in self.rows})

    def row(self, layer: int, head: int) -> dict:
        for row in self.rows:
            if row["layer"] == layer and row["head"] == head:
                return row
        raise KeyError(f"no row for layer {layer}, head {head}; layers {self.layers}, heads {self.heads}")

    def metric_matrix(self, metric: str) -> Tuple[List[int], List[int], np.ndarray]:
        """(layers, heads, [layers, heads] array) of `metric` ("type" gives indices into
        HEAD_TYPES); cells of heads not analysed are NaN."""
        layers, heads = self.layers, self.heads
        matrix = np.full((len(layers), len(heads)), np.nan)
        for row in self.rows:
            value = row[metric]
            if metric == "type":
                value = HEAD_TYPES.index(value) if value in HEAD_TYPES else np.nan
            matrix[layers.index(row["layer"]), heads.index(row["head"])] = np.nan if value is None else value
        return layers, heads, matrix

    def top_heads(self, metric: str, n: int = 5, descending: bool = True) -> List[dict]:
        usable = [r for r in self.rows if r.get(metric) is not None]
        return sorted(usable, key=lambda r: (-r[metric] if descending else r[metric], r["layer"], r["head"]))[:n]

    def term_attention(self, layer: Optional[int] = None, head: Optional[int] = None) -> List[dict]:
        """Entries of the report's term_attention (attention of generated rows to the term
        positions), filtered by layer/head."""
        entries = self.data.get("term_attention", [])
        return [e for e in entries if (layer is None or e.get("layer") == layer)
                and (head is None or e.get("head") == head)]

    def terms(self) -> List[dict]:
        return list(self.data.get("terms", []))

    def top_k(self, query: Optional[str] = None, layer: Optional[int] = None) -> List[dict]:
        entries = self.data.get("top_k", [])
        return [e for e in entries if (query is None or e.get("query") == query)
                and (layer is None or e.get("layer") == layer)]

    def to_dataframe(self):
        """The rows as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError("HeadReport.to_dataframe needs pandas (apt install python3-pandas)") from error
        return pd.DataFrame(self.rows)

    def specialization_table(self, layer: int) -> str:
        """The notebook's head-specialisation printout for one layer."""
        lines = [f"Layer {layer}: head specialization",
                 f"{'head':>4} {'diagonal':>9} {'prev':>7} {'causal':>7} {'begin':>7} {'sink':>7} "
                 f"{'entropy':>8} {'max':>6}  type"]
        for row in self.rows:
            if row["layer"] != layer:
                continue
            lines.append(f"{row['head']:>4} {row['diagonal']:>9.4f} {row['previous_token']:>7.4f} "
                         f"{row['causal']:>7.4f} {row['beginning']:>7.4f} {row['sink']:>7.4f} "
                         f"{row['entropy']:>8.4f} {row['max']:>6.3f}  {row['type']}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"HeadReport(layers={self.layers}, heads={len(self.heads)}, tokens={len(self.token_ids)}, "
                f"prompt_length={self.prompt_length})")
