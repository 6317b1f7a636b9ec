"""`Capture`: one generation's tokens and captured attention, as numpy arrays.

The on-disk format is "attnscope.capture.v1", the same safetensors file the `attnscope
capture` command line writes:
  token_ids          I64 [T]                   prompt then generated ids
  attention.<layer>  F32|F16|BF16 [H_sel, T, T] query rows by key columns, zeros above the diagonal
  logits             F32 [T, vocab]            optional
  __metadata__       format, prompt_length, layers, heads (JSON lists), tokens (JSON list),
                     model, dtype, stop_reason, generated_text
A `.npz` file holds the same arrays (attention_<layer>) plus the metadata as JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from attnscope import safetensors_io

FORMAT = "attnscope.capture.v1"

# Capture dtype name -> safetensors dtype name.
_SAFETENSORS_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_DTYPE_FROM_SAFETENSORS = {v: k for k, v in _SAFETENSORS_DTYPE.items()}


@dataclass
class Capture:
    """Token ids, token strings and the [H_sel, T, T] attention of every captured layer."""

    ids: np.ndarray                                   # int64 [T]
    prompt_length: int
    layers: List[int]
    heads: List[int]
    attention_by_layer: Dict[int, np.ndarray]         # layer -> float32 [H_sel, T, T]
    tokens: List[str] = field(default_factory=list)   # display strings; empty without tokenizer
    generated_text: str = ""
    model: str = ""
    dtype: str = "float32"                            # precision the values were captured in
    stop_reason: str = ""
    logits: Optional[np.ndarray] = None               # float32 [T, vocab] when captured
    prompt_text: str = ""                             # rendered prompt (not stored in files)

    @property
    def num_tokens(self) -> int:
        return int(self.ids.shape[0])

    @property
    def generated_ids(self) -> np.ndarray:
        return self.ids[self.prompt_length:]

    def attention(self, layer: int) -> np.ndarray:
        """The [H_sel, T, T] float32 attention of `layer` (negative counts from the end of `layers`)."""
        if layer < 0:
            if -layer > len(self.layers):
                raise KeyError(f"layer {layer}: only {len(self.layers)} layers were captured")
            layer = self.layers[layer]
        if layer not in self.attention_by_layer:
            raise KeyError(f"layer {layer} was not captured; captured layers: {self.layers}")
        return self.attention_by_layer[layer]

    def head_index(self, head: int) -> int:
        """Position of model head `head` in the captured head axis."""
        if head not in self.heads:
            raise KeyError(f"head {head} was not captured; captured heads: {self.heads}")
        return self.heads.index(head)

    def token_labels(self) -> List[str]:
        """Display strings, or the ids as text when the model has no tokenizer."""
        if len(self.tokens) == self.num_tokens:
            return list(self.tokens)
        return [str(int(i)) for i in self.ids]

    # ---- files -------------------------------------------------------------------------------

    def metadata(self) -> Dict[str, str]:
        return {
            "format": FORMAT,
            "prompt_length": str(self.prompt_length),
            "layers": json.dumps([int(x) for x in self.layers]),
            "heads": json.dumps([int(x) for x in self.heads]),
            "tokens": json.dumps(list(self.tokens), ensure_ascii=False),
            "model": self.model,
            "dtype": self.dtype,
            "stop_reason": self.stop_reason,
            "generated_text": self.generated_text,
        }

    def save(self, path) -> None:
        """Writes a .safetensors capture file (or .npz, chosen by the suffix)."""
        path = os.fspath(path)
        if path.endswith(".npz"):
            arrays = {"token_ids": np.asarray(self.ids, dtype=np.int64),
                      "__metadata__": np.array(json.dumps(self.metadata(), ensure_ascii=False))}
            for layer in self.layers:
                arrays[f"attention_{layer}"] = self.attention_by_layer[layer]
            if self.logits is not None:
                arrays["logits"] = self.logits
            tmp_path = f"{path}.tmp{os.getpid()}.npz"
            np.savez(tmp_path, **arrays)
            os.replace(tmp_path, path)
            return
        if self.dtype not in _SAFETENSORS_DTYPE:
            raise ValueError(f"capture dtype {self.dtype!r} is not one of {sorted(_SAFETENSORS_DTYPE)}")
        tensors = {"token_ids": np.asarray(self.ids, dtype=np.int64)}
        for layer in self.layers:
            tensors[f"attention.{layer}"] = (_SAFETENSORS_DTYPE[self.dtype], self.attention_by_layer[layer])
        if self.logits is not None:
            tensors["logits"] = ("F32", self.logits)
        safetensors_io.save_file(tensors, path, self.metadata())

    @classmethod
    def load(cls, path) -> "Capture":
        """Reads a capture written by `save`, by `attnscope capture`, or a .npz."""
        path = os.fspath(path)
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as npz:
                metadata = json.loads(str(npz["__metadata__"]))
                tensors = {k: npz[k] for k in npz.files if k != "__metadata__"}
            attention_prefix = "attention_"
            dtype = metadata.get("dtype", "float32")
        else:
            tensors, metadata, dtypes = safetensors_io.load_file(path)
            attention_prefix = "attention."
            attention_dtypes = {dtypes[k] for k in dtypes if k.startswith(attention_prefix)}
            dtype = metadata.get("dtype") or (
                _DTYPE_FROM_SAFETENSORS[attention_dtypes.pop()] if len(attention_dtypes) == 1 else "float32")
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path}: metadata format is {metadata.get('format')!r}, expected {FORMAT!r}")
        if "token_ids" not in tensors:
            raise ValueError(f"{path}: no token_ids tensor")
        layers = json.loads(metadata.get("layers", "[]"))
        attention = {}
        for layer in layers:
            name = f"{attention_prefix}{layer}"
            if name not in tensors:
                raise ValueError(f"{path}: metadata lists layer {layer} but tensor {name!r} is missing")
            attention[int(layer)] = np.asarray(tensors[name], dtype=np.float32)
        logits = tensors.get("logits")
        return cls(
            ids=np.asarray(tensors["token_ids"], dtype=np.int64),
            prompt_length=int(metadata.get("prompt_length", "0")),
            layers=[int(x) for x in layers],
            heads=[int(x) for x in json.loads(metadata.get("heads", "[]"))],
            attention_by_layer=attention,
            tokens=json.loads(metadata["tokens"]) if metadata.get("tokens") else [],
            generated_text=metadata.get("generated_text", ""),
            model=metadata.get("model", ""),
            dtype=dtype,
            stop_reason=metadata.get("stop_reason", ""),
            logits=None if logits is None else np.asarray(logits, dtype=np.float32),
        )

    # ---- viewer ------------------------------------------------------------------------------

    def show(self, report=None, heads=None, max_bytes=None):
        """The interactive attention viewer inline in Jupyter (the `attnscope view` page).

        report: a HeadReport, its JSON (dict/text) or a path; heads: [(layer, head | "mean")]
        to embed in full; max_bytes: budget for full matrices (default 20 MB). Every head gets
        a thumbnail either way."""
        from attnscope import viewer
        document = viewer.view_document(self, report=report, heads=heads,
                                        max_bytes=viewer.DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
        return viewer.ViewerHTML(viewer.inline_html(document))

    def _repr_html_(self) -> str:
        return self.show()._repr_html_()

    def save_view(self, path, report=None, heads=None, max_bytes=None) -> None:
        """Writes the viewer as one self-contained HTML file (as `attnscope view --out`)."""
        from attnscope import viewer
        document = viewer.view_document(self, report=report, heads=heads,
                                        max_bytes=50_000_000 if max_bytes is None else max_bytes)
        with open(os.fspath(path), "w", encoding="utf-8") as f:
            f.write(viewer.page_html(document))

    def __repr__(self) -> str:
        return (f"Capture(tokens={self.num_tokens}, prompt_length={self.prompt_length}, "
                f"layers={self.layers}, heads={self.heads}, dtype={self.dtype!r}, "
                f"stop_reason={self.stop_reason!r})")
