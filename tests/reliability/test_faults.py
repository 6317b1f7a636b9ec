"""Faults: a client killed mid-stream, the server stopped under load, a corrupt model.

- A client process SIGKILLed mid-stream (its socket closes without a cancel): the server
  keeps serving and its descriptors and RSS come back.
- SIGTERM under load: in-flight requests finish or end with UNAVAILABLE within the drain
  grace period, new ones get UNAVAILABLE (or cannot connect), the exit code is 0; the CLI's
  `capture --server` cut off (by the drain, or SIGKILLed itself) leaves no file under its
  output name (it writes a temporary name and renames on success).
- A model folder whose model.safetensors is truncated: the server exits non-zero with an
  error naming the file, and never serves.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import harness
from harness import AttnScopeError

RSS_MARGIN_BYTES = 16 * 2**20
KILLED_CLIENTS = 5

KILLED_CLIENT_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    import harness
    with harness.channel(sys.argv[1]) as chan:
        call = harness.stub(chan).GenerateWithAttention(
            harness.generate_request([(i * 5) % 256 for i in range(150)], 800, ignore_eos=True), timeout=300)
        for count, _ in enumerate(call):
            if count == 3:
                print("streaming", flush=True)
                break
        import time
        time.sleep(600)  # holds the stream open, unread, until SIGKILL
""")


def test_client_killed_mid_stream(start_server, tmp_path):
    server = start_server({"streaming": {"stall_timeout_seconds": 60}})
    harness.good_request_works(server.address)  # warm-up
    time.sleep(0.5)
    fds_before, rss_before = server.stats.open_fds(), server.stats.rss_bytes()

    script = tmp_path / "killed_client.py"
    script.write_text(KILLED_CLIENT_SCRIPT)
    for attempt in range(KILLED_CLIENTS):
        client = subprocess.Popen([sys.executable, str(script), server.address, str(Path(__file__).parent)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            line = client.stdout.readline()
            assert line.strip() == "streaming", f"client {attempt} did not start streaming: {line!r}"
        finally:
            client.send_signal(signal.SIGKILL)
            client.wait()
        # The server notices the closed socket and frees the model for the next request.
        start = time.monotonic()
        harness.good_request_works(server.address, timeout=30)
        assert time.monotonic() - start < 10, "the model stayed busy after its client was killed"

    fds_after = server.settle(fds_before)
    rss_after = server.stats.rss_bytes()
    print(f"\n{KILLED_CLIENTS} killed clients: fds {fds_before} -> {fds_after}, RSS "
          f"{harness.format_mib(rss_before)} -> {harness.format_mib(rss_after)}")
    assert fds_after <= fds_before, f"descriptors leaked: {fds_before} -> {fds_after}"
    assert rss_after <= rss_before + RSS_MARGIN_BYTES, \
        f"RSS {harness.format_mib(rss_before)} -> {harness.format_mib(rss_after)}"
    assert server.process.poll() is None


def test_sigterm_under_load_drains_and_exits_zero(start_server, tmp_path):
    grace = 3
    # Client 0 asks for 4000 tokens (limits raised for it) of one head: it runs past the grace.
    server = start_server({"drain_grace_seconds": grace, "queue_length": 16,
                           "limits": {"max_new_tokens": 4000, "max_total_tokens": 4096}})
    harness.good_request_works(server.address)
    outcomes = Counter()
    failures = []
    lock = threading.Lock()
    stop_clients = threading.Event()
    long_outcomes = []

    def client(index: int) -> None:
        if index == 0:
            time.sleep(0.7)  # short requests complete first; then the long one holds the model
        with harness.channel(server.address) as chan:
            stub_ = harness.stub(chan)
            while not stop_clients.is_set():
                # Short requests that finish inside the grace period, and one (client 0) that
                # runs past it.
                if index == 0:
                    request = harness.generate_request([(index + i) % 256 for i in range(40)], 4000,
                                                       layers=[0], heads=[0], ignore_eos=True)
                else:
                    request = harness.generate_request([(index + i) % 256 for i in range(40)], 24,
                                                       ignore_eos=True)
                try:
                    harness.run_capture(stub_, request, timeout=60)
                    code = "OK"
                except AttnScopeError as error:
                    code = error.code
                    if code not in ("UNAVAILABLE", "RESOURCE_EXHAUSTED"):
                        with lock:
                            failures.append(f"{code}: {error.message}")
                with lock:
                    outcomes[code] += 1
                    if index == 0:
                        long_outcomes.append(code)
                if code == "UNAVAILABLE":
                    return  # draining or gone: a polite client stops

    # The command line's remote capture, queued among the others.
    out_file = tmp_path / "cli_capture.safetensors"
    cli = subprocess.Popen([harness.cli_binary(), "capture", "--server", server.address,
                            "--ids", ",".join(str(i % 256) for i in range(100)),
                            "--max-new-tokens", "200", "--out", str(out_file)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)

    term_sent = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    exit_code = server.process.wait(timeout=grace + 15)
    exited_after = time.monotonic() - term_sent
    stop_clients.set()
    for thread in threads:
        thread.join(30)
    cli_out, cli_err = cli.communicate(timeout=30)

    print(f"\nSIGTERM under load: exit {exit_code} after {exited_after:.1f} s (grace {grace} s); "
          f"request outcomes {dict(outcomes)} (the long one: {long_outcomes}); CLI exit {cli.returncode}: {cli_err.strip()[-300:]}")
    assert exit_code == 0, f"exit code {exit_code}: {server.stderr_text()[-2000:]}"
    assert exited_after <= grace + 3.0, f"the drain took {exited_after:.1f} s, grace is {grace} s"
    assert not any(thread.is_alive() for thread in threads), "a client hung after the server exited"
    assert not failures, f"requests ended with undocumented statuses during the drain: {failures[:5]}"
    assert outcomes["OK"] > 0 and outcomes["UNAVAILABLE"] > 0, dict(outcomes)
    assert long_outcomes and long_outcomes[-1] == "UNAVAILABLE", \
        f"the request running past the grace period ended {long_outcomes}"
    # Nothing half-written: either the whole capture under the output name, or no file.
    if cli.returncode == 0:
        assert out_file.exists() and out_file.stat().st_size > 0
    else:
        assert not out_file.exists(), "the CLI left a file under the output name after failing"


def test_cli_capture_killed_leaves_no_output_file(start_server, tmp_path):
    server = start_server({"streaming": {"stall_timeout_seconds": 60}})
    out_file = tmp_path / "killed.safetensors"
    # A 1100-token prompt and 800 generated tokens (end-of-sequence ignored): hundreds of MB of
    # attention and several seconds of streaming, so the kill lands mid-stream.
    cli = subprocess.Popen([harness.cli_binary(), "capture", "--server", server.address,
                            "--ids", ",".join(str((i * 7) % 256) for i in range(1100)),
                            "--max-new-tokens", "800", "--ignore-eos", "--out", str(out_file)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # The progress line appears once a capture has run for a second: data is flowing.
    progress = ""
    while "received" not in progress:
        line = cli.stderr.readline()
        assert line, f"the capture ended before its first progress line (exit {cli.poll()})"
        progress = line
    cli.send_signal(signal.SIGKILL)
    cli.wait()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    print(f"\nCLI killed mid-capture ({progress.strip()}); files left in its folder: {leftovers}")
    assert not out_file.exists(), "a killed capture left a file under its output name"
    harness.good_request_works(server.address)


def corrupt_model(source: Path, destination: Path, keep_bytes: int) -> Path:
    shutil.copytree(source, destination)
    shard = destination / "model.safetensors"
    with open(shard, "r+b") as f:
        f.truncate(keep_bytes if keep_bytes >= 0 else shard.stat().st_size + keep_bytes)
    return destination


@pytest.mark.parametrize("keep_bytes", [6, 4000, -1000], ids=["inside_length", "inside_header", "inside_data"])
def test_truncated_shard_fails_clearly(tiny_model, tmp_path, keep_bytes):
    model = corrupt_model(tiny_model, tmp_path / "model", keep_bytes)
    config = tmp_path / "server.yaml"
    config.write_text(f'listen: "127.0.0.1:0"\nmodel_dir: "{model}"\n')
    result = subprocess.run([harness.server_binary(), "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    print(f"\ntruncated shard ({keep_bytes} bytes kept): exit {result.returncode}; "
          f"stderr: {result.stderr.strip()[-400:]}")
    assert result.returncode != 0, "the server started on a corrupt model"
    output = result.stdout + result.stderr
    assert "model.safetensors" in output, f"the error does not name the file: {output}"
    assert "listening on port" not in output or "cannot load the model" in output, output


def test_truncated_shard_error_is_on_stderr(tiny_model, tmp_path):
    model = corrupt_model(tiny_model, tmp_path / "model", -1000)
    config = tmp_path / "server.yaml"
    config.write_text(f'listen: "127.0.0.1:0"\nmodel_dir: "{model}"\n')
    result = subprocess.run([harness.server_binary(), "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "model.safetensors" in result.stderr, f"stderr does not name the file: {result.stderr!r}"


def test_truncated_shard_opens_no_port(tiny_model, tmp_path):
    model = corrupt_model(tiny_model, tmp_path / "model", -1000)
    config = tmp_path / "server.yaml"
    config.write_text(f'listen: "127.0.0.1:0"\nmodel_dir: "{model}"\n')
    result = subprocess.run([harness.server_binary(), "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "listening on port" not in result.stdout, \
        f"a server with a corrupt model opened a port first: {result.stdout.strip()}"
