"""A small pure-Python (numpy only) reader and writer for safetensors files.

Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
N bytes of JSON header ``{name: {"dtype", "shape", "data_offsets": [begin, end]},
"__metadata__": {str: str}}`` padded with spaces so the data section starts on an 8-byte
boundary, then the tensor bytes (little-endian, row-major).

The writer lays tensors out contiguously (the reference library rejects gaps), ordered by
element size, largest first, then by name, so that every tensor starts at a multiple of its
own element size. The reader accepts any non-overlapping layout and checks every span.

bfloat16 has no numpy dtype: it is read into float32 (the 16 stored bits become the upper
half of the float32 bits, which is exact) and written from float32 rounding to nearest even.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, Mapping, Tuple

import numpy as np

# Largest header we accept; anything bigger is a corrupt or hostile file.
MAX_HEADER_BYTES = 100_000_000

_NUMPY_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_ELEMENT_SIZES = {name: dt.itemsize for name, dt in _NUMPY_DTYPES.items()}
_ELEMENT_SIZES["BF16"] = 2


class SafetensorsError(ValueError):
    """A malformed safetensors file; the message names the file, tensor and problem."""


def element_size(dtype: str) -> int:
    if dtype not in _ELEMENT_SIZES:
        raise SafetensorsError(f"unknown safetensors dtype {dtype!r}; known: {sorted(_ELEMENT_SIZES)}")
    return _ELEMENT_SIZES[dtype]


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32 values (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bfloat16 bit patterns, rounding to nearest even (NaN stays NaN)."""
    as_bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding_bias = ((as_bits >> 16) & 1) + np.uint32(0x7FFF)
    rounded = ((as_bits.astype(np.uint64) + rounding_bias) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if np.any(nan):
        quiet_nan = ((as_bits >> 16) | 0x0040).astype(np.uint16)
        rounded = np.where(nan, quiet_nan, rounded)
    return rounded.astype(np.uint16)


def _numpy_dtype_name(array: np.ndarray) -> str:
    for name, dt in _NUMPY_DTYPES.items():
        if array.dtype.newbyteorder("<") == dt or array.dtype == dt:
            return name
    raise SafetensorsError(f"numpy dtype {array.dtype} has no safetensors equivalent")


def save_file(tensors: Mapping[str, object], path: str, metadata: Mapping[str, str] | None = None) -> None:
    """Writes `tensors` ({name: np.ndarray or (dtype_name, np.ndarray)}) to `path`.

    A plain array is stored in its own dtype; a ("BF16", float32 array) pair is stored as
    bfloat16 (and ("F16"/"F32", array) converts). The file is written under a temporary name
    and renamed, so readers never see half a file.
    """
    entries = []  # (name, dtype_name, shape, bytes)
    for name, value in tensors.items():
        if name == "__metadata__":
            raise SafetensorsError("tensor name '__metadata__' is reserved")
        if isinstance(value, tuple):
            dtype_name, array = value
            array = np.asarray(array)
            if dtype_name == "BF16":
                raw = float32_to_bfloat16_bits(array.astype(np.float32)).tobytes()
            else:
                raw = np.ascontiguousarray(array, dtype=_NUMPY_DTYPES[dtype_name]).tobytes()
        else:
            array = np.asarray(value)
            dtype_name = _numpy_dtype_name(array)
            raw = np.ascontiguousarray(array, dtype=_NUMPY_DTYPES[dtype_name]).tobytes()
        entries.append((name, dtype_name, [int(d) for d in array.shape], raw))

    entries.sort(key=lambda e: (-element_size(e[1]), e[0]))
    header: Dict[str, object] = {}
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise SafetensorsError(f"metadata must map str to str; {key!r} -> {type(value).__name__}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype_name, shape, raw in entries:
        header[name] = {"dtype": dtype_name, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * ((8 - (8 + len(header_bytes)) % 8) % 8)

    tmp_path = f"{path}.tmp{os.getpid()}"
    with open(tmp_path, "wb") as out:
        out.write(struct.pack("<Q", len(header_bytes)))
        out.write(header_bytes)
        for _, _, _, raw in entries:
            out.write(raw)
    os.replace(tmp_path, path)


def read_header(data: bytes, file_name: str = "<bytes>") -> Tuple[dict, Dict[str, str], int]:
    """Parses and validates the header; returns (tensor entries, metadata, data section start)."""
    if len(data) < 8:
        raise SafetensorsError(f"{file_name}: {len(data)} bytes is shorter than the 8-byte header length")
    (header_length,) = struct.unpack("<Q", data[:8])
    if header_length > MAX_HEADER_BYTES:
        raise SafetensorsError(f"{file_name}: header length {header_length} exceeds the limit {MAX_HEADER_BYTES}")
    if 8 + header_length > len(data):
        raise SafetensorsError(
            f"{file_name}: header length {header_length} runs past the end of the file ({len(data)} bytes)")
    try:
        header = json.loads(data[8:8 + header_length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SafetensorsError(f"{file_name}: header is not valid JSON: {error}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{file_name}: header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise SafetensorsError(f"{file_name}: __metadata__ must map strings to strings")
    data_start = 8 + header_length
    data_size = len(data) - data_start
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise SafetensorsError(f"{file_name}: tensor {name!r} lacks dtype, shape or data_offsets")
        size = element_size(entry["dtype"])
        shape = entry["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise SafetensorsError(f"{file_name}: tensor {name!r} has invalid shape {shape!r}")
        begin, end = entry["data_offsets"]
        expected = size * int(np.prod(shape, dtype=np.int64)) if shape else size
        if not (isinstance(begin, int) and isinstance(end, int)) or begin < 0 or end < begin:
            raise SafetensorsError(f"{file_name}: tensor {name!r} has invalid data_offsets {[begin, end]}")
        if end - begin != expected:
            raise SafetensorsError(
                f"{file_name}: tensor {name!r} spans {end - begin} bytes but {entry['dtype']} x {shape} "
                f"needs {expected}")
        if end > data_size:
            raise SafetensorsError(
                f"{file_name}: tensor {name!r} ends at byte {end} past the data section ({data_size} bytes)")
        spans.append((begin, end, name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise SafetensorsError(f"{file_name}: tensors {n0!r} and {n1!r} overlap")
    return header, metadata, data_start


def load_bytes(data: bytes, file_name: str = "<bytes>") -> Tuple[Dict[str, np.ndarray], Dict[str, str], Dict[str, str]]:
    """Returns (tensors, metadata, dtype name per tensor); BF16 tensors come back as float32."""
    header, metadata, data_start = read_header(data, file_name)
    tensors: Dict[str, np.ndarray] = {}
    dtypes: Dict[str, str] = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        raw = data[data_start + begin:data_start + end]
        shape = tuple(entry["shape"])
        if entry["dtype"] == "BF16":
            array = bfloat16_bits_to_float32(np.frombuffer(raw, dtype="<u2")).reshape(shape)
        else:
            array = np.frombuffer(raw, dtype=_NUMPY_DTYPES[entry["dtype"]]).reshape(shape).copy()
        tensors[name] = array
        dtypes[name] = entry["dtype"]
    return tensors, metadata, dtypes


def load_file(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str], Dict[str, str]]:
    with open(path, "rb") as f:
        data = f.read()
    return load_bytes(data, str(path))
