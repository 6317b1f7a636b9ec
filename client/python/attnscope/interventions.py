"""Causal interventions and answer scores (ScoreAnswers) as plain Python values.

    import attnscope
    from attnscope.interventions import ablate, knockout, patch
    score = client.score(text="...", candidates=[" increase", " decrease"],
                         interventions=[ablate(1, [0, 2], "mean"), knockout(0, [1], keys=["revenue"])])
    score.logit_diff, score.to_dataframe()
    sweep = client.sweep(text="...", candidates=[" increase", " decrease"], mode="zero")
    sweep.to_dataframe(); attnscope.plot.layer_head_map(sweep)

Knockout keys are positions (ints) or words of the input (str, matched as analyze's terms).
Rows are "all", "generated" or a (begin, end) pair of positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np


def ablate(layer: int, heads: Sequence[int] = (), mode: str = "zero") -> dict:
    """Replace the heads' attention outputs (o_proj input) by zeros or their prompt mean."""
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode {mode!r} is not 'zero' or 'mean'")
    return {"ablate": {"layer": int(layer), "heads": [int(h) for h in heads], "mode": mode}}


def knockout(layer: int, heads: Sequence[int] = (), rows: Union[str, Tuple[int, int]] = "all",
             keys: Sequence[Union[int, str]] = ()) -> dict:
    """Set the scores of `rows` x `keys` to -inf before the softmax."""
    if not (rows in ("all", "generated") or (isinstance(rows, tuple) and len(rows) == 2)):
        raise ValueError(f"rows {rows!r} is not 'all', 'generated' or (begin, end)")
    return {"knockout": {"layer": int(layer), "heads": [int(h) for h in heads], "rows": rows,
                         "keys": list(keys)}}


def patch(layer: int, heads: Sequence[int] = (), positions: Sequence[int] = ()) -> dict:
    """Copy the heads' outputs at prompt `positions` (all when empty) from the patch source."""
    return {"patch": {"layer": int(layer), "heads": [int(h) for h in heads],
                      "positions": [int(p) for p in positions]}}


def fill_interventions(pb2, wire, items: Sequence[dict]) -> None:
    """Adds `items` (ablate/knockout/patch dicts) to a v1.Interventions message."""
    for item in items:
        (kind, spec), = item.items()
        message = wire.items.add()
        if kind == "ablate":
            message.ablate.layer = spec["layer"]
            message.ablate.heads.extend(spec["heads"])
            message.ablate.mode = pb2.ABLATION_MEAN if spec["mode"] == "mean" else pb2.ABLATION_ZERO
        elif kind == "knockout":
            k = message.knockout
            k.layer = spec["layer"]
            k.heads.extend(spec["heads"])
            rows = spec["rows"]
            if rows == "all":
                k.rows = pb2.KNOCKOUT_ROWS_ALL
            elif rows == "generated":
                k.rows = pb2.KNOCKOUT_ROWS_GENERATED
            else:
                k.rows = pb2.KNOCKOUT_ROWS_RANGE
                k.row_begin, k.row_end = int(rows[0]), int(rows[1])
            for key in spec["keys"]:
                if isinstance(key, str):
                    k.key_terms.append(key)
                else:
                    k.key_positions.append(int(key))
        elif kind == "patch":
            message.patch.layer = spec["layer"]
            message.patch.heads.extend(spec["heads"])
            message.patch.positions.extend(spec["positions"])
        else:
            raise ValueError(f"intervention {item!r} is not ablate, knockout or patch")


@dataclass
class ScoreResult:
    """Per candidate: text, token_ids, token_logprobs, logprob (their sum), first_token_rank.
    logit_diff = candidates[0].logprob - candidates[1].logprob (None with one candidate)."""
    candidates: List[dict]
    logit_diff: Optional[float]
    prompt_ids: List[int] = field(default_factory=list)
    interventions: List[dict] = field(default_factory=list)
    request_id: str = ""

    @classmethod
    def from_message(cls, result) -> "ScoreResult":
        from google.protobuf.json_format import MessageToDict
        candidates = [{"text": c.text, "token_ids": list(c.token_ids),
                       "token_logprobs": list(c.token_logprobs), "logprob": c.logprob,
                       "first_token_rank": c.first_token_rank} for c in result.candidates]
        return cls(candidates=candidates,
                   logit_diff=result.logit_diff if result.has_logit_diff else None,
                   prompt_ids=list(result.prompt_ids),
                   interventions=[MessageToDict(i, preserving_proto_field_name=True)
                                  for i in result.interventions],
                   request_id=result.request_id)

    def rows(self) -> List[dict]:
        return [dict(c) for c in self.candidates]

    def to_dataframe(self):
        import pandas as pd
        return pd.DataFrame(self.rows())


@dataclass
class SweepResult:
    """One row per ablated head: layer, head, logit_diff (with it ablated), delta (minus the
    clean run's); clean: the clean run's ScoreResult."""
    clean_logit_diff: float
    heads: List[dict]
    clean: ScoreResult
    mode: str = "zero"

    @classmethod
    def from_message(cls, result, mode: str) -> "SweepResult":
        return cls(clean_logit_diff=result.logit_diff,
                   heads=[{"layer": h.layer, "head": h.head, "logit_diff": h.logit_diff, "delta": h.delta}
                          for h in result.sweep_heads],
                   clean=ScoreResult.from_message(result), mode=mode)

    def rows(self) -> List[dict]:
        return [dict(h) for h in self.heads]

    def to_dataframe(self):
        import pandas as pd
        return pd.DataFrame(self.rows(), columns=["layer", "head", "logit_diff", "delta"])

    def matrix(self, value: str = "delta"):
        """(layers, heads, [len(layers), len(heads)] array of `value`), NaN where not swept."""
        if value not in ("delta", "logit_diff"):
            raise ValueError(f"value {value!r} is not 'delta' or 'logit_diff'")
        layers = sorted({h["layer"] for h in self.heads})
        heads = sorted({h["head"] for h in self.heads})
        out = np.full((len(layers), len(heads)), np.nan)
        for h in self.heads:
            out[layers.index(h["layer"]), heads.index(h["head"])] = h[value]
        return layers, heads, out

    def top(self, count: int = 10) -> List[dict]:
        """The heads whose ablation moves the logit difference most (by |delta|)."""
        return sorted(self.heads, key=lambda h: -abs(h["delta"]))[:count]
