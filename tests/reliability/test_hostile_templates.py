"""Hostile chat templates (issue 16, cause 3 and the template parts of cause 4): a model whose
tokenizer_config.json carries a chat_template that allocates without bound, throws or
miscomputes at request time. Each case copies the tiny model, puts one template in, starts a
real attnscope-server on it and sends one chat Tokenize (which renders the template).

Before the fix these requests OOM-killed the server (a repeat whose size check overflowed, a
string doubled in a loop, replace amplification), leaked the call with an empty UNIMPLEMENTED
(2.0 ** -1074: std::stod threw on the subnormal) or rendered 36 for 2 * 3 ** 2. Now a refused
template gets RESOURCE_EXHAUSTED naming the template limit, the server's peak RSS stays far
below what the value would have taken, and the server serves a normal request afterwards. A
valid template renders exactly what Jinja2 (Debian's python3-jinja2, configured as
transformers configures it: tests/tokenizer/jinja/oracle.py) renders. Last, a valid render that
holds ~400 MiB of arena memory must leave RSS near the baseline (the server's malloc_trim).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import grpc
import pytest

import harness
from harness import pb2

sys.path.insert(0, str(harness.REPO_ROOT / "tests" / "tokenizer" / "jinja"))
import oracle  # noqa: E402

# The tiny model itself needs ~200 MiB; each refused value below would have needed from 2 GB
# (join) to 2**63 bytes (the repeat). 1 GiB is above the legitimate peak and far below those.
PEAK_RSS_LIMIT = 1 << 30
REQUEST_TIMEOUT_S = 60.0
MESSAGES = [{"role": "user", "content": "hi"}]
CONVERSATION = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"

KIB_STRING = "{% set kib = 'abcdefgh' * 128 %}"  # 1024 bytes
REFUSED = [
    # 2 * 2**62 bytes: the size check itself overflowed int64 before the fix.
    ("huge_repeat", "{{ 'ab' * 4611686018427387904 }}", "over the limit of"),
    # 8 bytes doubled 40 times is 8 TiB; every step is a new, twice larger string.
    ("doubling_loop", "{% set ns = namespace(s='abcdefgh') %}{% for i in range(40) %}"
                      "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
     "over the limit of"),
    # 1 KiB with every byte replaced by itself: 1 MiB, then 1 GiB, then 1 TiB.
    ("replace_amplification", KIB_STRING + "{% set ns = namespace(s=kib) %}"
                              "{% for i in range(3) %}{% set ns.s = ns.s | replace('a', kib) %}"
                              "{% endfor %}{{ ns.s | length }}",
     "replace() result"),
    # 100 000 shared 1 KiB cells joined with 1 KiB: 200 MB, refused before it is built.
    ("join_of_a_huge_list", KIB_STRING + "{{ ([kib] * 100000) | join(kib) | length }}",
     "over the limit of"),
    # range() of 10**12 integers, joined.
    ("join_of_a_huge_range", "{{ range(1000000000000) | join(',') | length }}",
     "range too big"),
]
RENDERED = [
    # std::stod threw on the subnormal that FloatRepr printed: the exception escaped.
    ("subnormal_float", "{{ 2.0 ** -1074 }}" + CONVERSATION),
    # ** binds tighter than *: Jinja2 renders 18, the server rendered 36.
    ("precedence", "{{ 2 * 3 ** 2 }}|{{ -2 ** 2 }}|{{ 2 ** 3 ** 2 }}" + CONVERSATION),
]


def model_with_template(tiny_model: Path, tmp_path: Path, template: str) -> Path:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    path = model / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["chat_template"] = template
    path.write_text(json.dumps(config))
    return model


def chat_tokenize(server: harness.Server):
    request = pb2.TokenizeRequest()
    for turn in MESSAGES:
        request.messages.messages.add(role=turn["role"], content=turn["content"])
    request.messages.no_generation_prompt = True
    with harness.channel(server.address) as chan:
        try:
            reply = harness.stub(chan).Tokenize(request, timeout=REQUEST_TIMEOUT_S)
            return "OK", "", reply
        except grpc.RpcError as error:
            return error.code().name, error.details() or "", None


def assert_still_serving_within_memory(server: harness.Server) -> None:
    assert server.process.poll() is None, f"server died: {server.stderr_text()[-2000:]}"
    peak = server.stats.peak_rss_bytes()
    print(f"peak RSS {harness.format_mib(peak)}")
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {harness.format_mib(peak)} over 1 GiB"
    assert server.health() == "SERVING"
    harness.good_request_works(server.address)


@pytest.mark.parametrize("name,template,limit", REFUSED, ids=[case[0] for case in REFUSED])
def test_unbounded_template_is_refused_within_memory(tiny_model, tmp_path, start_server, name,
                                                     template, limit):
    server = start_server(model_dir=model_with_template(tiny_model, tmp_path, template))
    code, details, _ = chat_tokenize(server)
    print(f"{name}: {code} {details!r}")
    assert code == "RESOURCE_EXHAUSTED", (code, details)
    assert "chat template" in details and limit in details, details
    assert_still_serving_within_memory(server)


@pytest.mark.parametrize("name,template", RENDERED, ids=[case[0] for case in RENDERED])
def test_template_renders_what_jinja2_renders(tiny_model, tmp_path, start_server, name,
                                              template):
    expected = oracle.Oracle().render({"template": template, "messages": MESSAGES,
                                       "add_generation_prompt": False})
    assert expected["ok"], expected
    server = start_server(model_dir=model_with_template(tiny_model, tmp_path, template))
    code, details, reply = chat_tokenize(server)
    assert code == "OK", (code, details)
    print(f"{name}: server {reply.text!r}, Jinja2 {expected['text']!r}")
    assert reply.text == expected["text"]
    # The byte-level tiny vocabulary: one id per byte, the byte's value.
    assert list(reply.ids) == list(expected["text"].encode()), list(reply.ids)
    assert_still_serving_within_memory(server)


# 400 strings of 1 MiB alive at once, each built from the arena: the temporary of the first
# line is freed at once, which raises glibc's dynamic mmap threshold above 1 MiB, so the
# 400 are not separate mappings that free() would unmap.
BIG_RENDER = (KIB_STRING + "{% set mib = kib * 1024 %}{{ (mib ~ 'x') | length }}"
              "{% set ns = namespace(l=[]) %}{% for i in range(400) %}"
              "{% set ns.l = ns.l + [mib ~ i] %}{% endfor %}{{ ns.l | length }}" + CONVERSATION)
RETURNED_MARGIN = 64 << 20
RETURN_WAIT_S = 10.0


def test_memory_of_a_big_render_is_returned(tiny_model, tmp_path, start_server):
    """glibc keeps freed arena memory; the server trims after a request that left over 256 MB
    free. The render holds ~400 MiB at its peak, then frees all of it."""
    expected = oracle.Oracle().render({"template": BIG_RENDER, "messages": MESSAGES,
                                       "add_generation_prompt": False})
    server = start_server(model_dir=model_with_template(tiny_model, tmp_path, BIG_RENDER))
    harness.good_request_works(server.address)
    baseline = server.stats.rss_bytes()
    code, details, reply = chat_tokenize(server)
    assert code == "OK", (code, details)
    assert reply.text == expected["text"]
    peak = server.stats.peak_rss_bytes()
    assert peak > baseline + (256 << 20), (
        f"the render did not use the memory this test needs: peak {harness.format_mib(peak)}, "
        f"baseline {harness.format_mib(baseline)}")
    deadline = time.monotonic() + RETURN_WAIT_S
    rss = server.stats.rss_bytes()
    while rss > baseline + RETURNED_MARGIN and time.monotonic() < deadline:
        time.sleep(0.05)
        rss = server.stats.rss_bytes()
    print(f"RSS baseline {harness.format_mib(baseline)}, peak {harness.format_mib(peak)}, "
          f"after {harness.format_mib(rss)}")
    assert rss <= baseline + RETURNED_MARGIN, (
        f"RSS {harness.format_mib(rss)} still over {harness.format_mib(baseline)} + 64 MiB "
        f"{RETURN_WAIT_S} s after the request")
