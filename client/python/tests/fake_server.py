"""A protocol-faithful stand-in for attnscope-server, in Python, so the client's gRPC paths,
the example script, the notebook and dataset runs can be exercised where the C++ server is not
built. It follows the .proto (Header, interleaved TokenEvents and AttentionChunks, Final with
chunk count, byte count and CRC-32; typed AnalyzeHeads fields plus report_json) with a
deterministic toy "model": byte tokens, a fixed continuation, and attention that decays with
distance (head h at rate (h+1)/5) plus a sink on position 0 growing with the layer.
Tests against the real server live in test_server.py; this one never replaces them.
"""

import json
import re
import zlib
from concurrent import futures

import grpc
import numpy as np

from attnscope._protogen import load

pb2, pb2_grpc = load()
LAYERS, HEADS, VOCAB = 3, 4, 256
CONTINUATION = b"increase: sales and net income grew."
TERMS = ["sales", "revenue", "income", "profit", "earnings", "assets", "debt", "cash", "increase", "decrease"]


def render(request):
    kind = request.WhichOneof("input")
    if kind == "text":
        return request.text
    if kind == "messages":
        text = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in request.messages.messages)
        return text + ("" if request.messages.no_generation_prompt else "<|im_start|>assistant\n")
    return None


def attention_matrix(layer, head, total):
    i = np.arange(total)[:, None]
    j = np.arange(total)[None, :]
    scores = np.exp(-np.maximum(i - j, 0) * (head + 1) / 5.0) + (j == 0) * (layer + 1) * 0.5
    scores = np.where(j <= i, scores, 0.0)
    return (scores / scores.sum(1, keepdims=True)).astype(np.float32)


class FakeAttnScope(pb2_grpc.AttnScopeServicer):
    def __init__(self, drop_chunk=None, api_key=None):
        self.drop_chunk = drop_chunk  # sequence number to leave out (a broken server)
        self.api_key = api_key        # when set, requests need `authorization: Bearer <key>`

    def _check_key(self, context):
        if self.api_key is None:
            return
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Bearer {self.api_key}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong API key")

    def _inputs(self, request, context):
        self._check_key(context)
        text = render(request)
        if text is None:
            ids = list(request.ids.ids)
            if not ids or any(i < 0 or i >= VOCAB for i in ids):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"ids: values must be in [0, {VOCAB})")
            return ids, ""
        if not text:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input: empty")
        return list(text.encode()), text

    def _generate(self, request):
        if request.generation.prompt_only:
            return []
        max_new = request.generation.max_new_tokens or 8
        return list(CONTINUATION[:max_new])

    def GetModelInfo(self, request, context):
        if context is not None:
            self._check_key(context)
        return pb2.GetModelInfoResponse(model=pb2.ModelInfo(
            name="fake", architecture="FakeForCausalLM", model_type="fake", num_layers=LAYERS,
            num_attention_heads=HEADS, num_key_value_heads=HEADS, head_dim=8, hidden_size=32, vocab_size=VOCAB,
            device="cpu", run_dtype="float32", has_tokenizer=True, has_chat_template=True), server_version="fake")

    def Tokenize(self, request, context):
        ids, text = self._inputs(request, context)
        return pb2.TokenizeResponse(ids=ids, tokens=[chr(i) for i in ids],
                                    spans=[pb2.TokenSpan(start=k, end=k + 1) for k in range(len(ids))], text=text)

    def GenerateWithAttention(self, request, context):
        prompt, text = self._inputs(request, context)
        generated = self._generate(request)
        layers = [l % LAYERS for l in request.capture.layers] or list(range(LAYERS))
        heads = [h % HEADS for h in request.capture.heads] or list(range(HEADS))
        total = len(prompt) + len(generated)
        dense = {l: np.stack([attention_matrix(l, h, total) for h in heads]) for l in layers}
        yield pb2.GenerateResponse(header=pb2.Header(
            request_id="fake-1", prompt_ids=prompt, prompt_tokens=[chr(i) for i in prompt], prompt_text=text,
            model=self.GetModelInfo(None, None).model,
            capture=pb2.ResolvedCapture(layers=layers, heads=heads, dtype=pb2.DTYPE_FLOAT32)))
        state = {"sequence": 0, "sent": 0, "bytes": 0, "crc": 0}

        def chunk(layer, first_row, num_rows):
            values = dense[layer][:, first_row:first_row + num_rows, :first_row + num_rows]
            data = values.astype("<f4").tobytes()
            message = pb2.AttentionChunk(layer=layer, heads=heads, first_row=first_row, num_rows=num_rows,
                                         key_length=first_row + num_rows, dtype=pb2.DTYPE_FLOAT32,
                                         shape=list(values.shape), data=data,
                                         sequence_number=state["sequence"])
            state["sequence"] += 1
            if message.sequence_number == self.drop_chunk:
                return None
            state["sent"] += 1
            state["bytes"] += len(data)
            state["crc"] = zlib.crc32(data, state["crc"])
            return pb2.GenerateResponse(chunk=message)

        for layer in layers:
            message = chunk(layer, 0, len(prompt))
            if message:
                yield message
        for step, token in enumerate(generated):
            yield pb2.GenerateResponse(token=pb2.TokenEvent(id=token, position=len(prompt) + step,
                                                            text=chr(token), token=chr(token)))
            for layer in layers:
                message = chunk(layer, len(prompt) + step, 1)
                if message:
                    yield message
        yield pb2.GenerateResponse(final=pb2.Final(
            generated_text=bytes(generated).decode(), generated_ids=generated, stop_reason="max_new_tokens",
            prompt_tokens=len(prompt), generated_tokens=len(generated), total_chunks=state["sent"],
            total_attention_bytes=state["bytes"], data_crc32=state["crc"]))

    def AnalyzeHeads(self, request, context):
        prompt, text = self._inputs(request, context)
        generated = self._generate(request)
        ids = prompt + generated
        total, prompt_length = len(ids), len(prompt)
        tokens = [chr(i) for i in ids]
        response = pb2.AnalyzeResponse(request_id="fake-2", token_ids=ids, prompt_length=prompt_length,
                                       generated_text=bytes(generated).decode(), stop_reason="max_new_tokens")
        terms = []
        for match in re.finditer(r"[A-Za-z0-9]+", text):
            for term in TERMS:
                if term in match.group(0).lower():
                    terms.append({"term": term, "word": match.group(0), "word_bytes": [match.start(), match.end()],
                                  "positions": list(range(match.start(), match.end()))})
        term_positions = sorted({p for t in terms for p in t["positions"]})
        doc = {"tokens": tokens, "prompt_length": prompt_length, "generated_text": response.generated_text,
               "layers": [], "terms": terms, "term_attention": [], "top_k": [], "detectors": {}}
        for layer in range(LAYERS):
            matrices = [attention_matrix(layer, h, total).astype(np.float64) for h in range(HEADS)]
            for head, a in enumerate(matrices):
                summary = response.heads.add(layer=layer, head=head)
                for target, rows in ((summary.all_rows, slice(0, total)), (summary.generated_rows, slice(prompt_length, total))):
                    sub = a[rows]
                    first = rows.start
                    target.diagonal = float(np.mean([a[i, i] for i in range(first, total)]))
                    target.sink = float(sub[:, 0].mean())
                    target.entropy = float(-(sub * np.log(np.where(sub > 0, sub, 1))).sum(1).mean())
                    target.max = float(sub.max())
                    target.beginning = float(sub[:, :10].mean())
                    target.previous_token = float(np.mean([a[i, i - 1] for i in range(max(1, first), total)]))
                    target.causal = float(np.mean([a[i, :i].sum() / max(i, 1) for i in range(max(1, first), total)]))
                m = summary.all_rows
                summary.type = ("self" if m.diagonal > 0.3 else "beginning-focused" if m.beginning > m.causal
                                else "focused" if m.entropy < 2.0 else "distributed")
                if term_positions and generated:
                    block = a[prompt_length:][:, term_positions]
                    doc["term_attention"].append({"layer": layer, "head": head, "mean": float(block.mean()),
                                                  "max": float(block.max()),
                                                  "top_terms": [{"term": t["term"], "mass": float(a[prompt_length:][:, t["positions"]].sum(1).mean())} for t in terms[:3]]})
            response.layers.add(layer=layer, num_heads=HEADS, seq_length=total,
                                mean_attention=float(np.mean(matrices)), max_attention=float(np.max(matrices)))
            for query in request.analysis.queries:
                for position in [m.end() - 1 for m in re.finditer(re.escape(query), text, re.IGNORECASE)][:1]:
                    row = np.mean([m[position, :position + 1] for m in matrices], axis=0)
                    order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:10]
                    doc["top_k"].append({"layer": layer, "head": None, "query": query, "query_position": position,
                                         "query_token": tokens[position],
                                         "keys": [{"position": j, "token": tokens[j], "weight": float(row[j])} for j in order]})
        response.report_json = json.dumps(doc)
        return response


class FakeServer:
    def __init__(self, **kwargs):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb2_grpc.add_AttnScopeServicer_to_server(FakeAttnScope(**kwargs), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self.server.start()

    def stop(self):
        self.server.stop(grace=None)


if __name__ == "__main__":  # run it by hand: python3 fake_server.py
    server = FakeServer()
    print(server.address, flush=True)
    server.server.wait_for_termination()
