"""Signals a shared box sends, and numbers at the edge that the engine must not get wrong.

- SIGHUP drains like SIGTERM (exit 0, "drained" in the log) instead of killing the server.
- SIGPIPE: the reader of the server's stderr exits (a piped `tee`, `head`); the server keeps
  serving and still drains on SIGTERM (log writes fail with EPIPE, nothing else).
- A temperature so small that logits / T overflows float (1e-45) samples greedily: the same
  tokens as greedy decoding, never NaN probabilities that pick the least likely token.
- Validation admits exactly what the engine can run: prompt + max_new_tokens equal to
  max_position_embeddings generates; one more is INVALID_ARGUMENT before any Header.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
import yaml

import harness
from harness import pb2


def test_sighup_drains_like_sigterm(start_server):
    server = start_server({"log_level": "info"})
    harness.good_request_works(server.address)
    server.process.send_signal(signal.SIGHUP)
    assert server.process.wait(30) == 0
    log = server.stderr_text()
    assert "received SIGHUP" in log and "drained" in log, log[-2000:]


def test_sigpipe_on_stderr_does_not_kill_the_server(tiny_model, tmp_path):
    config = harness.base_config(tiny_model)
    config["log_level"] = "info"  # one line per request: each one writes to the dead pipe
    config_path = tmp_path / "server.yaml"
    config_path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen([harness.server_binary(), "--config", str(config_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in process.stdout:
            match = re.search(r"listening on port (\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port is not None, "no port line"
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + harness.SERVER_START_TIMEOUT_S
        with harness.channel(address) as chan:
            while True:
                try:
                    harness.stub(chan).GetModelInfo(pb2.GetModelInfoRequest(), timeout=2)
                    break
                except grpc.RpcError:
                    assert process.poll() is None and time.monotonic() < deadline
                    time.sleep(0.05)
        process.stderr.close()  # the log's reader goes away
        for _ in range(5):
            harness.good_request_works(address)
        assert process.poll() is None, f"the server died: exit {process.poll()}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def generated_ids(address: str, **generation) -> list:
    request = harness.generate_request([(7 * i) % 256 for i in range(12)], 12, ignore_eos=True)
    for key, value in generation.items():
        setattr(request.generation, key, value)
    with harness.channel(address) as chan:
        capture = harness.run_capture(harness.stub(chan), request, 60)
    return list(capture.ids[12:])


def test_tiny_temperature_samples_greedily(start_server):
    server = start_server()
    greedy = generated_ids(server.address)
    assert len(greedy) == 12
    for temperature in (1e-45, 1e-38, 1e-30):  # 1e-45 is the smallest float (subnormal)
        sampled = generated_ids(server.address, sample=True, temperature=temperature, seed=3)
        assert sampled == greedy, f"temperature {temperature}: {sampled} != greedy {greedy}"


def test_validation_uses_the_engines_capacity(start_server, tiny_model, tmp_path):
    model = tmp_path / "model64"
    shutil.copytree(tiny_model, model)
    config_path = model / "config.json"
    config = json.loads(config_path.read_text())
    config["max_position_embeddings"] = 64
    config_path.write_text(json.dumps(config))
    server = start_server(model_dir=model)
    prompt = [(3 * i) % 256 for i in range(60)]
    with harness.channel(server.address) as chan:
        stub = harness.stub(chan)
        capture = harness.run_capture(
            stub, harness.generate_request(prompt, 4, layers=[0], ignore_eos=True), 60)
        assert capture.ids.shape[0] == 64
        header_seen = False
        with pytest.raises(grpc.RpcError) as refused:
            for response in stub.GenerateWithAttention(
                    harness.generate_request(prompt + [1], 4, ignore_eos=True), timeout=60):
                header_seen |= response.WhichOneof("event") == "header"
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        assert "max_position_embeddings = 64" in refused.value.details()
        assert not header_seen
