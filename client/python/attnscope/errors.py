"""Exceptions raised by the attnscope client."""


class AttnScopeError(Exception):
    """A failed request: `code` is the gRPC status code name (e.g. "INVALID_ARGUMENT"), or
    "DATA_LOSS" for a stream that was cut short or failed verification; `message` is the
    server's (or the verifier's) explanation. `field_violations` lists the refused request
    fields as (field path, description) pairs, from the google.rpc.BadRequest the server
    attaches to the status (the `grpc-status-details-bin` trailer); empty when it sent none."""

    def __init__(self, code: str, message: str, field_violations=()):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field_violations = list(field_violations)


class IncompleteStreamError(AttnScopeError):
    """A GenerateWithAttention stream that ended early, skipped a chunk or failed its checksum."""

    def __init__(self, message: str):
        super().__init__("DATA_LOSS", message)
