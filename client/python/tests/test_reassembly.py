"""Chunk reassembly and stream verification, on streams built from known arrays."""

import numpy as np
import pytest

from attnscope.errors import IncompleteStreamError
from attnscope.reassembly import StreamAssembler
from stream_fixtures import causal_attention, make_stream, pb2, refresh_final

PROMPT = [11, 12, 13, 14, 15]
GENERATED = [21, 22, 23, 24]
TOTAL = len(PROMPT) + len(GENERATED)


@pytest.fixture
def attention():
    rng = np.random.default_rng(7)
    return {0: causal_attention(rng, 3, TOTAL), 2: causal_attention(rng, 3, TOTAL)}


def _assemble(responses, **kwargs):
    assembler = StreamAssembler(**kwargs)
    for response in responses:
        assembler.feed(response)
    return assembler.finish()


def test_reassembles_exactly(attention):
    seen_tokens = []
    capture = _assemble(make_stream(attention, [0, 2, 3], PROMPT, GENERATED, split_heads_rows={7}),
                        on_token=lambda event: seen_tokens.append(event.id))
    assert seen_tokens == GENERATED
    assert capture.ids.tolist() == PROMPT + GENERATED
    assert capture.prompt_length == 5 and capture.layers == [0, 2] and capture.heads == [0, 2, 3]
    assert capture.tokens == [f"p{i}" for i in range(5)] + [f"g{i}" for i in GENERATED]
    assert capture.generated_text == "<21><22><23><24>" and capture.stop_reason == "max_new_tokens"
    for layer in (0, 2):
        np.testing.assert_array_equal(capture.attention(layer), attention[layer])


def test_float16_stream_decodes(attention):
    capture = _assemble(make_stream(attention, [0, 1, 2], PROMPT, GENERATED, dtype=pb2.DTYPE_FLOAT16))
    assert capture.dtype == "float16"
    np.testing.assert_array_equal(capture.attention(0), attention[0].astype(np.float16).astype(np.float32))


def test_truncated_stream_raises(attention):
    responses = make_stream(attention, [0, 1, 2], PROMPT, GENERATED)
    with pytest.raises(IncompleteStreamError, match="without its Final"):
        _assemble(responses[:-3])


def test_missing_chunk_raises_on_the_sequence_gap(attention):
    responses = make_stream(attention, [0, 1, 2], PROMPT, GENERATED)
    chunk_indices = [i for i, r in enumerate(responses) if r.WhichOneof("event") == "chunk"]
    del responses[chunk_indices[3]]
    with pytest.raises(IncompleteStreamError, match="sequence number 4 arrived where 3 was expected"):
        _assemble(responses)


def test_consistently_missing_row_raises(attention):
    # A server that skipped one head's row but numbered and summed what it sent correctly.
    responses = make_stream(attention, [0, 1, 2], PROMPT, GENERATED, split_heads_rows={6})
    responses = [r for r in responses if not (r.WhichOneof("event") == "chunk" and r.chunk.layer == 2
                                              and r.chunk.first_row == 6 and list(r.chunk.heads) == [1])]
    with pytest.raises(IncompleteStreamError, match=r"layer 2: row 6 of heads \[1\] never arrived"):
        _assemble(refresh_final(responses))


def test_checksum_mismatch_raises(attention):
    responses = make_stream(attention, [0, 1, 2], PROMPT, GENERATED)
    chunk = next(r.chunk for r in responses if r.WhichOneof("event") == "chunk")
    data = bytearray(chunk.data)
    data[5] ^= 0x01
    chunk.data = bytes(data)
    with pytest.raises(IncompleteStreamError, match="CRC-32"):
        _assemble(responses)


def test_duplicate_row_raises(attention):
    responses = make_stream(attention, [0, 1, 2], PROMPT, GENERATED)
    last_chunk = max(i for i, r in enumerate(responses) if r.WhichOneof("event") == "chunk")
    duplicate = pb2.GenerateResponse()
    duplicate.CopyFrom(responses[last_chunk])
    duplicate.chunk.sequence_number += 1
    responses.insert(last_chunk + 1, duplicate)
    with pytest.raises(IncompleteStreamError, match="arrived twice"):
        _assemble(responses)


def test_inconsistent_chunk_shape_raises(attention):
    responses = make_stream(attention, [0, 1, 2], PROMPT, GENERATED)
    chunk = next(r.chunk for r in responses if r.WhichOneof("event") == "chunk")
    chunk.data = chunk.data[:-4]
    with pytest.raises(IncompleteStreamError, match="data holds"):
        _assemble(responses)


def test_generated_ids_must_match_final(attention):
    responses = make_stream(attention, [0, 1, 2], PROMPT, GENERATED)
    responses[-1].final.generated_ids[1] = 99
    with pytest.raises(IncompleteStreamError, match="differ from"):
        _assemble(responses)
