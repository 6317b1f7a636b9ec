"""Every cost is bounded before it is paid (issue 16). Each size of a request is checked in
O(1) before anything parses, tokenizes or renders it; the receive limit sits just above the
largest valid request; an AnalyzeHeads reply that would be too large is refused before the
generation; connections, headers and logs are bounded too.

Limits are the defaults of config/server.yaml unless a test sets them: max_prompt_tokens
4096, 16 bytes per prompt token (65 536 text bytes), 16 stop strings of 256 bytes, 64 eos
ids, 1024 layer/head indices, 256 terms and 64 queries of 256 bytes.
"""

from __future__ import annotations

import re
import threading
import time

import grpc
import pytest

import harness
from harness import pb2

PROMPT_BYTES = 16 * 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    started = harness.Server(tmp_path_factory.mktemp("bounds"), tiny_model,
                             {"queue_length": 4, "log_level": "info"})
    with started:
        yield started


def unary(server, method, request, metadata=None, timeout=30.0):
    with harness.channel(server.address) as chan:
        try:
            reply = getattr(harness.stub(chan), method)(request, timeout=timeout, metadata=metadata)
            return "OK", "", reply
        except grpc.RpcError as error:
            return error.code().name, error.details() or "", None


def generate(server, request, metadata=None, timeout=30.0):
    with harness.channel(server.address) as chan:
        try:
            for _ in harness.stub(chan).GenerateWithAttention(request, timeout=timeout,
                                                              metadata=metadata):
                pass
            return "OK", ""
        except grpc.RpcError as error:
            return error.code().name, error.details() or ""


def gen(**fields) -> "pb2.GenerateRequest":
    request = pb2.GenerateRequest(text=fields["text"]) if "text" in fields else pb2.GenerateRequest()
    if "ids" in fields:
        request.ids.ids.extend(fields["ids"])
    if "messages" in fields:
        request.messages.messages.extend(fields["messages"])
    request.generation.max_new_tokens = 2
    for key in ("stop_strings", "eos_token_ids"):
        getattr(request.generation, key).extend(fields.get(key, []))
    for key in ("layers", "heads"):
        getattr(request.capture, key).extend(fields.get(key, []))
    if not request.WhichOneof("input"):
        request.ids.ids.extend([1, 2, 3])
    return request


def analyze(**analysis) -> "pb2.AnalyzeRequest":
    request = pb2.AnalyzeRequest(text="The revenue of the bank rose.")
    request.generation.max_new_tokens = 2
    for key, value in analysis.items():
        if isinstance(value, list):
            getattr(request.analysis, key).extend(value)
        else:
            setattr(request.analysis, key, value)
    return request


def message(content: str, role: str = "user"):
    return pb2.ChatMessage(role=role, content=content)


def with_interventions(count=1, key_positions=0, key_terms=0, patch_text=None):
    request = gen()
    for i in range(count):
        item = request.interventions.items.add()
        item.knockout.layer = 0
        if i == 0:
            item.knockout.key_positions.extend([0] * key_positions)
            item.knockout.key_terms.extend(["t"] * key_terms)
    if patch_text is not None:
        request.interventions.patch_source.text = patch_text
    return request


SIZE_CASES = [
    ("interventions_count", "Generate", with_interventions(count=65), ["interventions = 65 interventions", "limits.max_interventions = 64"]),
    ("interventions_indices", "Generate", with_interventions(key_positions=1025), ["= 1025 entries", "limits.max_index_entries = 1024"]),
    ("interventions_key_terms", "Generate", with_interventions(key_terms=257), ["= 257 entries", "limits.max_terms = 256"]),
    ("patch_source_text_bytes", "Generate", with_interventions(patch_text="a" * (PROMPT_BYTES + 1)), ["interventions.patch_source.text = 65537 bytes", "max_prompt_bytes_per_token"]),
    ("text_bytes", "Generate", gen(text="a" * (PROMPT_BYTES + 1)), ["text = 65537 bytes", "max_prompt_bytes_per_token", "max_prompt_tokens"]),
    ("tokenize_text_bytes", "Tokenize", pb2.TokenizeRequest(text="a" * (PROMPT_BYTES + 1)), ["text = 65537 bytes", "max_prompt_tokens"]),
    ("analyze_text_bytes", "AnalyzeHeads", pb2.AnalyzeRequest(text="a" * (PROMPT_BYTES + 1)), ["text = 65537 bytes"]),
    ("ids_count", "Generate", gen(ids=[1] * 4097), ["prompt tokens = 4097", "limits.max_prompt_tokens = 4096"]),
    ("tokenize_ids_count", "Tokenize", pb2.TokenizeRequest(ids=pb2.TokenIds(ids=[1] * 4097)), ["prompt tokens = 4097", "limits.max_prompt_tokens = 4096"]),
    ("messages_count", "Generate", gen(messages=[message("a")] * 4097), ["messages.messages = 4097 messages", "max_prompt_tokens"]),
    ("messages_bytes", "Generate", gen(messages=[message("a" * 33000), message("b" * 33000)]), ["messages (every field's bytes together) = 66008 bytes", "max_prompt_bytes_per_token"]),
    ("stop_strings_count", "Generate", gen(stop_strings=["x"] * 17), ["generation.stop_strings = 17 entries", "limits.max_stop_strings = 16"]),
    ("stop_string_bytes", "Generate", gen(stop_strings=["x" * 257]), ["generation.stop_strings[0] = 257 bytes", "limits.max_stop_string_bytes = 256"]),
    ("eos_count", "Generate", gen(eos_token_ids=[1] * 65), ["generation.eos_token_ids = 65 entries", "limits.max_eos_token_ids = 64"]),
    ("capture_layers_count", "Generate", gen(layers=[0] * 1025), ["capture.layers = 1025 entries", "limits.max_index_entries = 1024"]),
    ("capture_heads_count", "Generate", gen(heads=[0] * 1025), ["capture.heads = 1025 entries"]),
    ("analysis_layers_count", "AnalyzeHeads", analyze(layers=[0] * 1025), ["analysis.layers = 1025 entries"]),
    ("analysis_heads_count", "AnalyzeHeads", analyze(heads=[0] * 1025), ["analysis.heads = 1025 entries"]),
    ("terms_count", "AnalyzeHeads", analyze(terms=["t"] * 257), ["analysis.terms = 257 entries", "limits.max_terms = 256"]),
    ("term_bytes", "AnalyzeHeads", analyze(terms=["t" * 257]), ["analysis.terms[0] = 257 bytes", "limits.max_term_bytes = 256"]),
    ("queries_count", "AnalyzeHeads", analyze(queries=["e"] * 65), ["analysis.queries = 65 entries", "limits.max_queries = 64"]),
]


@pytest.mark.parametrize("name,method,request_,words", SIZE_CASES, ids=[c[0] for c in SIZE_CASES])
def test_each_size_is_refused_naming_its_limit(server, name, method, request_, words):
    if method == "Generate":
        status, details = generate(server, request_)
    else:
        status, details, _ = unary(server, method, request_)
    assert status == "INVALID_ARGUMENT", (name, status, details)
    for word in words:
        assert word in details, f"{name}: {word!r} not in {details!r}"


def test_sizes_at_the_limit_pass_the_size_check(server):
    # Exactly at each bound, the size check lets the request through (the token count may
    # still refuse it: the byte-level tokenizer makes one token per byte).
    status, details = generate(server, gen(stop_strings=["x" * 256] * 16, eos_token_ids=[1] * 64,
                                           layers=[0] * 8))
    assert status == "OK", details
    status, details = generate(server, gen(text="a" * PROMPT_BYTES))
    assert status == "INVALID_ARGUMENT" and "prompt tokens = 65536" in details, details


def chat_at_the_byte_limit(messages):
    # 4096 messages (max_prompt_tokens) of 16 bytes each (role + content): the chat input at
    # both of its limits, the largest input on the wire.
    for _ in range(4096):
        messages.messages.add(role="u", content="c" * 15)


def largest_valid_analyze_request() -> "pb2.AnalyzeRequest":
    """Every field at the size limits of config/server.yaml (the type with the most fields):
    the prompt and the patch source as chats at their byte limit, 16 stop strings of 256
    bytes, 64 eos ids, 1024 layer and head indices (negative: 10-byte varints), 256 terms and
    64 queries of 256 bytes, 64 interventions sharing 1024 indices and 256 key terms."""
    request = pb2.AnalyzeRequest()
    chat_at_the_byte_limit(request.messages)
    chat_at_the_byte_limit(request.interventions.patch_source.messages)
    request.generation.stop_strings.extend(["s" * 256] * 16)
    request.generation.eos_token_ids.extend([-1] * 64)
    request.analysis.layers.extend([-1] * 1024)
    request.analysis.heads.extend([-1] * 1024)
    request.analysis.terms.extend(["t" * 256] * 256)
    request.analysis.queries.extend(["q" * 256] * 64)
    for i in range(64):
        item = request.interventions.items.add()
        item.knockout.layer = -1
        item.knockout.key_positions.extend([-1] * 16)
        item.knockout.key_terms.extend(["k" * 256] * 4)
    request.client_tag = "x" * 128
    return request


def test_receive_limit_is_just_above_the_largest_valid_request(server):
    largest = largest_valid_analyze_request()
    largest_bytes = largest.ByteSize()
    # The largest valid request reaches the handler (refused there, for its content, not by
    # gRPC for its size).
    status, details, _ = unary(server, "AnalyzeHeads", largest)
    assert status in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"), (status, details)
    assert "larger than max" not in details, details
    # A request of 1 MiB never is parsed: gRPC refuses it before the handler, and its
    # message names the receive limit, which sits between the largest valid request and
    # twice its size (the server once parsed 16 MiB for anyone).
    status, details = generate(server, gen(text="a" * (1 << 20)))
    assert status == "RESOURCE_EXHAUSTED", (status, details)
    match = re.search(r"vs\.? (\d+)\)", details)
    assert match, details
    limit = int(match.group(1))
    assert largest_bytes <= limit <= 2 * largest_bytes, (largest_bytes, limit)
    harness.good_request_works(server.address)


def test_analyze_reply_over_the_limit_is_refused_before_generation(start_server):
    # The request: 10 000 queries of "e" with a list per head. It once ran 16 s on an
    # engine thread and built a 496 MB reply before being refused.
    server = start_server({"limits": {"max_queries": 4096, "max_reply_bytes": 16 << 20}})
    request = analyze(queries=["e"] * 4096, top_k_per_head=True)
    request.text = "e" * 35
    small = analyze()
    start = time.monotonic()
    status, details, _ = unary(server, "AnalyzeHeads", small)
    small_seconds = time.monotonic() - start
    assert status == "OK", details
    rss_before = server.stats.rss_bytes()
    start = time.monotonic()
    status, details, _ = unary(server, "AnalyzeHeads", request)
    refused_seconds = time.monotonic() - start
    assert status == "RESOURCE_EXHAUSTED", (status, details)
    assert "could reach" in details and "limits.max_reply_bytes = 16777216" in details, details
    # Refused up front: no slower than a small analysis (which generates), nothing built.
    assert refused_seconds < 2 * small_seconds + 0.5, (refused_seconds, small_seconds)
    assert server.stats.rss_bytes() - rss_before < 64 << 20


MAX_METADATA = 16384  # connections.max_metadata_bytes (config/server.yaml)


def test_oversized_metadata_fails_the_call_not_the_connection(server):
    with harness.channel(server.address) as chan:
        stub = harness.stub(chan)
        stream = stub.GenerateWithAttention(
            harness.generate_request([1, 2, 3], 64, layers=[0], ignore_eos=True), timeout=60)
        first = next(stream)  # the stream is open on this connection
        assert first.WhichOneof("event") == "header"
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10,
                              metadata=[("x-padding", "p" * (MAX_METADATA + 1))])
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = refused.value.details()
        assert f"connections.max_metadata_bytes = {MAX_METADATA}" in details, details
        rest = list(stream)  # the other call on the same connection finishes normally
        assert rest and rest[-1].WhichOneof("event") == "final"
        reply = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
        assert reply.model.num_layers == 4


def test_metadata_over_grpcs_own_limit_costs_only_its_connection(server):
    # Over 4 x max_metadata_bytes gRPC 1.51 itself refuses the headers, and its HPACK parser
    # makes that an error of the whole connection (documented in docs/reliability.md): the
    # server guarantees only that it survives and serves the next connection.
    with harness.channel(server.address) as chan:
        with pytest.raises(grpc.RpcError) as refused:
            harness.stub(chan).GetModelInfo(
                pb2.GetModelInfoRequest(), timeout=10,
                metadata=[("x-padding", "p" * (4 * MAX_METADATA + 1))])
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    harness.good_request_works(server.address)


def test_idle_connections_are_closed(start_server):
    server = start_server({"connections": {"idle_timeout_seconds": 1}})
    time.sleep(0.2)
    baseline = server.stats.open_fds()
    chan = harness.channel(server.address)
    try:
        start = time.monotonic()
        harness.stub(chan).GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
        call_seconds = time.monotonic() - start
        assert server.stats.open_fds() > baseline
        # The server closes the connection (GOAWAY) although the client keeps the channel.
        deadline = time.monotonic() + 1 + 5 + 20 * call_seconds
        while server.stats.open_fds() > baseline and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.stats.open_fds() <= baseline, "the idle connection was not closed"
        # The channel reconnects on the next call.
        harness.stub(chan).GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
    finally:
        chan.close()


KEY_SECRET = "s3cret-key-for-alice-0123456789"


def keyed_server(start_server, tmp_path, extra=None):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice {KEY_SECRET}\n")
    config = {"auth": {"api_keys_file": str(keys)}, "log_level": "info",
              "streaming": {"stream_queue_bytes": 65536, "stall_timeout_seconds": 30}}
    harness.deep_update(config, extra or {})
    return start_server(config)


ALICE = [("authorization", f"Bearer {KEY_SECRET}")]


def test_per_key_limit_defaults_to_concurrent_generations(start_server, tmp_path):
    server = keyed_server(start_server, tmp_path, {"concurrent_generations": 2})
    chan = harness.channel(server.address)
    held = []
    try:
        stub = harness.stub(chan)
        for _ in range(2):  # two unread streams hold both of alice's slots
            call = stub.GenerateWithAttention(
                harness.generate_request([1, 2, 3], 1000, layers=[0, 1, 2, 3], ignore_eos=True),
                timeout=60, metadata=ALICE)
            next(call)
            held.append(call)
        status, details, _ = unary(server, "GetModelInfo", pb2.GetModelInfoRequest(), ALICE)
        assert status == "RESOURCE_EXHAUSTED", (status, details)
        assert "API key 'alice'" in details and "its limit is 2" in details, details
    finally:
        for call in held:
            call.cancel()
        chan.close()
    deadline = time.monotonic() + 30
    while "key=alice" not in refusal_lines(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert refusal_lines(server), "the refusal's log line does not name the key"


def refusal_lines(server):
    return [line for line in server.stderr_text().splitlines()
            if "RESOURCE_EXHAUSTED" in line and "id=-" in line and "key=alice" in line]


def test_client_tag_newline_cannot_forge_log_lines(server):
    request = analyze()
    request.client_tag = "x\n[info] request id=forged method=Fake key=root"
    status, details, _ = unary(server, "AnalyzeHeads", request)
    assert status == "OK", details
    deadline = time.monotonic() + 10
    while "forged" not in server.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in server.stderr_text().splitlines() if "forged" in line]
    assert lines, "the request's log line is missing"
    assert all(line.startswith("[") and "method=AnalyzeHeads" in line for line in lines), lines
    assert all("\\n" in line for line in lines), lines


def test_unauthenticated_refusals_are_rate_limited_in_the_log(start_server, tmp_path):
    server = keyed_server(start_server, tmp_path)
    bad = [("authorization", "Bearer wrong-secret-0123456789abcdef")]
    start = time.monotonic()
    with harness.channel(server.address) as chan:
        stub = harness.stub(chan)
        for _ in range(200):
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10, metadata=bad)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    elapsed = time.monotonic() - start
    warned = [line for line in server.stderr_text().splitlines()
              if "rejected: invalid API key" in line]
    assert 1 <= len(warned) <= elapsed + 2, (len(warned), elapsed)


EXCEPTION_CASES = [
    ("Tokenize", lambda: pb2.TokenizeRequest(text="abc"), "prepare"),
    ("GetModelInfo", pb2.GetModelInfoRequest, "reply"),
    ("AnalyzeHeads", analyze, "prepare"),
    ("AnalyzeHeads", analyze, "engine"),
]


def test_exception_in_a_handler_is_internal_and_releases_admission(start_server, tmp_path):
    # debug.exception_injection makes the point a request names throw (the real server's
    # code, behind a test-only flag). Before the fix such an exception reached gRPC: the
    # client got UNIMPLEMENTED with no message, nothing was logged, and the call's key slot
    # and in-flight count were never released, so the key was locked out and SIGTERM waited
    # the whole drain grace.
    grace = 30
    server = keyed_server(start_server, tmp_path, {
        "concurrent_generations": 2, "drain_grace_seconds": grace,
        "debug": {"exception_injection": True}})
    limit = 2  # auth.max_concurrent_per_key 0 = concurrent_generations
    for method, make_request, point in EXCEPTION_CASES:
        for _ in range(limit + 1):  # a leaked slot would refuse the last one
            status, details, _ = unary(server, method, make_request(),
                                       ALICE + [("attnscope-debug-throw", point)])
            assert status == "INTERNAL", (method, point, status, details)
            assert f"exception injected at '{point}'" in details, (method, point, details)
    expected = len(EXCEPTION_CASES) * (limit + 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = server.stderr_text()
        exceptions = text.count("unexpected exception: exception injected at")
        records = len([line for line in text.splitlines()
                       if "status=INTERNAL" in line and "key=alice" in line])
        if exceptions >= expected and records >= expected:
            break
        time.sleep(0.05)
    assert exceptions == expected and records == expected, (exceptions, records, expected)
    # The key's full number of concurrent requests is available again.
    chan = harness.channel(server.address)
    held = []
    try:
        stub = harness.stub(chan)
        for _ in range(limit):
            call = stub.GenerateWithAttention(
                harness.generate_request([1, 2, 3], 1000, layers=[0], ignore_eos=True),
                timeout=60, metadata=ALICE)
            assert next(call).WhichOneof("event") == "header"
            held.append(call)
    finally:
        for call in held:
            call.cancel()
        chan.close()
    # Nothing is left in flight: SIGTERM drains at once, not after the grace.
    start = time.monotonic()
    assert server.stop(timeout=grace + 10) == 0
    assert time.monotonic() - start < grace / 2, time.monotonic() - start
