"""Shared pieces of the reliability suite: a real attnscope-server on an ephemeral loopback
port with a small config in a temp dir, its memory and descriptor counts from /proc, and
request helpers that classify every outcome by gRPC status code.

Binaries come from the environment (CTest sets them): ATTNSCOPE_SERVER_BIN and
ATTNSCOPE_CLI_BIN. The Python client package is imported from client/python.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "client" / "python"))

import grpc  # noqa: E402
import yaml  # noqa: E402

from attnscope import _protogen  # noqa: E402
from attnscope.errors import AttnScopeError  # noqa: E402
from attnscope.reassembly import StreamAssembler  # noqa: E402

pb2, pb2_grpc = _protogen.load()

SERVER_START_TIMEOUT_S = 60.0
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def server_binary() -> str:
    path = os.environ.get("ATTNSCOPE_SERVER_BIN", "")
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError(f"ATTNSCOPE_SERVER_BIN={path!r} is not an executable attnscope-server")
    return path


def cli_binary() -> str:
    path = os.environ.get("ATTNSCOPE_CLI_BIN", "")
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError(f"ATTNSCOPE_CLI_BIN={path!r} is not an executable attnscope")
    return path


def make_tiny_model(directory: Path) -> Path:
    """Writes the embedded tiny Qwen2 model (4 layers, 8 heads, byte-level vocab of 259)."""
    subprocess.run([cli_binary(), "make-tiny-model", str(directory)], check=True,
                   capture_output=True, timeout=60)
    return directory


def base_config(model_dir: Path) -> dict:
    """A config sized for the tiny model: small messages and per-stream queues, so that the
    streaming and stall paths are exercised with little data."""
    return {
        "listen": "127.0.0.1:0",
        "model_dir": str(model_dir),
        "queue_length": 8,
        "drain_grace_seconds": 10,
        "log_level": "warn",
        "streaming": {
            "max_message_bytes": 65536,
            "stream_queue_bytes": 262144,
            "stall_timeout_seconds": 2,
        },
    }


def deep_update(target: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_update(target[key], value)
        else:
            target[key] = value
    return target


class ProcStats:
    """Memory and descriptor figures of a live process, from /proc/<pid>."""

    def __init__(self, pid: int):
        self.pid = pid

    def _status_kib(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise KeyError(key)

    def rss_bytes(self) -> int:
        return self._status_kib("VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        return self._status_kib("VmHWM") * 1024

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


class Server:
    """One attnscope-server process. Use as a context manager; stop() sends SIGTERM."""

    def __init__(self, workdir: Path, model_dir: Path, config_changes: Optional[dict] = None,
                 wait_serving: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = deep_update(base_config(model_dir), config_changes or {})
        self.config_path = self.workdir / "server.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.stderr_path = self.workdir / "server.stderr"
        self.port: Optional[int] = None
        self.process: Optional[subprocess.Popen] = None
        self._wait_serving = wait_serving
        self.stdout_lines: List[str] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "Server":
        self._stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen([server_binary(), "--config", str(self.config_path)],
                                        stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        port_found = threading.Event()

        def read_stdout():
            for line in self.process.stdout:
                self.stdout_lines.append(line)
                match = re.search(r"listening on port (\d+)", line)
                if match and self.port is None:
                    self.port = int(match.group(1))
                    port_found.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not port_found.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"attnscope-server did not report its port "
                                   f"(exit {self.process.poll()}): {self.stderr_text()}")
        if self._wait_serving:
            self.wait_serving(deadline)
        return self

    def wait_serving(self, deadline: float) -> None:
        while self.health() != "SERVING":
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"attnscope-server never reported SERVING: {self.stderr_text()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then waits; SIGKILL (and a failure) if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"attnscope-server ignored SIGTERM for {timeout} s")

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.close()

    # -- observation -----------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def stats(self) -> ProcStats:
        return ProcStats(self.process.pid)

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def health(self) -> str:
        """grpc.health.v1 Check of the whole server ("" service), without the optional
        grpcio-health-checking package: the reply is field 1 (enum) as a varint."""
        with grpc.insecure_channel(self.address) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                        request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
            try:
                reply = check(b"", timeout=2)
            except grpc.RpcError as error:
                return error.code().name
        value = reply[1] if len(reply) >= 2 and reply[0] == 0x08 else 0
        return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING"}.get(value, str(value))

    def settle(self, baseline_fds: int, timeout: float = 10.0) -> int:
        """Waits until the descriptor count is back at (or below) the baseline; returns the
        last count. Closed connections are released by gRPC's event loop asynchronously."""
        deadline = time.monotonic() + timeout
        fds = self.stats.open_fds()
        while fds > baseline_fds and time.monotonic() < deadline:
            time.sleep(0.1)
            fds = self.stats.open_fds()
        return fds


# -- requests ---------------------------------------------------------------------------------

def channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, CHANNEL_OPTIONS)


def stub(chan: grpc.Channel):
    return pb2_grpc.AttnScopeStub(chan)


def generate_request(prompt_ids: List[int], max_new_tokens: int, layers=(), heads=(),
                     dtype: int = 1, ignore_eos: bool = False) -> "pb2.GenerateRequest":
    """ignore_eos: generate exactly max_new_tokens (the tiny model's random weights reach its
    end-of-sequence id within ~10-200 greedy steps)."""
    request = pb2.GenerateRequest()
    request.ids.ids.extend(prompt_ids)
    request.generation.max_new_tokens = max_new_tokens
    request.generation.ignore_eos = ignore_eos
    request.capture.layers.extend(layers)
    request.capture.heads.extend(heads)
    request.capture.dtype = dtype
    return request


def run_capture(stub_, request, timeout: float):
    """Reads the whole stream through the client's verifier. Returns the Capture; raises
    AttnScopeError with the status code (DATA_LOSS when verification fails)."""
    assembler = StreamAssembler()
    try:
        for response in stub_.GenerateWithAttention(request, timeout=timeout):
            assembler.feed(response)
    except grpc.RpcError as error:
        raise AttnScopeError(error.code().name, error.details() or "") from None
    return assembler.finish()


def good_request_works(address: str, timeout: float = 30.0) -> None:
    """The server still serves: a small verified capture and a tokenization succeed."""
    with channel(address) as chan:
        s = stub(chan)
        capture = run_capture(s, generate_request([1, 2, 3, 4, 5], 3), timeout)
        assert capture.ids.shape[0] >= 6, capture.ids
        reply = s.Tokenize(pb2.TokenizeRequest(text="ok"), timeout=timeout)
        assert list(reply.ids) == [ord("o"), ord("k")], list(reply.ids)


def percentile(values: List[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))  # ceil
    return ordered[min(rank, len(ordered)) - 1]


def median(values: List[float]) -> float:
    return percentile(values, 0.5)


def format_mib(value: int) -> str:
    return f"{value / 2**20:.1f} MiB"


def outcome_table(outcomes: Dict[str, int], latencies: List[float], peak_rss: int,
                  title: str) -> str:
    total = sum(outcomes.values())
    lines = [title, f"{'outcome':<22}{'requests':>10}"]
    for name in sorted(outcomes):
        lines.append(f"{name:<22}{outcomes[name]:>10}")
    lines.append(f"{'total':<22}{total:>10}")
    lines.append(f"latency p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
                 f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms; server peak RSS "
                 f"{format_mib(peak_rss)}")
    return "\n".join(lines)
