"""Faults: a client killed mid-stream, the server stopped under load, a corrupt model.

- A client process SIGKILLed mid-stream (its socket closes without a cancel): the server
  keeps serving and its descriptors and RSS come back.
- SIGTERM under load: a running request finishes inside the drain grace period or ends with
  UNAVAILABLE naming drain_grace_seconds when it expires, queued ones get UNAVAILABLE at once,
  new ones get UNAVAILABLE (or cannot connect), no client hangs, the exit code is 0; the CLI's
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


class StreamClient(threading.Thread):
    """One GenerateWithAttention call on its own channel, recording when its header arrived
    (the engine started it), how it ended and when."""

    def __init__(self, address: str, request):
        super().__init__(daemon=True)
        self.address, self.request = address, request
        self.started = threading.Event()
        self.code, self.message, self.ended_at = None, "", None

    def run(self) -> None:
        assembler = harness.StreamAssembler()
        try:
            with harness.channel(self.address) as chan:
                for response in harness.stub(chan).GenerateWithAttention(self.request, timeout=120):
                    self.started.set()
                    assembler.feed(response)
            assembler.finish()
            self.code = "OK"
        except harness.grpc.RpcError as error:
            self.code, self.message = error.code().name, error.details() or ""
        except AttnScopeError as error:
            self.code, self.message = error.code, error.message
        self.ended_at = time.monotonic()


def test_sigterm_under_load_drains_and_exits_zero(start_server, tmp_path):
    """The drain's one documented outcome (proto/attnscope/v1/attnscope.proto, "Drain"), with
    every request's place known: L and the command line's `capture --server` run past the
    grace, S finishes inside it, Q1-Q3 wait in the queue (or, had S finished first, one of them
    took its engine thread), then SIGTERM.
    Durations are scaled from this machine's measured speed, so a loaded machine changes the
    timings but not the outcomes."""
    prompt = [i % 256 for i in range(40)]
    long_request = harness.generate_request(prompt, 4000, layers=[0], heads=[0], ignore_eos=True)
    short_request = harness.generate_request(prompt, 40, layers=[0], heads=[0], ignore_eos=True)
    config = {"concurrent_generations": 3, "queue_length": 8,
              "streaming": {"stall_timeout_seconds": 60},
              "limits": {"max_new_tokens": 4000, "max_total_tokens": 4096}}
    probe = start_server(config)
    # Speed: 400 tokens of L's shape. L (4000 tokens over a growing context) takes over ten
    # times as long, S (40 tokens) a tenth: the grace sits between them with a factor 4 margin
    # each way.
    with harness.channel(probe.address) as chan:
        stub_ = harness.stub(chan)
        harness.run_capture(stub_, short_request, timeout=120)  # warm-up
        begin = time.monotonic()
        harness.run_capture(stub_, harness.generate_request(prompt, 400, layers=[0], heads=[0],
                                                            ignore_eos=True), timeout=120)
        t400 = time.monotonic() - begin
    probe.stop()
    grace = round(max(0.5, 2.5 * t400), 2)
    # A ceiling, not an expectation: only a hang comes near it.
    ceiling = grace + 10 + 20 * t400
    config["drain_grace_seconds"] = grace
    server = start_server(config)

    long_client = StreamClient(server.address, long_request)
    long_client.start()
    assert long_client.started.wait(ceiling), "L never started"
    # The command line's remote capture: its progress line comes after a second of streaming.
    out_file = tmp_path / "cli_capture.safetensors"
    cli = subprocess.Popen([harness.cli_binary(), "capture", "--server", server.address,
                            "--ids", ",".join(str(i % 256) for i in range(40)), "--layers", "0",
                            "--heads", "0", "--ignore-eos", "--max-new-tokens", "4000",
                            "--out", str(out_file)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = ""
    while "received" not in progress:
        progress = cli.stderr.readline()
        assert progress, f"the CLI capture ended before its first progress line (exit {cli.poll()})"
    short_client = StreamClient(server.address, short_request)
    short_client.start()
    assert short_client.started.wait(ceiling), "S never started"
    queued = [StreamClient(server.address, long_request) for _ in range(3)]
    for client in queued:
        client.start()
    time.sleep(min(0.5, t400))  # let the queued calls reach the server (if not: refused, same code)

    term_sent = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    # The drain has begun once the queued requests still waiting are refused (at least two of
    # the three: only S's engine thread came free). A new request sent then, inside the grace,
    # is refused at once. (Joining all three first waited for the one that ran, to the grace's
    # end, so the late request raced the exit: refused, connection refused, or CANCELLED.)
    begun_by = time.monotonic() + ceiling
    while sum(c.ended_at is not None for c in queued) < 2 and time.monotonic() < begun_by:
        time.sleep(0.01)
    late = StreamClient(server.address, short_request)
    late.start()
    for client in queued:
        client.join(ceiling)
    exit_code = server.process.wait(timeout=ceiling)
    exited_after = time.monotonic() - term_sent
    for client in [long_client, short_client, late, *queued]:
        client.join(30)
    cli_out, cli_err = cli.communicate(timeout=30)

    def outcome(client):
        at = f"{client.ended_at - term_sent:+.2f} s" if client.ended_at else "never"
        return f"{client.code} at {at}: {client.message[:120]}"

    print(f"\nSIGTERM: t400 {t400:.2f} s, grace {grace} s; exit {exit_code} after {exited_after:.2f} s"
          f"\n  L: {outcome(long_client)}\n  S: {outcome(short_client)}"
          + "".join(f"\n  Q{i + 1}: {outcome(c)}" for i, c in enumerate(queued))
          + f"\n  late: {outcome(late)}\n  CLI exit {cli.returncode}: {cli_err.strip()[-200:]}")
    hung = [name for name, c in [("L", long_client), ("S", short_client), ("late", late)]
            + [(f"Q{i + 1}", c) for i, c in enumerate(queued)] if c.is_alive()]
    assert not hung, f"clients still waiting 30 s after the server exited: {hung}"
    assert exit_code == 0, f"exit code {exit_code}: {server.stderr_text()[-2000:]}"
    assert exited_after <= ceiling, f"the drain took {exited_after:.1f} s, grace is {grace} s"

    assert long_client.code == "UNAVAILABLE" and "drain_grace_seconds" in long_client.message, \
        f"L, running past the grace: {outcome(long_client)}"
    assert long_client.ended_at - term_sent >= 0.9 * grace, f"L was cut before the grace: {outcome(long_client)}"
    assert short_client.code == "OK", f"S, inside the grace: {outcome(short_client)}"
    ran = [c for c in queued if "drain_grace_seconds" in c.message]
    waited = [c for c in queued if c not in ran]
    assert all(c.code == "UNAVAILABLE" for c in queued), [outcome(c) for c in queued]
    # At most one engine thread was free (had S finished before its call was admitted).
    assert len(ran) <= 1, [outcome(c) for c in queued]
    for client in waited:
        assert client.ended_at < long_client.ended_at, \
            f"a queued request waited for the grace: {outcome(client)} vs L {outcome(long_client)}"
    assert late.code == "UNAVAILABLE" and "draining" in late.message, outcome(late)
    assert late.ended_at < long_client.ended_at, f"the late request waited for the grace: {outcome(late)}"
    # Like L, the CLI's capture ran past the grace; nothing half-written under its output name.
    assert cli.returncode != 0 and "drain_grace_seconds" in cli_err, cli_err[-500:]
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
