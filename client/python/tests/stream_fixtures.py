"""Builds GenerateWithAttention streams (as the proto defines them) from known arrays."""

import zlib

import numpy as np

from attnscope._protogen import load

pb2, _ = load()


def causal_attention(rng, heads, total):
    scores = rng.random((heads, total, total), dtype=np.float32)
    scores = np.where(np.tril(np.ones((total, total), dtype=bool)), scores, 0)
    return (scores / scores.sum(-1, keepdims=True)).astype(np.float32)


def make_stream(attention, heads, prompt_ids, generated_ids, split_heads_rows=(), dtype=pb2.DTYPE_FLOAT32):
    """Header, the prefill block per layer, then one row per layer per token (key_length =
    row + 1); rows listed in split_heads_rows go out one chunk per head."""
    layers = sorted(attention)
    prompt_length = len(prompt_ids)
    responses = [pb2.GenerateResponse(header=pb2.Header(
        request_id="r1", prompt_ids=prompt_ids, prompt_tokens=[f"p{i}" for i in range(prompt_length)],
        capture=pb2.ResolvedCapture(layers=layers, heads=heads, dtype=dtype),
        model=pb2.ModelInfo(name="tiny", config_sha256="ab" * 32)))]
    chunks = []

    def add_chunk(layer, head_positions, first_row, num_rows, key_length):
        values = attention[layer][head_positions, first_row:first_row + num_rows, :key_length]
        data = values.astype("<f4").tobytes() if dtype == pb2.DTYPE_FLOAT32 else values.astype("<f2").tobytes()
        chunk = pb2.AttentionChunk(layer=layer, heads=[heads[p] for p in head_positions], first_row=first_row,
                                   num_rows=num_rows, key_length=key_length, dtype=dtype,
                                   shape=list(values.shape), data=data, sequence_number=len(chunks))
        chunks.append(chunk)
        responses.append(pb2.GenerateResponse(chunk=chunk))

    all_heads = list(range(len(heads)))
    for layer in layers:
        add_chunk(layer, all_heads, 0, prompt_length, prompt_length)
    for step, token_id in enumerate(generated_ids):
        position = prompt_length + step
        responses.append(pb2.GenerateResponse(token=pb2.TokenEvent(
            id=token_id, position=position, text=f"<{token_id}>", token=f"g{token_id}")))
        for layer in layers:
            if position in split_heads_rows:
                for p in all_heads:
                    add_chunk(layer, [p], position, 1, position + 1)
            else:
                add_chunk(layer, all_heads, position, 1, position + 1)
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk.data, crc)
    responses.append(pb2.GenerateResponse(final=pb2.Final(
        generated_text="".join(f"<{i}>" for i in generated_ids), generated_ids=generated_ids,
        stop_reason="max_new_tokens", prompt_tokens=prompt_length, generated_tokens=len(generated_ids),
        total_chunks=len(chunks), total_attention_bytes=sum(len(c.data) for c in chunks), data_crc32=crc)))
    return responses


def refresh_final(responses):
    """Recomputes Final's totals over the chunks present (a server that omitted something but
    is otherwise consistent)."""
    chunks = [r.chunk for r in responses if r.WhichOneof("event") == "chunk"]
    for index, chunk in enumerate(chunks):
        chunk.sequence_number = index
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk.data, crc)
    final = responses[-1].final
    final.total_chunks = len(chunks)
    final.total_attention_bytes = sum(len(c.data) for c in chunks)
    final.data_crc32 = crc
    return responses
