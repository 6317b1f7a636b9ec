"""attnscope: a client for the attnscope attention-capture service.

    import attnscope
    client = attnscope.Client("127.0.0.1:50051")
    capture = client.generate(messages=[{"role": "user", "content": "Hello"}], max_new_tokens=16)
    capture.attention(0)            # numpy float32 [heads, T, T]
    capture.save("capture.safetensors")
    report = client.analyze(text="...", max_new_tokens=16)
    report.to_dataframe()

The gRPC stubs are generated from proto/attnscope/v1/attnscope.proto on first use of Client.
"""

from attnscope.capture import FORMAT, Capture
from attnscope.errors import AttnScopeError, IncompleteStreamError
from attnscope.report import HeadReport

__version__ = "0.1.0"
__all__ = ["Capture", "Client", "AttnScopeError", "IncompleteStreamError", "HeadReport", "FORMAT"]


def __getattr__(name):
    # Client imports grpc and generates stubs; only pay for that when it is used.
    if name == "Client":
        from attnscope.client import Client
        return Client
    raise AttributeError(f"module 'attnscope' has no attribute {name!r}")
