"""Issue 16, cause 2: no work on gRPC's callback threads beyond parsing and admission.

Two attacker processes (each with its own API key) loop requests whose prompt preparation is
expensive, on GenerateWithAttention, AnalyzeHeads and Tokenize: an 8 MiB text (over the O(1)
size limits of issue 16, which refuse it before any work; main tokenized it first) and a chat
of 30 000 messages, then a 1 MiB text and a 60 000-message chat, within those size limits for
max_prompt_tokens = 65536 (a long-context deployment) and refused only after tokenization or
rendering, by max_prompt_tokens or max_total_tokens. Meanwhile a third
user measures every Health check, GetModelInfo and small Tokenize: each must answer within
1 s (the issue's bound). Before the preparation pool, tokenizing and rendering ran on gRPC's
callback threads and such answers took seconds or timed out.

The attackers send pre-serialized bytes from their own processes, so that building 16 MiB
protos costs the test's prober no CPU (the machine has 2 cores).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import harness

pb2 = harness.pb2
BOUND_S = 1.0  # issue 16: health, GetModelInfo and a small Tokenize answer within 1 s
PROBE_TIMEOUT_S = 5.0
SERVICE = "/attnscope.v1.AttnScope/"
# The limits of a long-context deployment, so that requests within the O(1) size limits
# (16 bytes of text per prompt token, a message per prompt token) still cost seconds of
# tokenizing and chat rendering: 1 MiB texts and 60 000-message chats.
PROMPT_TOKENS = 65536
KEYS = {"attacker1": "secret-attacker-one", "attacker2": "secret-attacker-two",
        "victim": "secret-victim-three"}


def _identity(data):
    return data


def _chat_bytes(messages: int, content: str) -> bytes:
    """A ChatMessages of `messages` turns, built by repeating one serialized turn (repeated
    fields concatenate on the wire)."""
    one = pb2.ChatMessages()
    one.messages.add(role="user", content=content)
    return one.SerializeToString() * messages


def _attack_payloads():
    """(method, serialized request) pairs: one round of an attacker."""
    huge_text = "a" * (8 * 2**20)
    limit_text = "b" * (16 * PROMPT_TOKENS - 64)
    huge_chat = _chat_bytes(30_000, "x")
    limit_chat = _chat_bytes(PROMPT_TOKENS - 5536, "y" * 12)
    payloads = []
    for text in (huge_text, limit_text):
        g = pb2.GenerateRequest(text=text)
        g.generation.max_new_tokens = 1
        payloads.append(("GenerateWithAttention", g.SerializeToString()))
        payloads.append(("Tokenize", pb2.TokenizeRequest(text=text).SerializeToString()))
        a = pb2.AnalyzeRequest(text=text)
        a.generation.max_new_tokens = 1
        payloads.append(("AnalyzeHeads", a.SerializeToString()))
    for chat in (huge_chat, limit_chat):
        g = pb2.GenerateRequest()
        g.messages.MergeFromString(chat)
        g.generation.max_new_tokens = 1
        payloads.append(("GenerateWithAttention", g.SerializeToString()))
        t = pb2.TokenizeRequest()
        t.messages.MergeFromString(chat)
        payloads.append(("Tokenize", t.SerializeToString()))
    return payloads


def attack(address: str, secret: str) -> None:
    """Attacker process: loops rounds of expensive requests; prints one line per round."""
    payloads = _attack_payloads()
    metadata = (("authorization", f"Bearer {secret}"),)
    with harness.channel(address) as chan:
        calls = {}
        for name in ("Tokenize", "AnalyzeHeads"):
            calls[name] = chan.unary_unary(SERVICE + name, request_serializer=_identity,
                                           response_deserializer=_identity)
        calls["GenerateWithAttention"] = chan.unary_stream(
            SERVICE + "GenerateWithAttention", request_serializer=_identity,
            response_deserializer=_identity)
        print("ready", flush=True)
        rounds = 0
        while True:
            codes = []
            for method, payload in payloads:
                start = time.monotonic()
                try:
                    reply = calls[method](payload, timeout=60, metadata=metadata)
                    if method == "GenerateWithAttention":
                        for _ in reply:
                            pass
                    codes.append("OK")
                except harness.grpc.RpcError as error:
                    codes.append(error.code().name)
                print(f"request {method} {len(payload)} bytes {codes[-1]} "
                      f"{time.monotonic() - start:.2f} s", flush=True)
            rounds += 1
            print(f"round {rounds} {' '.join(codes)}", flush=True)


class Attacker:
    def __init__(self, address: str, secret: str):
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "attack", address, secret],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        import threading
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.strip())
            if line.startswith("ready"):
                self.ready.set()

    @property
    def rounds(self) -> int:
        return sum(1 for line in self.lines if line.startswith("round "))

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _write_keys(path: Path) -> Path:
    path.write_text("".join(f"{name} {secret}\n" for name, secret in KEYS.items()))
    return path


def _probe_once(chan, health, victim_metadata):
    """One Health, GetModelInfo and small Tokenize; returns {kind: seconds or error}."""
    s = harness.stub(chan)
    out = {}
    for kind in ("health", "model_info", "tokenize"):
        start = time.monotonic()
        try:
            if kind == "health":
                reply = health(b"", timeout=PROBE_TIMEOUT_S)
                assert reply == b"\x08\x01", reply  # SERVING
            elif kind == "model_info":
                info = s.GetModelInfo(pb2.GetModelInfoRequest(), timeout=PROBE_TIMEOUT_S,
                                      metadata=victim_metadata)
                assert info.model.num_layers == 4
            else:
                reply = s.Tokenize(pb2.TokenizeRequest(text="hi"), timeout=PROBE_TIMEOUT_S,
                                   metadata=victim_metadata)
                assert list(reply.ids) == [ord("h"), ord("i")], list(reply.ids)
            out[kind] = time.monotonic() - start
        except harness.grpc.RpcError as error:
            out[kind] = (time.monotonic() - start, error.code().name, error.details())
    return out


def test_callback_threads_stay_free_under_expensive_preparation(start_server, tmp_path):
    keys = _write_keys(tmp_path / "keys.txt")
    server = start_server({"auth": {"api_keys_file": str(keys)}, "queue_length": 16,
                           "limits": {"max_prompt_tokens": PROMPT_TOKENS}})
    victim_metadata = (("authorization", f"Bearer {KEYS['victim']}"),)
    with harness.channel(server.address) as chan:
        health = chan.unary_unary("/grpc.health.v1.Health/Check", request_serializer=_identity,
                                  response_deserializer=_identity)
        # The unloaded figures, for the report (and to tell a starving machine from a
        # starving server).
        idle = [_probe_once(chan, health, victim_metadata) for _ in range(5)]
        print(f"\nidle probes: {idle}")

        attackers = [Attacker(server.address, KEYS["attacker1"]),
                     Attacker(server.address, KEYS["attacker2"])]
        try:
            for attacker in attackers:
                assert attacker.ready.wait(120), attacker.process.stderr.read()
            # Probe until each attacker finished two rounds of its mix (every kind of request
            # reached the server twice per attacker), at most 60 s: an attacker whose rounds
            # take longer than that has already shown the starvation in the probes.
            samples = []
            started = time.monotonic()
            while (min(a.rounds for a in attackers) < 2 and time.monotonic() - started < 60):
                samples.append(_probe_once(chan, health, victim_metadata))
                for attacker in attackers:
                    assert attacker.process.poll() is None, attacker.process.stderr.read()
            elapsed = time.monotonic() - started
            rounds = [a.rounds for a in attackers]
            last_rounds = [a.lines[-3:] for a in attackers]
        finally:
            for attacker in attackers:
                attacker.stop()

    assert server.process.poll() is None, server.stderr_text()[-2000:]
    report = [f"{len(samples)} probes in {elapsed:.1f} s while the attackers ran "
              f"{rounds} rounds; last rounds: {last_rounds}"]
    failures = []
    for kind in ("health", "model_info", "tokenize"):
        values = [sample[kind] for sample in samples]
        errors = [v for v in values if isinstance(v, tuple)]
        times = [v if not isinstance(v, tuple) else v[0] for v in values]
        slow = [t for t in times if t > BOUND_S]
        report.append(f"{kind}: max {max(times) * 1000:.0f} ms, median "
                      f"{harness.median(times) * 1000:.0f} ms, {len(slow)} over {BOUND_S} s, "
                      f"errors {errors[:3]}")
        if slow or errors:
            failures.append(kind)
    print("\n".join(report))
    assert len(samples) >= 10, report
    assert not failures, "\n".join(report)
    # Every kind of request reached the server: at least one full round from each attacker.
    assert min(rounds) >= 1, report


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "attack":
    attack(sys.argv[2], sys.argv[3])
