"""Generates the gRPC Python stubs from proto/attnscope/v1/attnscope.proto on first use, and
the google.rpc error-detail messages from proto/google/rpc/*.proto (the server's refusals carry
a google.rpc.Status with a BadRequest; Debian packages no googleapis protos for Python).

The stubs live in attnscope/_proto/ (not committed). They are regenerated whenever a .proto
changes (a stamp file holds their SHA-256), with Debian's protoc + grpc_python_plugin when
present, otherwise with `python -m grpc_tools.protoc`. A copy of the .protos is kept next to
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
# Messages only (no services): google.rpc.Status and google.rpc.BadRequest.
_RPC_PROTOS = (Path("google") / "rpc" / "status.proto", Path("google") / "rpc" / "error_details.proto")
_STAMP = _OUT_DIR / "PROTO_SHA256"


def find_proto_root() -> Path | None:
    """The folder holding attnscope/v1/attnscope.proto and google/rpc/*.proto:
    $ATTNSCOPE_PROTO_DIR, the repository's proto/ folder, or the copy saved next to generated
    stubs."""
    candidates = []
    if os.environ.get("ATTNSCOPE_PROTO_DIR"):
        candidates.append(Path(os.environ["ATTNSCOPE_PROTO_DIR"]))
    candidates.append(_PACKAGE_DIR.parents[2] / "proto")  # client/python/attnscope -> repo root
    candidates.append(_OUT_DIR / "source")
    for root in candidates:
        if all((root / path).is_file() for path in (_PROTO_RELATIVE, *_RPC_PROTOS)):
            return root
    return None


def _run_protoc(proto_root: Path, out_dir: Path) -> None:
    proto = str(_PROTO_RELATIVE)
    rpc_protos = [str(path) for path in _RPC_PROTOS]
    plugin = shutil.which("grpc_python_plugin")
    protoc = shutil.which("protoc")
    if protoc and plugin:
        command = [protoc, f"-I{proto_root}", f"--python_out={out_dir}",
                   f"--grpc_python_out={out_dir}", f"--plugin=protoc-gen-grpc_python={plugin}", proto]
        rpc_command = [protoc, f"-I{proto_root}", f"--python_out={out_dir}", *rpc_protos]
    else:
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}",
                   f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", proto]
        rpc_command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}",
                       f"--python_out={out_dir}", *rpc_protos]
    for run in (command, rpc_command):
        result = subprocess.run(run, capture_output=True, text=True)
        if result.returncode != 0:
            raise ImportError(f"attnscope: generating gRPC stubs failed ({' '.join(run)}): {result.stderr}")


def ensure_stubs() -> None:
    """Makes sure attnscope/_proto holds stubs for the current .proto."""
    proto_root = find_proto_root()
    stub = _OUT_DIR / "attnscope" / "v1" / "attnscope_pb2_grpc.py"
    if proto_root is None:
        if stub.is_file():
            return
        raise ImportError("attnscope: no generated stubs and no attnscope/v1/attnscope.proto found; "
                          "set ATTNSCOPE_PROTO_DIR to the repository's proto/ folder")
    sources = {path: (proto_root / path).read_bytes() for path in (_PROTO_RELATIVE, *_RPC_PROTOS)}
    digest = hashlib.sha256(b"".join(sources.values())).hexdigest()
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
        rpc_target = _OUT_DIR / "google" / "rpc"
        rpc_target.mkdir(parents=True, exist_ok=True)
        for package_dir in (_OUT_DIR / "google", rpc_target):
            (package_dir / "__init__.py").touch()
        for name in ("status_pb2.py", "error_details_pb2.py"):
            os.replace(tmp_dir / "google" / "rpc" / name, rpc_target / name)
        for path, data in sources.items():
            source_copy = _OUT_DIR / "source" / path
            source_copy.parent.mkdir(parents=True, exist_ok=True)
            if source_copy.resolve() != (proto_root / path).resolve():
                source_copy.write_bytes(data)
        _STAMP.write_text(digest + "\n")


def load_rpc():
    """Returns (status_pb2, error_details_pb2): google.rpc.Status and google.rpc.BadRequest."""
    ensure_stubs()
    from attnscope._proto.google.rpc import error_details_pb2, status_pb2  # noqa: E402
    return status_pb2, error_details_pb2


def load():
    """Returns (attnscope_pb2, attnscope_pb2_grpc)."""
    ensure_stubs()
    from attnscope._proto.attnscope.v1 import attnscope_pb2, attnscope_pb2_grpc  # noqa: E402
    return attnscope_pb2, attnscope_pb2_grpc


if __name__ == "__main__":
    ensure_stubs()
    print(f"attnscope: stubs in {_OUT_DIR}")
