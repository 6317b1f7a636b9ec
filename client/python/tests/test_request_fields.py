"""Every request field the Python client sends exists in the .proto, and a misspelled one fails.

The client builds its requests from the generated message classes, which refuse unknown
names; this drives every option of every call through a recording stub (no server), so a
field the client spells wrong fails here, and shows that the refusal is real.
"""

import pytest

import attnscope
from attnscope import _protogen
from attnscope.reassembly import ROWS_GENERATED_ONLY, ROWS_PROMPT_ONLY, _DTYPES

pb2, _ = _protogen.load()


class Recorded(Exception):
    pass


class RecordingStub:
    def __init__(self):
        self.requests = []

    def _record(self, request, metadata=None, timeout=None):
        self.requests.append(request)
        raise Recorded()

    GenerateWithAttention = AnalyzeHeads = Tokenize = GetModelInfo = _record


def set_fields(message, prefix=""):
    """Names of every field set in `message`, recursively, checked against its descriptor."""
    names = []
    for field, value in message.ListFields():
        assert field.name in message.DESCRIPTOR.fields_by_name
        names.append(prefix + field.name)
        if field.message_type is not None:
            for item in (value if field.label == field.LABEL_REPEATED else [value]):
                names.extend(set_fields(item, prefix + field.name + "."))
    return names


def test_every_option_of_every_call_sets_only_proto_fields():
    client = attnscope.Client("127.0.0.1:1")
    stub = RecordingStub()
    client._stub = stub
    calls = [
        lambda: client.generate(text="Net sales", max_new_tokens=3, greedy=False, temperature=0.7, top_p=0.9,
                                top_k=5, seed=2, repetition_penalty=1.1, stop_strings=["."], eos_token_ids=[3],
                                layers=[0, -1], heads=[1], dtype="bfloat16", rows="generated", capture=True,
                                plain_text=True, progress=False, client_tag="t"),
        lambda: client.generate(messages=[{"role": "user", "content": "hi"}], add_generation_prompt=False,
                                max_new_tokens=0, dtype="float16", rows="prompt", capture=False, progress=False),
        lambda: client.generate(ids=[1, 2, 3], progress=False),
        lambda: client.analyze(text="Revenue rose", max_new_tokens=2, temperature=0.5, top_p=0.8, top_k_sampling=4,
                               seed=1, stop_strings=["x"], layers=[0], heads=[0, 1], terms=["revenue"],
                               queries=["rose"], query_positions=2, top_k=3, beginning_k=4, self_threshold=0.2,
                               focused_entropy_threshold=1.5, include_term_submatrix=True, plain_text=True,
                               client_tag="a"),
        lambda: client.analyze(induction_probe=(8, 3)),
        lambda: client.tokenize(messages=[("user", "hi")], plain_text=True),
        lambda: client.model_info(),
    ]
    for call in calls:
        with pytest.raises(Recorded):
            call()
    assert len(stub.requests) == len(calls)
    sent = [set_fields(request) for request in stub.requests]
    assert "generation.temperature" in sent[0] and "capture.dtype" in sent[0]
    assert stub.requests[0].capture.dtype == pb2.DTYPE_BFLOAT16
    assert stub.requests[0].capture.rows == pb2.ROWS_GENERATED_ONLY
    assert "analysis.induction_probe.length" in sent[4]
    assert "messages.no_generation_prompt" in sent[1]


def test_a_misspelled_field_is_refused():
    request = pb2.GenerateRequest()
    with pytest.raises(AttributeError):
        request.generation.greedy = True  # the Node client's old bug: no such field
    with pytest.raises(ValueError):
        pb2.GenerateRequest(capture={"dtpye": pb2.DTYPE_FLOAT16})


def test_enum_constants_come_from_the_generated_module():
    assert ROWS_PROMPT_ONLY == pb2.ROWS_PROMPT_ONLY and ROWS_GENERATED_ONLY == pb2.ROWS_GENERATED_ONLY
    assert _DTYPES[pb2.DTYPE_FLOAT16][0] == "float16" and _DTYPES[pb2.DTYPE_BFLOAT16][0] == "bfloat16"
