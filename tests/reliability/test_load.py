"""Load: concurrent clients issue a deterministic mix of requests against a real server.

Every request must end with success or one of the statuses the proto documents for it
(CANCELLED for a request the client cancels, DEADLINE_EXCEEDED for one with a short deadline,
RESOURCE_EXHAUSTED when the queue is full); no request may hang (each has a bounded timeout
and the run as a whole a deadline); every successful stream passes the client's verification
(sequence numbers, counts, CRC-32) and the softmax invariant (every captured row sums to 1);
after the run the server's descriptors are back at the warm baseline and its RSS within a
small margin of it.

Size: RELIABILITY_CLIENTS x RELIABILITY_REQUESTS (default 16 x 20, the CI part);
scripts/reliability.sh runs 16 x 200. The table is printed and, with RELIABILITY_REPORT=FILE,
also written there.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from typing import List, Tuple

import grpc
import numpy as np

import harness
from harness import AttnScopeError, pb2

CLIENTS = int(os.environ.get("RELIABILITY_CLIENTS", "16"))
REQUESTS_PER_CLIENT = int(os.environ.get("RELIABILITY_REQUESTS", "20"))
WARMUP_PER_CLIENT = 2
REQUEST_TIMEOUT_S = 120.0       # a request that takes longer counts as hung
SHORT_DEADLINE_S = 0.25         # the "short deadline" requests; generation needs seconds
# RSS may grow a little after warm-up (allocator arenas of gRPC threads, torch caches): a
# leak of even 1 KiB per request would show as 3 MiB over the long run's 3,200 requests, but
# allocator noise on 16 connections is a few MiB, hence this margin.
RSS_MARGIN_BYTES = 24 * 2**20
FD_MARGIN = 0                   # descriptors must return exactly (after the settle wait)

KINDS = [  # (kind, weight)
    ("capture_small", 4), ("capture_large", 2), ("capture_subset_f16", 2), ("analyze", 2),
    ("tokenize", 3), ("cancel", 2), ("deadline", 1),
]
ALLOWED = {
    "capture_small": {"OK", "RESOURCE_EXHAUSTED"},
    "capture_large": {"OK", "RESOURCE_EXHAUSTED"},
    "capture_subset_f16": {"OK", "RESOURCE_EXHAUSTED"},
    "analyze": {"OK", "RESOURCE_EXHAUSTED"},
    "tokenize": {"OK"},  # needs no model time, never queued
    # Cancelled after the first chunk arrived; OK only if the whole stream was already done.
    "cancel": {"CANCELLED", "RESOURCE_EXHAUSTED"},
    "deadline": {"DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"},
}
WORDS = ["sales", "revenue", "grew", "in", "the", "third", "quarter", "profit", "margin",
         "fell", "while", "income", "rose", "über", "café", "naïve", "日本"]


def check_rows_sum_to_one(capture, tolerance: float) -> None:
    """Softmax invariant: every query row of every captured head sums to 1 over the keys it
    can see. Independent of the server's own bookkeeping."""
    for layer in capture.layers:
        attention = capture.attention_by_layer[layer]
        assert attention.shape[1] == attention.shape[2] == capture.num_tokens, attention.shape
        sums = attention.sum(axis=2)
        worst = float(np.abs(sums - 1.0).max())
        assert worst < tolerance, f"layer {layer}: a row sums to 1 +- {worst}"


def one_request(stub_, kind: str, rng: random.Random) -> None:
    """Runs one request of `kind`; returns on success, raises AttnScopeError otherwise."""
    if kind == "capture_small":
        prompt = [rng.randrange(0, 256) for _ in range(rng.randint(3, 20))]
        new = rng.randint(2, 12)
        capture = harness.run_capture(stub_, harness.generate_request(prompt, new), REQUEST_TIMEOUT_S)
        assert capture.num_tokens <= len(prompt) + new and capture.prompt_length == len(prompt)
        check_rows_sum_to_one(capture, 1e-4)
    elif kind == "capture_large":
        prompt = [rng.randrange(0, 256) for _ in range(rng.randint(60, 120))]
        new = rng.randint(16, 40)
        capture = harness.run_capture(stub_, harness.generate_request(prompt, new), REQUEST_TIMEOUT_S)
        check_rows_sum_to_one(capture, 1e-4)
    elif kind == "capture_subset_f16":
        prompt = [rng.randrange(0, 256) for _ in range(rng.randint(20, 40))]
        request = harness.generate_request(prompt, rng.randint(8, 24), layers=[-1, 1], heads=[0, 5],
                                           dtype=pb2.DTYPE_FLOAT16)
        capture = harness.run_capture(stub_, request, REQUEST_TIMEOUT_S)
        assert capture.layers == [1, 3] and capture.heads == [0, 5], (capture.layers, capture.heads)
        check_rows_sum_to_one(capture, 1e-2)
    elif kind == "analyze":
        request = pb2.AnalyzeRequest(text=" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))))
        request.generation.max_new_tokens = rng.randint(2, 10)
        try:
            reply = stub_.AnalyzeHeads(request, timeout=REQUEST_TIMEOUT_S)
        except grpc.RpcError as error:
            raise AttnScopeError(error.code().name, error.details() or "") from None
        assert len(reply.layers) == 4 and len(reply.heads) == 32, (len(reply.layers), len(reply.heads))
    elif kind == "tokenize":
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40)))
        try:
            reply = stub_.Tokenize(pb2.TokenizeRequest(text=text), timeout=REQUEST_TIMEOUT_S)
        except grpc.RpcError as error:
            raise AttnScopeError(error.code().name, error.details() or "") from None
        # The tiny model's tokenizer is byte-level: one id per UTF-8 byte.
        assert list(reply.ids) == list(text.encode("utf-8")), "tokenization is not byte-level"
    elif kind == "cancel":
        prompt = [rng.randrange(0, 256) for _ in range(40)]
        call = stub_.GenerateWithAttention(harness.generate_request(prompt, 400, ignore_eos=True),
                                           timeout=REQUEST_TIMEOUT_S)
        try:
            for response in call:
                if response.WhichOneof("event") == "chunk":
                    call.cancel()  # mid-stream: header and at least one chunk arrived
        except grpc.RpcError as error:
            raise AttnScopeError(error.code().name, error.details() or "") from None
    elif kind == "deadline":
        prompt = [rng.randrange(0, 256) for _ in range(40)]
        harness.run_capture(stub_, harness.generate_request(prompt, 400, ignore_eos=True), SHORT_DEADLINE_S)
    else:
        raise ValueError(kind)


def run_clients(address: str, clients: int, per_client: int, seed: int, run_deadline_s: float):
    """Returns (results, hung): results are (kind, outcome, seconds, message) tuples."""
    results: List[Tuple[str, str, float, str]] = []
    lock = threading.Lock()
    kinds, weights = zip(*KINDS)

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with harness.channel(address) as chan:
            stub_ = harness.stub(chan)
            for _ in range(per_client):
                kind = rng.choices(kinds, weights)[0]
                start = time.monotonic()
                outcome, message = "OK", ""
                try:
                    one_request(stub_, kind, rng)
                except AttnScopeError as error:
                    outcome, message = error.code, error.message
                except AssertionError as error:
                    outcome, message = "WRONG_RESULT", str(error)
                elapsed = time.monotonic() - start
                with lock:
                    results.append((kind, outcome, elapsed, message))
                if outcome == "RESOURCE_EXHAUSTED":
                    time.sleep(0.25)  # back off as a polite client would

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + run_deadline_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = sum(thread.is_alive() for thread in threads)
    return results, hung


def test_concurrent_mixed_load(start_server):
    # 16 clients, 14 queue places: some requests find the queue full (RESOURCE_EXHAUSTED).
    server = start_server({"queue_length": 14})
    # Generous (a request normally takes well under a second) but inside CTest's 300 s limit
    # for the CI size, so that a hang is reported as one.
    run_deadline = REQUEST_TIMEOUT_S + REQUESTS_PER_CLIENT * 5.0

    # Warm-up at full concurrency, so that baselines include gRPC's threads and the
    # allocator's arenas; then every connection is closed.
    warm, hung = run_clients(server.address, CLIENTS, WARMUP_PER_CLIENT, seed=7, run_deadline_s=run_deadline)
    assert hung == 0, f"{hung} warm-up clients hung"
    time.sleep(1.0)
    fds_before = server.stats.open_fds()
    rss_before = server.stats.rss_bytes()

    start = time.monotonic()
    results, hung = run_clients(server.address, CLIENTS, REQUESTS_PER_CLIENT, seed=1, run_deadline_s=run_deadline)
    wall = time.monotonic() - start
    assert hung == 0, f"{hung} of {CLIENTS} clients still running after {run_deadline:.0f} s (a hang)"

    fds_after = server.settle(fds_before + FD_MARGIN)
    time.sleep(0.5)
    rss_after = server.stats.rss_bytes()
    peak_rss = server.stats.peak_rss_bytes()

    outcomes = Counter(outcome for _, outcome, _, _ in results)
    by_kind = Counter((kind, outcome) for kind, outcome, _, _ in results)
    table = harness.outcome_table(
        dict(outcomes), [seconds for _, _, seconds, _ in results], peak_rss,
        f"load: {CLIENTS} clients x {REQUESTS_PER_CLIENT} requests in {wall:.1f} s")
    table += "\n" + "\n".join(f"  {kind:<20}{outcome:<20}{count:>6}"
                              for (kind, outcome), count in sorted(by_kind.items()))
    table += (f"\nserver RSS {harness.format_mib(rss_before)} before, {harness.format_mib(rss_after)} "
              f"after; open fds {fds_before} before, {fds_after} after")
    print("\n" + table)
    if os.environ.get("RELIABILITY_REPORT"):
        with open(os.environ["RELIABILITY_REPORT"], "w") as f:
            f.write(table + "\n")

    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
    unexpected = [(kind, outcome, message) for kind, outcome, _, message in results
                  if outcome not in ALLOWED[kind]]
    assert not unexpected, f"{len(unexpected)} requests ended outside their documented statuses: {unexpected[:5]}"
    for kind, outcome, _, message in results:
        if outcome == "RESOURCE_EXHAUSTED":
            assert "queue_length" in message, f"RESOURCE_EXHAUSTED without naming the limit: {message!r}"
    assert outcomes["OK"] >= len(results) // 3, f"too few successes to mean anything: {dict(outcomes)}"
    assert fds_after <= fds_before + FD_MARGIN, f"open fds {fds_before} -> {fds_after}"
    assert rss_after <= rss_before + RSS_MARGIN_BYTES, \
        f"RSS {harness.format_mib(rss_before)} -> {harness.format_mib(rss_after)} (margin {harness.format_mib(RSS_MARGIN_BYTES)})"
    harness.good_request_works(server.address)
