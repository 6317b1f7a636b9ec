"""The client against a real attnscope-server on loopback (skipped without the binaries)."""

import os

import numpy as np
import pytest

from attnscope import AttnScopeError, Capture, Client
from conftest import GOLDEN


def _golden(name):
    return np.load(os.path.join(GOLDEN, name))


@pytest.fixture(scope="module")
def golden_capture(golden_server):
    with Client(golden_server.address) as client:
        return client.generate(ids=_golden("prompt_ids.npy").tolist(), max_new_tokens=12, greedy=True)


def test_golden_capture_matches_reference(golden_capture):
    prompt_ids, gen_ids = _golden("prompt_ids.npy"), _golden("gen_ids.npy")
    assert golden_capture.prompt_length == len(prompt_ids)
    np.testing.assert_array_equal(golden_capture.ids, np.concatenate([prompt_ids, gen_ids]))
    assert golden_capture.layers == [0, 1] and golden_capture.heads == [0, 1, 2, 3]
    for layer in (0, 1):
        reference = _golden(f"all_tokens_attn_L{layer}.npy")
        attention = golden_capture.attention(layer)
        assert attention.shape == reference.shape == (4, 49, 49)
        np.testing.assert_allclose(attention, reference, atol=1e-4, rtol=0)


def test_server_capture_save_load_is_exact(golden_capture, tmp_path):
    for name in ("c.safetensors", "c.npz"):
        golden_capture.save(tmp_path / name)
        loaded = Capture.load(tmp_path / name)
        np.testing.assert_array_equal(loaded.ids, golden_capture.ids)
        for layer in golden_capture.layers:
            np.testing.assert_array_equal(loaded.attention(layer), golden_capture.attention(layer))
        assert (loaded.prompt_length, loaded.heads, loaded.stop_reason) == \
            (golden_capture.prompt_length, golden_capture.heads, golden_capture.stop_reason)


def test_selected_layers_heads_and_bfloat16(golden_server, golden_capture):
    with Client(golden_server.address) as client:
        subset = client.generate(ids=_golden("prompt_ids.npy").tolist(), max_new_tokens=12, layers=[-1],
                                 heads=[1, 3], dtype="bfloat16", rows="generated")
    assert subset.layers == [1] and subset.heads == [1, 3] and subset.dtype == "bfloat16"
    prompt_length = subset.prompt_length
    full = golden_capture.attention(1)[[1, 3]]
    got = subset.attention(1)
    # Generated rows only, bfloat16 (8 significant bits: relative error below 2^-8).
    np.testing.assert_allclose(got[:, prompt_length:], full[:, prompt_length:], rtol=2 ** -8, atol=1e-7)
    assert not got[:, :prompt_length].any()


def test_model_info_and_errors(golden_server):
    with Client(golden_server.address) as client:
        info = client.model_info()
        assert info["model"]["num_layers"] == 2 and info["model"]["num_attention_heads"] == 4
        assert info["model"]["vocab_size"] == 512
        with pytest.raises(AttnScopeError) as error:
            client.generate(ids=[1, 2, 100000], max_new_tokens=1)
        assert error.value.code == "INVALID_ARGUMENT"
        assert error.value.message == "ids.ids[2] = 100000: must be in [0, vocab_size = 512)"
        # The status details (grpc-status-details-bin) hold a google.rpc.BadRequest naming the
        # refused field, its description the same human message.
        assert error.value.field_violations == [("ids.ids[2]", error.value.message)]
        with pytest.raises(AttnScopeError) as error:
            client.generate(ids=[1, 2], max_new_tokens=1, top_p=1.5)
        assert error.value.field_violations == [("generation.top_p", error.value.message)]
        assert error.value.message.startswith("generation.top_p = 1.5: must be in (0, 1]")
        with pytest.raises(AttnScopeError) as error:
            client.generate(text="no tokenizer here", max_new_tokens=1)
        assert error.value.code == "FAILED_PRECONDITION"
        # The server lacks a tokenizer: no request field is at fault.
        assert error.value.field_violations == []


def test_analyze_matches_metrics_of_the_golden_attention(golden_server):
    with Client(golden_server.address) as client:
        report = client.analyze(ids=_golden("prompt_ids.npy").tolist(), max_new_tokens=12, greedy=True)
    assert report.layers == [0, 1] and report.heads == [0, 1, 2, 3] and len(report.rows) == 8
    for layer in (0, 1):
        reference = _golden(f"all_tokens_attn_L{layer}.npy").astype(np.float64)
        total = reference.shape[-1]
        for head in range(4):
            matrix = reference[head]
            row = report.row(layer, head)
            assert row["diagonal"] == pytest.approx(np.mean(np.diag(matrix)), abs=1e-4)
            assert row["sink"] == pytest.approx(matrix[:, 0].mean(), abs=1e-4)
            entropy = -np.sum(np.where(matrix > 0, matrix * np.log(np.where(matrix > 0, matrix, 1)), 0), axis=1)
            assert row["entropy"] == pytest.approx(entropy.mean(), abs=1e-4)
            assert row["gen_diagonal"] == pytest.approx(np.diag(matrix)[37:].mean(), abs=1e-4)
        assert report.layer_stats[layer]["seq_length"] == total


def test_tiny_model_chat_capture_and_tokens(tiny_server):
    messages = [{"role": "user", "content": "Net sales rose 5%."}]
    streamed = []
    with Client(tiny_server.address) as client:
        tokens = client.tokenize(messages=messages)
        capture = client.generate(messages=messages, max_new_tokens=6, on_token=lambda e: streamed.append(e.id))
    assert "<|im_start|>" in tokens.text and "Net sales rose 5%." in tokens.text
    assert capture.ids[:capture.prompt_length].tolist() == tokens.ids
    assert capture.generated_ids.tolist() == streamed
    assert len(capture.tokens) == capture.num_tokens
    attention = capture.attention(0)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-4)
    assert not np.triu(attention, k=1).any()


def _cli(*args):
    import subprocess
    from conftest import cli_binary
    result = subprocess.run([cli_binary(), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_command_line_capture_files_load_in_python(tiny_model_dir, tmp_path):
    path = str(tmp_path / "cli.safetensors")
    _cli("capture", "--model", tiny_model_dir, "--text", "Net sales rose 5%.", "--max-new-tokens", "4",
         "--dtype", "bfloat16", "--save-logits", "--out", path)
    capture = Capture.load(path)
    assert capture.dtype == "bfloat16" and capture.prompt_length == len("Net sales rose 5%.")  # byte tokens
    total = capture.num_tokens
    assert total == capture.prompt_length + 4 and len(capture.tokens) == total
    assert capture.logits is not None and capture.logits.shape[0] == total
    for layer in capture.layers:
        attention = capture.attention(layer)
        assert attention.shape == (len(capture.heads), total, total)
        assert not np.triu(attention, k=1).any()
        np.testing.assert_allclose(attention.sum(-1), 1.0, atol=0.02)  # bfloat16 rows


def test_python_written_file_reads_in_the_command_line(tiny_model_dir, tmp_path):
    import json
    from attnscope import HeadReport
    cli_path, py_path = str(tmp_path / "cli.safetensors"), str(tmp_path / "py.safetensors")
    _cli("capture", "--model", tiny_model_dir, "--text", "Sales rose.", "--max-new-tokens", "3", "--out", cli_path)
    capture = Capture.load(cli_path)
    capture.save(py_path)
    report = HeadReport.from_json(json.loads(_cli("analyze", "--from", py_path, "--json")))
    for layer in capture.layers:
        for position, head in enumerate(capture.heads):
            matrix = capture.attention(layer)[position].astype(np.float64)
            assert report.row(layer, head)["diagonal"] == pytest.approx(np.diag(matrix).mean(), abs=1e-6)


def test_server_capture_equals_local_capture(tiny_server, tiny_model_dir, tmp_path):
    path = str(tmp_path / "local.safetensors")
    _cli("capture", "--model", tiny_model_dir, "--text", "Net income fell.", "--max-new-tokens", "5", "--out", path)
    local = Capture.load(path)
    with Client(tiny_server.address) as client:
        remote = client.generate(text="Net income fell.", max_new_tokens=5)
    np.testing.assert_array_equal(remote.ids, local.ids)
    assert remote.tokens == local.tokens and remote.generated_text == local.generated_text
    assert remote.layers == local.layers and remote.heads == local.heads
    for layer in local.layers:
        np.testing.assert_allclose(remote.attention(layer), local.attention(layer), atol=1e-6, rtol=0)
