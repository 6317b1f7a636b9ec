"""Generates the gRPC Python stubs from proto/attnscope/v1/attnscope.proto on first use.

The stubs live in attnscope/_proto/ (not committed). They are regenerated whenever the .proto
changes (a stamp file holds its SHA-256), with Debian's protoc + grpc_python_plugin when
present, otherwise with `python -m grpc_tools.protoc`. A copy of the .proto is kept next to
the stubs, so an installed package (pip builds the stubs at install time) is self-contained.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_OUT_DIR = _PACKAGE_DIR / "_proto"
_PROTO_RELATIVE = Path("attnscope") / "v1" / "attnscope.proto"
_STAMP = _OUT_DIR / "PROTO_SHA256"


def find_proto_root() -> Path | None:
    """The folder holding attnscope/v1/attnscope.proto: $ATTNSCOPE_PROTO_DIR, the repository's
    proto/ folder, or the copy saved next to generated stubs."""
    candidates = []
    if os.environ.get("ATTNSCOPE_PROTO_DIR"):
        candidates.append(Path(os.environ["ATTNSCOPE_PROTO_DIR"]))
    candidates.append(_PACKAGE_DIR.parents[2] / "proto")  # client/python/attnscope -> repo root
    candidates.append(_OUT_DIR / "source")
    for root in candidates:
        if (root / _PROTO_RELATIVE).is_file():
            return root
    return None


def _run_protoc(proto_root: Path, out_dir: Path) -> None:
    proto = str(_PROTO_RELATIVE)
    plugin = shutil.which("grpc_python_plugin")
    protoc = shutil.which("protoc")
    if protoc and plugin:
        command = [protoc, f"-I{proto_root}", f"--python_out={out_dir}",
                   f"--grpc_python_out={out_dir}", f"--plugin=protoc-gen-grpc_python={plugin}", proto]
    else:
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}",
                   f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", proto]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ImportError(f"attnscope: generating gRPC stubs failed ({' '.join(command)}): {result.stderr}")


def ensure_stubs() -> None:
    """Makes sure attnscope/_proto holds stubs for the current .proto."""
    proto_root = find_proto_root()
    stub = _OUT_DIR / "attnscope" / "v1" / "attnscope_pb2_grpc.py"
    if proto_root is None:
        if stub.is_file():
            return
        raise ImportError("attnscope: no generated stubs and no attnscope/v1/attnscope.proto found; "
                          "set ATTNSCOPE_PROTO_DIR to the repository's proto/ folder")
    proto_bytes = (proto_root / _PROTO_RELATIVE).read_bytes()
    digest = hashlib.sha256(proto_bytes).hexdigest()
    if stub.is_file() and _STAMP.is_file() and _STAMP.read_text().strip() == digest:
        return

    _OUT_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=_OUT_DIR) as tmp:
        tmp_dir = Path(tmp)
        _run_protoc(proto_root, tmp_dir)
        generated = tmp_dir / "attnscope" / "v1"
        # The generated grpc module imports "attnscope.v1.attnscope_pb2", which would resolve
        # to this package; make it a relative import.
        grpc_file = generated / "attnscope_pb2_grpc.py"
        grpc_file.write_text(grpc_file.read_text().replace(
            "from attnscope.v1 import attnscope_pb2", "from . import attnscope_pb2"))
        target = _OUT_DIR / "attnscope" / "v1"
        target.mkdir(parents=True, exist_ok=True)
        for package_dir in (_OUT_DIR, _OUT_DIR / "attnscope", target):
            (package_dir / "__init__.py").touch()
        for name in ("attnscope_pb2.py", "attnscope_pb2_grpc.py"):
            os.replace(generated / name, target / name)  # atomic per file: concurrent importers
        source_copy = _OUT_DIR / "source" / _PROTO_RELATIVE
        source_copy.parent.mkdir(parents=True, exist_ok=True)
        if source_copy.resolve() != (proto_root / _PROTO_RELATIVE).resolve():
            source_copy.write_bytes(proto_bytes)
        _STAMP.write_text(digest + "\n")


def load():
    """Returns (attnscope_pb2, attnscope_pb2_grpc)."""
    ensure_stubs()
    from attnscope._proto.attnscope.v1 import attnscope_pb2, attnscope_pb2_grpc  # noqa: E402
    return attnscope_pb2, attnscope_pb2_grpc


if __name__ == "__main__":
    ensure_stubs()
    print(f"attnscope: stubs in {_OUT_DIR}")
