"""Shared fixtures: the package from this source tree, and real attnscope servers on loopback.

Servers come from the C++ build in $ATTNSCOPE_BUILD_DIR (default: the repository's build/): <build>/server/service/attnscope-server and, for the tiny model with a
tokenizer, <build>/client/cpp/attnscope make-tiny-model. Tests that need one skip with the
reason when the binary is missing.
"""

import os
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

# The reference dumps in the repository (tests/data/README.md says how they were made).
GOLDEN = os.path.join(REPO, "tests", "data", "golden", "qwen2-tiny")


def build_dir() -> str:
    if os.environ.get("ATTNSCOPE_BUILD_DIR"):
        return os.environ["ATTNSCOPE_BUILD_DIR"]
    return os.path.join(REPO, "build")


def server_binary() -> str:
    return os.path.join(build_dir(), "server", "service", "attnscope-server")


def cli_binary() -> str:
    return os.path.join(build_dir(), "client", "cpp", "attnscope")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, model_dir: str, log_path: str):
        self.address = f"127.0.0.1:{free_port()}"
        command = [server_binary(), "--model", model_dir, "--listen", self.address]
        config = os.path.join(REPO, "config", "server.yaml")
        if os.path.exists(config):
            command[1:1] = ["--config", config]
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def _wait_ready(self, timeout: float = 120) -> None:
        from attnscope import AttnScopeError, Client
        deadline = time.monotonic() + timeout
        with Client(self.address, timeout=5) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"attnscope-server exited with {self.process.returncode}:\n{self.log()}")
                try:
                    client.model_info()
                    return
                except AttnScopeError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"attnscope-server not ready after {timeout} s:\n{self.log()}")
                    time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _require(path: str, what: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"{what} not found at {path} (build it, or set ATTNSCOPE_BUILD_DIR)")


@pytest.fixture(scope="session")
def golden_server(tmp_path_factory):
    """A server on the golden qwen2-tiny checkpoint (no tokenizer: ids input only)."""
    _require(server_binary(), "attnscope-server")
    server = RunningServer(os.path.join(GOLDEN, "model"), str(tmp_path_factory.mktemp("golden") / "server.log"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A `attnscope make-tiny-model` folder (tiny Qwen2 with a byte-level tokenizer and ChatML)."""
    _require(cli_binary(), "attnscope command line")
    folder = tmp_path_factory.mktemp("tiny") / "model"
    result = subprocess.run([cli_binary(), "make-tiny-model", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"make-tiny-model failed: {result.stderr}")
    return str(folder)


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir, tmp_path_factory):
    _require(server_binary(), "attnscope-server")
    server = RunningServer(tiny_model_dir, str(tmp_path_factory.mktemp("tinyserver") / "server.log"))
    yield server
    server.stop()


@pytest.fixture
def own_tiny_server(tiny_model_dir, tmp_path):
    """A tiny-model server for one test (for tests that may disturb it, e.g. interrupted clients)."""
    _require(server_binary(), "attnscope-server")
    server = RunningServer(tiny_model_dir, str(tmp_path / "server.log"))
    yield server
    server.stop()
