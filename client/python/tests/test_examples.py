"""The example notebook/script and dataset runs, end to end: against the stand-in server
(always) and against attnscope-server on the tiny model (when it is built)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from fake_server import FakeServer

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
EXAMPLES = os.path.join(REPO, "client", "python", "examples")
DATA = os.path.join(REPO, "config", "sample_data", "financial_statements.json")
PROMPTS = os.path.join(REPO, "config", "prompts.yaml")
sys.path.insert(0, EXAMPLES)


def test_committed_notebook_is_the_script():
    import make_notebook
    with open(make_notebook.NOTEBOOK, encoding="utf-8") as f:
        assert f.read() == make_notebook.notebook_json(make_notebook.SCRIPT.read_text()), \
            "run client/python/examples/make_notebook.py after editing the script"


def _execute_notebook(address, out_dir, monkeypatch):
    # python3-nbformat and python3-nbclient: scripts/install-deps.sh installs them.
    import nbclient
    import nbformat
    monkeypatch.setenv("ATTNSCOPE_SERVER", address)
    monkeypatch.setenv("ATTNSCOPE_OUT", str(out_dir))
    monkeypatch.setenv("ATTNSCOPE_MAX_NEW_TOKENS", "8")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(os.path.join(EXAMPLES, "attention_head_analysis.ipynb"), as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": EXAMPLES}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 8, "every figure is shown inline"
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


def test_notebook_executes_headlessly_against_stand_in(tmp_path, monkeypatch):
    server = FakeServer()
    try:
        text = _execute_notebook(server.address, tmp_path, monkeypatch)
    finally:
        server.stop()
    assert "prediction: increase" in text
    assert (tmp_path / "capture.safetensors").exists()


def test_notebook_executes_headlessly_against_server(tiny_server, tmp_path, monkeypatch):
    text = _execute_notebook(tiny_server.address, tmp_path, monkeypatch)
    assert "head specialization" in text
    pngs = [p for p in os.listdir(tmp_path) if p.endswith(".png")]
    assert len(pngs) >= 8


def test_script_runs_end_to_end_against_server(tiny_server, tmp_path):
    from attnscope import Capture
    result = subprocess.run([PYTHON, os.path.join(EXAMPLES, "attention_head_analysis.py"), "--server",
                             tiny_server.address, "--out", str(tmp_path), "--max-new-tokens", "8"],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr[-3000:]
    capture = Capture.load(tmp_path / "capture.safetensors")
    assert capture.num_tokens == capture.prompt_length + len(capture.generated_ids)
    assert any(p.startswith("heatmap_L0_") for p in os.listdir(tmp_path))


def _batch_command(address, out_dir, limit):
    return [PYTHON, "-m", "attnscope", "batch", "--server", address, "--data", DATA, "--prompts", PROMPTS,
            "--prompt", "prompt_1", "--out", str(out_dir), "--max-new-tokens", "4", "--no-progress", "--request-timeout", "120",
            "--limit", str(limit)]


def test_batch_against_server_writes_every_head_and_resumes(own_tiny_server, tmp_path):
    tiny_server = own_tiny_server
    from attnscope import Client
    with Client(tiny_server.address) as client:
        model = client.model_info()["model"]
    layers, heads = model["num_layers"], model["num_attention_heads"]
    limit = 10
    cwd = os.path.join(REPO, "client", "python")
    item_dir = tmp_path / "items"
    process = subprocess.Popen(_batch_command(tiny_server.address, tmp_path, limit), cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        done = [p for p in os.listdir(item_dir)] if item_dir.exists() else []
        if len([p for p in done if p.endswith(".json") and not p.endswith(".error.json")]) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # an interruption: no chance to clean up
    process.wait()
    # The engine runs one request at a time: once a probe behind it is answered, the request
    # the killed client left in flight has finished too.
    from attnscope import AttnScopeError
    try:
        with Client(tiny_server.address, timeout=60) as client:
            client.generate(text="probe", max_new_tokens=1)
    except AttnScopeError as error:
        pytest.fail(f"attnscope-server stopped answering after a client was killed mid-request ({error}):\n"
                    + tiny_server.log())
    time.sleep(0.5)
    assert tiny_server.process.poll() is None, \
        f"attnscope-server died (exit {tiny_server.process.returncode}) when the client was killed mid-request:\n" \
        + tiny_server.log()
    finished_before = sorted(p for p in os.listdir(item_dir) if p.endswith(".json") and ".error" not in p)
    assert 3 <= len(finished_before), "the first run finished too few items before the interruption"

    result = subprocess.run(_batch_command(tiny_server.address, tmp_path, limit), cwd=cwd, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["skipped"] == len(finished_before) and counts["finished"] == limit and counts["failed"] == 0
    with open(tmp_path / "heads.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == limit * layers * heads
    assert len({(r["company_id"], r["fiscal_year"], r["layer"], r["head"]) for r in rows}) == len(rows)
    for r in rows:
        assert r["prediction"] in ("increase", "decrease", "unknown")
        assert r["correct"] == ("" if r["prediction"] == "unknown" else str(int(r["prediction"] == r["label"])))
    assert (tmp_path / "summary.txt").exists()
