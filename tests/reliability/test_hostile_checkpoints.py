"""Hostile checkpoints: a model folder an attacker (or a broken download) wrote. Each case
copies the tiny model, breaks one file, starts attnscope-server on it and expects what
docs/reliability.md promises: exit code 1 within a bounded time, no signal, and one error
line on stderr naming the file, the field and what is wrong.

Deep nesting is the case that crashed (SIGSEGV) before JSON reads had a depth limit:
nlohmann parses a million nested arrays iteratively, but copying or printing them recurses
once per level. 200 000 levels overflow an 8 MiB thread stack by far.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

import harness

DEPTH = 200_000
START_LIMIT_S = 60.0


def deep_array(depth: int = DEPTH) -> str:
    return "[" * depth + "]" * depth


def copy_model(tiny_model: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(tiny_model, target)
    return target


def edit_json_text(path: Path, key: str, raw_value: str) -> None:
    """Sets top-level `key` to raw JSON text (which json.dumps could not build: too deep)."""
    document = json.loads(path.read_text())
    document[key] = "__RAW__"
    path.write_text(json.dumps(document).replace('"__RAW__"', raw_value, 1))


def start_and_fail(model_dir: Path, tmp_path: Path) -> str:
    """Runs the server on `model_dir`; asserts exit 1 (no signal, no hang) and returns the
    one error line of stderr."""
    config = harness.base_config(model_dir)
    config["log_level"] = "info"
    config_path = tmp_path / "server.yaml"
    config_path.write_text(yaml.safe_dump(config))
    try:
        done = subprocess.run([harness.server_binary(), "--config", str(config_path)],
                              capture_output=True, text=True, errors="replace",
                              timeout=START_LIMIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"attnscope-server still running after {START_LIMIT_S} s on a bad model")
    assert done.returncode == 1, (
        f"exit {done.returncode} (negative: killed by signal {-done.returncode}); "
        f"stderr tail: {done.stderr[-2000:]}")
    assert "listening on port" not in done.stdout, "a bad model must not open the port"
    errors = [line for line in done.stderr.splitlines() if "[error]" in line]
    assert len(errors) == 1, done.stderr[-2000:]
    line = errors[0]
    assert len(line) < 600, f"the error line must be short, got {len(line)} bytes"
    return line


def assert_names(line: str, *parts: str) -> None:
    for part in parts:
        assert part in line, f"{part!r} not in {line!r}"


@pytest.mark.parametrize("key", ["rope_scaling", "sliding_window"])
def test_config_json_deep_nesting_is_a_load_error(tiny_model, tmp_path, key):
    model = copy_model(tiny_model, tmp_path)
    edit_json_text(model / "config.json", key, deep_array())
    line = start_and_fail(model, tmp_path)
    assert_names(line, "config.json", f"'{key}'", "nested deeper than 64")


@pytest.mark.parametrize("key", ["pre_tokenizer", "normalizer"])
def test_tokenizer_json_deep_nesting_is_a_load_error(tiny_model, tmp_path, key):
    model = copy_model(tiny_model, tmp_path)
    edit_json_text(model / "tokenizer.json", key, '{"type":"Sequence","x":' + deep_array() + "}")
    line = start_and_fail(model, tmp_path)
    assert_names(line, "tokenizer.json", f"'{key}'", "nested deeper than 64")


@pytest.mark.parametrize("name", ["tokenizer_config.json", "generation_config.json"])
def test_other_json_files_deep_nesting_is_a_load_error(tiny_model, tmp_path, name):
    model = copy_model(tiny_model, tmp_path)
    edit_json_text(model / name, "deep", deep_array())
    line = start_and_fail(model, tmp_path)
    assert_names(line, name, "'deep'", "nested deeper than 64")


def test_safetensors_deep_shape_is_a_load_error(tiny_model, tmp_path):
    model = copy_model(tiny_model, tmp_path)
    path = model / "model.safetensors"
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length])
    name = next(key for key in header if key != "__metadata__")
    header[name]["shape"] = "__RAW__"
    text = json.dumps(header).replace('"__RAW__"', "[1," + deep_array() + "]", 1).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + length:])
    line = start_and_fail(model, tmp_path)
    assert_names(line, "model.safetensors", f"'{name}'", "nested deeper than 64")


@pytest.mark.parametrize("key,value,problem", [
    ("model_type", 5, "must be a string"),
    ("model_type", {"a": [1]}, "must be a string"),
    ("torch_dtype", [], "must be a string"),
    ("hidden_act", 1, "must be a string"),
    ("tie_word_embeddings", "yes", "must be true or false"),
    ("use_sliding_window", 1, "must be true or false"),
    ("rope_theta", 0, "must be a finite number > 0"),
    ("rope_theta", -10000.0, "must be a finite number > 0"),
    ("rope_theta", "1e4", "must be a finite number > 0"),
    ("rms_norm_eps", -1e-6, "must be a finite number > 0"),
    ("rms_norm_eps", 0, "must be a finite number > 0"),
])
def test_config_json_field_of_the_wrong_type_or_range(tiny_model, tmp_path, key, value,
                                                      problem):
    model = copy_model(tiny_model, tmp_path)
    path = model / "config.json"
    document = json.loads(path.read_text())
    document[key] = value
    path.write_text(json.dumps(document))
    line = start_and_fail(model, tmp_path)
    assert_names(line, "config.json", f"'{key}'", problem)


def test_tokenizer_ids_beyond_the_config_vocabulary(tiny_model, tmp_path):
    model = copy_model(tiny_model, tmp_path)
    path = model / "tokenizer.json"
    document = json.loads(path.read_text())
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    document["added_tokens"].append({"id": vocab + 40, "content": "<|beyond|>", "special": True})
    path.write_text(json.dumps(document))
    line = start_and_fail(model, tmp_path)
    assert_names(line, "tokenizer.json", f"largest token id {vocab + 40}",
                 f"vocab_size = {vocab}", "config.json")
