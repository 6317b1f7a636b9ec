"""The pure-Python safetensors reader/writer against hand-built byte layouts."""

import json
import struct

import numpy as np
import pytest

from attnscope import safetensors_io
from attnscope.safetensors_io import SafetensorsError


def _hand_built_file(header: dict, data: bytes) -> bytes:
    header_bytes = json.dumps(header).encode()
    header_bytes += b" " * ((8 - (8 + len(header_bytes)) % 8) % 8)
    return struct.pack("<Q", len(header_bytes)) + header_bytes + data


def test_reads_hand_built_file_with_every_capture_dtype():
    ids = struct.pack("<3q", 7, -1, 1 << 40)
    f32 = struct.pack("<4f", 0.5, 0.25, -1.0, 3.0)
    f16 = bytes.fromhex("003c" "00c0")              # 1.0, -2.0 as IEEE half (little-endian)
    bf16 = bytes.fromhex("803f" "ab3e" "0000")      # 1.0, 0x3EAB = 0.333984375, 0.0
    data = ids + f32 + f16 + bf16
    header = {
        "__metadata__": {"format": "attnscope.capture.v1", "layers": "[0]"},
        "token_ids": {"dtype": "I64", "shape": [3], "data_offsets": [0, 24]},
        "f32": {"dtype": "F32", "shape": [2, 2], "data_offsets": [24, 40]},
        "f16": {"dtype": "F16", "shape": [2], "data_offsets": [40, 44]},
        "bf16": {"dtype": "BF16", "shape": [1, 3], "data_offsets": [44, 50]},
    }
    tensors, metadata, dtypes = safetensors_io.load_bytes(_hand_built_file(header, data))
    assert metadata == {"format": "attnscope.capture.v1", "layers": "[0]"}
    assert tensors["token_ids"].tolist() == [7, -1, 1 << 40]
    assert tensors["f32"].tolist() == [[0.5, 0.25], [-1.0, 3.0]]
    assert tensors["f16"].tolist() == [1.0, -2.0]
    assert tensors["bf16"].dtype == np.float32
    assert tensors["bf16"].tolist() == [[1.0, 0.333984375, 0.0]]
    assert dtypes == {"token_ids": "I64", "f32": "F32", "f16": "F16", "bf16": "BF16"}


def test_writer_layout_is_the_reference_layout(tmp_path):
    path = tmp_path / "t.safetensors"
    attention = np.arange(6, dtype=np.float32).reshape(1, 2, 3) / 8
    half = np.array([1.0, -2.0], dtype=np.float16)
    safetensors_io.save_file({"token_ids": np.array([5, 6], dtype=np.int64), "attention.0": attention,
                              "h": half}, str(path), {"format": "x"})
    raw = path.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    assert (8 + header_length) % 8 == 0, "data section must start 8-byte aligned"
    header = json.loads(raw[8:8 + header_length])
    assert raw[8:8 + header_length].endswith(b"}") or raw[8:8 + header_length].rstrip(b" ").endswith(b"}")
    assert header["__metadata__"] == {"format": "x"}
    # Largest element size first, contiguous offsets (the reference library rejects gaps).
    assert header["token_ids"] == {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}
    assert header["attention.0"] == {"dtype": "F32", "shape": [1, 2, 3], "data_offsets": [16, 40]}
    assert header["h"] == {"dtype": "F16", "shape": [2], "data_offsets": [40, 44]}
    data = raw[8 + header_length:]
    assert len(data) == 44
    assert struct.unpack("<2q", data[0:16]) == (5, 6)
    assert struct.unpack("<6f", data[16:40]) == tuple(v / 8 for v in range(6))
    assert data[40:44] == bytes.fromhex("003c00c0")


def test_bfloat16_rounds_to_nearest_even():
    values = np.array([1.0, 1.00390625, 1.01171875, 1.0 + 2**-7 + 2**-9, -2.5, np.inf], dtype=np.float32)
    bits = safetensors_io.float32_to_bfloat16_bits(values)
    # 1.00390625 = 0x3F808000 is a tie -> even 0x3F80; 1.01171875 = 0x3F818000 -> even 0x3F82;
    # 1 + 2^-7 + 2^-9 = 0x3F814000 is below the tie -> 0x3F81.
    assert [hex(int(b)) for b in bits] == ["0x3f80", "0x3f80", "0x3f82", "0x3f81", "0xc020", "0x7f80"]
    assert np.isnan(safetensors_io.bfloat16_bits_to_float32(
        safetensors_io.float32_to_bfloat16_bits(np.array([np.nan], dtype=np.float32))))[0]


def test_bfloat16_file_round_trip_is_exact_for_bfloat16_values(tmp_path):
    rng = np.random.default_rng(0)
    values = safetensors_io.bfloat16_bits_to_float32(
        safetensors_io.float32_to_bfloat16_bits(rng.random((2, 5, 5), dtype=np.float32)))
    path = str(tmp_path / "b.safetensors")
    safetensors_io.save_file({"a": ("BF16", values)}, path)
    tensors, _, dtypes = safetensors_io.load_file(path)
    assert dtypes["a"] == "BF16"
    np.testing.assert_array_equal(tensors["a"], values)


@pytest.mark.parametrize("header,data,message", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), "overlap"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8), "past the data section"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), "needs 12"),
    ({"a": {"dtype": "Q4", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), "unknown safetensors dtype"),
    ({"__metadata__": {"k": 1}}, b"", "strings to strings"),
])
def test_reader_rejects_malformed_headers(header, data, message):
    with pytest.raises(SafetensorsError, match=message):
        safetensors_io.load_bytes(_hand_built_file(header, data))


def test_reader_rejects_header_length_past_end():
    with pytest.raises(SafetensorsError, match="runs past the end"):
        safetensors_io.load_bytes(struct.pack("<Q", 1000) + b"{}")
