"""Capture save/load: exact round trips in every dtype and both file kinds."""

import json

import numpy as np
import pytest

from attnscope import Capture, safetensors_io


def _causal_attention(rng, heads, total):
    scores = rng.random((heads, total, total), dtype=np.float32)
    scores = np.where(np.tril(np.ones((total, total), dtype=bool)), scores, 0)
    return (scores / scores.sum(-1, keepdims=True)).astype(np.float32)


def _make_capture(dtype="float32", with_logits=False):
    rng = np.random.default_rng(1)
    total = 9
    attention = {layer: _causal_attention(rng, 2, total) for layer in (0, 3)}
    if dtype == "bfloat16":
        attention = {k: safetensors_io.bfloat16_bits_to_float32(safetensors_io.float32_to_bfloat16_bits(v))
                     for k, v in attention.items()}
    elif dtype == "float16":
        attention = {k: v.astype(np.float16).astype(np.float32) for k, v in attention.items()}
    return Capture(ids=np.arange(100, 100 + total, dtype=np.int64), prompt_length=6, layers=[0, 3],
                   heads=[1, 2], attention_by_layer=attention,
                   tokens=["<|im_start|>", "user", "Ċ", "Sales", "Ġrose", "é", "ĠThe", "Ġincrease", "."],
                   generated_text="The increase.", model="qwen2-tiny:0123abcd", dtype=dtype,
                   stop_reason="max_new_tokens",
                   logits=rng.standard_normal((total, 5)).astype(np.float32) if with_logits else None)


def _assert_same(a: Capture, b: Capture):
    np.testing.assert_array_equal(a.ids, b.ids)
    assert (a.prompt_length, a.layers, a.heads, a.tokens, a.generated_text, a.model, a.dtype, a.stop_reason) == \
        (b.prompt_length, b.layers, b.heads, b.tokens, b.generated_text, b.model, b.dtype, b.stop_reason)
    for layer in a.layers:
        assert b.attention(layer).dtype == np.float32
        np.testing.assert_array_equal(a.attention(layer), b.attention(layer))
    if a.logits is None:
        assert b.logits is None
    else:
        np.testing.assert_array_equal(a.logits, b.logits)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_load_round_trip_is_exact(tmp_path, dtype, suffix):
    capture = _make_capture(dtype, with_logits=True)
    path = tmp_path / f"capture{suffix}"
    capture.save(path)
    _assert_same(capture, Capture.load(path))


def test_file_follows_the_capture_format(tmp_path):
    capture = _make_capture("bfloat16")
    path = str(tmp_path / "c.safetensors")
    capture.save(path)
    tensors, metadata, dtypes = safetensors_io.load_file(path)
    assert dtypes == {"token_ids": "I64", "attention.0": "BF16", "attention.3": "BF16"}
    assert tensors["attention.3"].shape == (2, 9, 9)
    assert metadata["format"] == "attnscope.capture.v1"
    assert metadata["prompt_length"] == "6"
    assert json.loads(metadata["layers"]) == [0, 3] and json.loads(metadata["heads"]) == [1, 2]
    assert json.loads(metadata["tokens"])[5] == "é"
    assert (metadata["dtype"], metadata["stop_reason"], metadata["generated_text"]) == \
        ("bfloat16", "max_new_tokens", "The increase.")


def test_attention_accessors():
    capture = _make_capture()
    assert capture.attention(-1) is capture.attention(3)
    assert capture.head_index(2) == 1
    assert capture.generated_ids.tolist() == [106, 107, 108]
    with pytest.raises(KeyError, match="captured layers: \\[0, 3\\]"):
        capture.attention(1)


def test_load_rejects_other_formats(tmp_path):
    path = str(tmp_path / "model.safetensors")
    safetensors_io.save_file({"w": np.zeros(2, np.float32)}, path, {"format": "pt"})
    with pytest.raises(ValueError, match="expected 'attnscope.capture.v1'"):
        Capture.load(path)
