"""Exceptions raised by the attnscope client."""


class AttnScopeError(Exception):
    """A failed request: `code` is the gRPC status code name (e.g. "INVALID_ARGUMENT"), or
    "DATA_LOSS" for a stream that was cut short or failed verification; `message` is the
    server's (or the verifier's) explanation."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class IncompleteStreamError(AttnScopeError):
    """A GenerateWithAttention stream that ended early, skipped a chunk or failed its checksum."""

    def __init__(self, message: str):
        super().__init__("DATA_LOSS", message)
