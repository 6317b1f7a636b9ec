"""Reassembles a GenerateWithAttention stream into a `Capture`, verifying it on the way.

Checks, each raising IncompleteStreamError (code DATA_LOSS) with what was wrong:
- a Header first, a Final last, nothing after Final, and the stream did end with Final;
- chunk sequence numbers 0, 1, 2, ... without gaps; Final.total_chunks, total_attention_bytes
  and data_crc32 (zlib CRC-32 over every chunk's data in order) match what arrived;
- every chunk is consistent (layer and heads captured, dtype, shape, data size, key length);
- no (layer, row, head) arrives twice, and every one the row selection promises arrived;
- Final.generated_ids equal the streamed token events.
"""

from __future__ import annotations

import zlib
from typing import Callable, Dict, List, Optional

import numpy as np

from attnscope import _protogen
from attnscope.capture import Capture
from attnscope.errors import IncompleteStreamError
from attnscope.safetensors_io import bfloat16_bits_to_float32

pb2, _ = _protogen.load()

# proto DType value (the generated constants, never hand-typed numbers) -> (name, numpy dtype
# of the wire bytes). DTYPE_UNSPECIFIED means float32.
_DTYPES = {pb2.DTYPE_UNSPECIFIED: ("float32", "<f4"), pb2.DTYPE_FLOAT32: ("float32", "<f4"),
           pb2.DTYPE_FLOAT16: ("float16", "<f2"), pb2.DTYPE_BFLOAT16: ("bfloat16", "<u2")}
ROWS_ALL, ROWS_PROMPT_ONLY, ROWS_GENERATED_ONLY = pb2.ROWS_ALL, pb2.ROWS_PROMPT_ONLY, pb2.ROWS_GENERATED_ONLY


class StreamAssembler:
    """Feed it every GenerateResponse in order, then call finish()."""

    def __init__(self, on_token: Optional[Callable] = None, on_progress: Optional[Callable] = None):
        self._on_token = on_token
        self._on_progress = on_progress
        self.header = None
        self.final = None
        self.generated_ids: List[int] = []
        self.generated_tokens: List[str] = []
        self.generated_pieces: List[str] = []
        self.chunks_received = 0
        self.bytes_received = 0
        self._crc = 0
        # layer -> list of (head positions, first_row, num_rows, key_length, float32 values)
        self._slices: Dict[int, list] = {}
        # layer -> {row: bool array over captured heads}
        self._coverage: Dict[int, Dict[int, np.ndarray]] = {}

    def feed(self, response) -> None:
        kind = response.WhichOneof("event")
        if self.final is not None:
            raise IncompleteStreamError(f"a {kind} message arrived after Final")
        if kind == "header":
            if self.header is not None:
                raise IncompleteStreamError("a second Header arrived")
            self.header = response.header
            self._layers = list(self.header.capture.layers)
            self._heads = list(self.header.capture.heads)
            self._head_position = {h: i for i, h in enumerate(self._heads)}
            self._dtype_name, self._wire_dtype = _DTYPES.get(self.header.capture.dtype, (None, None))
            if self._dtype_name is None:
                raise IncompleteStreamError(f"Header has unknown capture dtype {self.header.capture.dtype}")
            for layer in self._layers:
                self._slices[layer] = []
                self._coverage[layer] = {}
            return
        if self.header is None:
            raise IncompleteStreamError(f"the stream began with {kind}, not Header")
        if kind == "token":
            self._add_token(response.token)
        elif kind == "chunk":
            self._add_chunk(response.chunk)
        elif kind == "final":
            self.final = response.final
        else:
            raise IncompleteStreamError(f"unknown stream message {kind!r}")

    def _add_token(self, token) -> None:
        expected_position = len(self.header.prompt_ids) + len(self.generated_ids)
        if token.position != expected_position:
            raise IncompleteStreamError(
                f"token event at position {token.position}, expected {expected_position}")
        self.generated_ids.append(int(token.id))
        self.generated_tokens.append(token.token)
        self.generated_pieces.append(token.text)
        if self._on_token is not None:
            self._on_token(token)
        if self._on_progress is not None:
            self._on_progress(self)

    def _add_chunk(self, chunk) -> None:
        if chunk.sequence_number != self.chunks_received:
            raise IncompleteStreamError(
                f"chunk sequence number {chunk.sequence_number} arrived where {self.chunks_received} "
                f"was expected (a chunk was lost or reordered)")
        where = f"chunk {chunk.sequence_number} (layer {chunk.layer}, rows {chunk.first_row}+{chunk.num_rows})"
        if chunk.layer not in self._slices:
            raise IncompleteStreamError(f"{where}: layer {chunk.layer} is not captured ({self._layers})")
        heads = list(chunk.heads)
        if not heads or any(h not in self._head_position for h in heads):
            raise IncompleteStreamError(f"{where}: heads {heads} are not a subset of the captured {self._heads}")
        if _DTYPES.get(chunk.dtype, (None,))[0] != self._dtype_name:
            raise IncompleteStreamError(f"{where}: dtype {chunk.dtype} differs from the header's")
        shape = [len(heads), chunk.num_rows, chunk.key_length]
        if list(chunk.shape) != shape:
            raise IncompleteStreamError(f"{where}: shape {list(chunk.shape)} is not [heads, rows, keys] = {shape}")
        if chunk.num_rows <= 0 or chunk.first_row < 0 or chunk.key_length <= 0 or \
                chunk.key_length != chunk.first_row + chunk.num_rows:
            raise IncompleteStreamError(f"{where}: invalid rows/key_length (key_length {chunk.key_length})")
        element_count = shape[0] * shape[1] * shape[2]
        expected_bytes = element_count * np.dtype(self._wire_dtype).itemsize
        if len(chunk.data) != expected_bytes:
            raise IncompleteStreamError(f"{where}: data holds {len(chunk.data)} bytes, shape needs {expected_bytes}")

        raw = np.frombuffer(chunk.data, dtype=self._wire_dtype)
        values = bfloat16_bits_to_float32(raw) if self._dtype_name == "bfloat16" else raw.astype(np.float32)
        positions = [self._head_position[h] for h in heads]
        coverage = self._coverage[chunk.layer]
        for row in range(chunk.first_row, chunk.first_row + chunk.num_rows):
            seen = coverage.setdefault(row, np.zeros(len(self._heads), dtype=bool))
            if seen[positions].any():
                raise IncompleteStreamError(f"{where}: row {row} of heads {heads} arrived twice")
            seen[positions] = True
        self._slices[chunk.layer].append(
            (positions, chunk.first_row, chunk.num_rows, chunk.key_length, values.reshape(shape)))
        self.chunks_received += 1
        self.bytes_received += len(chunk.data)
        self._crc = zlib.crc32(chunk.data, self._crc)
        if self._on_progress is not None:
            self._on_progress(self)

    def _expected_rows(self, total: int) -> range:
        prompt_length = len(self.header.prompt_ids)
        selection = self.header.capture.rows
        if selection == ROWS_PROMPT_ONLY:
            return range(0, prompt_length)
        if selection == ROWS_GENERATED_ONLY:
            return range(prompt_length, total)
        return range(0, total)

    def finish(self) -> Capture:
        """Verifies the whole stream and returns the Capture."""
        if self.header is None:
            raise IncompleteStreamError("the stream ended before its Header")
        if self.final is None:
            raise IncompleteStreamError(
                f"the stream ended without its Final message after {self.chunks_received} chunks and "
                f"{len(self.generated_ids)} tokens")
        final = self.final
        if final.total_chunks != self.chunks_received:
            raise IncompleteStreamError(
                f"Final reports {final.total_chunks} chunks, {self.chunks_received} arrived")
        if final.total_attention_bytes != self.bytes_received:
            raise IncompleteStreamError(
                f"Final reports {final.total_attention_bytes} attention bytes, {self.bytes_received} arrived")
        if final.data_crc32 != (self._crc & 0xFFFFFFFF):
            raise IncompleteStreamError(
                f"CRC-32 of the chunk data is {self._crc:#010x}, Final reports {final.data_crc32:#010x}")
        if list(final.generated_ids) != self.generated_ids:
            raise IncompleteStreamError(
                f"Final lists {len(final.generated_ids)} generated ids that differ from the "
                f"{len(self.generated_ids)} streamed tokens")

        prompt_ids = [int(i) for i in self.header.prompt_ids]
        total = len(prompt_ids) + len(self.generated_ids)
        expected_rows = self._expected_rows(total)
        attention: Dict[int, np.ndarray] = {}
        for layer in self._layers:
            coverage = self._coverage[layer]
            extra = sorted(r for r in coverage if r not in expected_rows)
            if extra:
                raise IncompleteStreamError(f"layer {layer}: rows {extra[:5]} are outside the capture "
                                            f"(T = {total}, rows {expected_rows.start}..{expected_rows.stop - 1})")
            for row in expected_rows:
                seen = coverage.get(row)
                if seen is None or not seen.all():
                    missing = self._heads if seen is None else [h for h, s in zip(self._heads, seen) if not s]
                    raise IncompleteStreamError(f"layer {layer}: row {row} of heads {missing} never arrived")
            dense = np.zeros((len(self._heads), total, total), dtype=np.float32)
            for positions, first_row, num_rows, key_length, values in self._slices[layer]:
                dense[positions, first_row:first_row + num_rows, :key_length] = values
            attention[layer] = dense
        self._slices.clear()

        tokens: List[str] = []
        if len(self.header.prompt_tokens) == len(prompt_ids):
            tokens = list(self.header.prompt_tokens) + self.generated_tokens
        model = self.header.model
        return Capture(
            ids=np.asarray(prompt_ids + self.generated_ids, dtype=np.int64),
            prompt_length=len(prompt_ids),
            layers=self._layers,
            heads=self._heads,
            attention_by_layer=attention,
            tokens=tokens,
            generated_text=final.generated_text,
            # "NAME fnv1a64:<hash>", the label the command line writes for the same stream.
            model=f"{model.name} {model.config_sha256}" if model.config_sha256 else model.name,
            dtype=self._dtype_name,
            stop_reason=final.stop_reason,
            prompt_text=self.header.prompt_text,
        )
