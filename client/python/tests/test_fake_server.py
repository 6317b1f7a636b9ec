"""The client, the example script, the notebook and dataset runs over real gRPC against the
protocol-faithful stand-in (fake_server.py); the same paths against attnscope-server are in
test_server.py and test_examples.py."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from attnscope import AttnScopeError, Client, IncompleteStreamError
from conftest import REPO
from fake_server import FakeServer, attention_matrix

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


@pytest.fixture(scope="module")
def fake():
    server = FakeServer()
    yield server
    server.stop()


def test_generate_over_grpc_reassembles(fake):
    with Client(fake.address) as client:
        capture = client.generate(text="Net sales rose.", max_new_tokens=5, layers=[0, 2], heads=[1, 3])
    assert capture.ids.tolist() == list(b"Net sales rose.") + list(b"incre")
    assert capture.layers == [0, 2] and capture.heads == [1, 3]
    total = capture.num_tokens
    np.testing.assert_array_equal(capture.attention(2)[1], attention_matrix(2, 3, total))


def test_server_errors_become_attnscope_errors(fake):
    with Client(fake.address) as client:
        with pytest.raises(AttnScopeError) as error:
            client.generate(ids=[1, 999], max_new_tokens=1)
    assert error.value.code == "INVALID_ARGUMENT" and "[0, 256)" in error.value.message


def test_lost_chunk_over_grpc_raises():
    server = FakeServer(drop_chunk=4)
    try:
        with Client(server.address) as client, pytest.raises(IncompleteStreamError, match="sequence number 5"):
            client.generate(text="abc", max_new_tokens=4)
    finally:
        server.stop()


def test_unreachable_server_raises_unavailable():
    with Client("127.0.0.1:1", timeout=5) as client, pytest.raises(AttnScopeError) as error:
        client.model_info()
    assert error.value.code == "UNAVAILABLE"


def test_example_script_runs_end_to_end(fake, tmp_path):
    script = os.path.join(REPO, "client", "python", "examples", "attention_head_analysis.py")
    result = subprocess.run([PYTHON, script, "--server", fake.address, "--out", str(tmp_path), "--max-new-tokens", "8"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr[-3000:]
    pngs = sorted(p for p in os.listdir(tmp_path) if p.endswith(".png"))
    assert {"head_grid_L1.png", "head_types.png", "top_k_sales_L1.png", "top_k_increase_L1.png"} <= set(pngs)
    assert any(p.startswith("heatmap_L0_") for p in pngs) and any(p.startswith("term_attention_") for p in pngs)
    assert "prediction: increase" in result.stdout
    assert "Layer 2: head specialization" in result.stdout


def test_batch_cli_over_grpc(fake, tmp_path):
    command = [PYTHON, "-m", "attnscope", "batch", "--server", fake.address,
               "--data", os.path.join(REPO, "config", "sample_data", "financial_statements.json"),
               "--prompts", os.path.join(REPO, "config", "prompts.yaml"), "--prompt", "prompt_1",
               "--out", str(tmp_path), "--limit", "4", "--concurrency", "2", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            cwd=os.path.join(REPO, "client", "python"))
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "heads.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 3 * 4
    assert {r["prediction"] for r in rows} == {"increase"}


def test_api_key_travels_as_bearer_metadata():
    server = FakeServer(api_key="s3cret")
    try:
        with Client(server.address) as client, pytest.raises(AttnScopeError) as error:
            client.model_info()
        assert error.value.code == "UNAUTHENTICATED"
        tokens = []
        with Client(server.address, token="s3cret") as client:
            assert client.model_info()["model"]["num_layers"] == 3
            capture = client.generate(text="ab", max_new_tokens=3, on_token=lambda e: tokens.append(e.id))
        assert tokens == list(b"inc") == capture.generated_ids.tolist()
    finally:
        server.stop()
