"""`Client`: the attnscope gRPC service as Python calls returning numpy arrays."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Sequence, Union

import grpc

from attnscope import _protogen
from attnscope.capture import Capture
from attnscope.errors import AttnScopeError
from attnscope.interventions import ScoreResult, SweepResult, fill_interventions
from attnscope.reassembly import StreamAssembler
from attnscope.report import HeadReport

pb2, pb2_grpc = _protogen.load()
status_pb2, error_details_pb2 = _protogen.load_rpc()

_DTYPE_VALUES = {"float32": pb2.DTYPE_FLOAT32, "float16": pb2.DTYPE_FLOAT16, "bfloat16": pb2.DTYPE_BFLOAT16}
_ROW_VALUES = {"all": pb2.ROWS_ALL, "prompt": pb2.ROWS_PROMPT_ONLY, "generated": pb2.ROWS_GENERATED_ONLY}
Messages = Sequence[Union[dict, tuple]]
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def _error_from_rpc(error: grpc.RpcError) -> AttnScopeError:
    """The server's status as an AttnScopeError, with the field violations of any
    google.rpc.BadRequest in its details."""
    violations = []
    for key, value in error.trailing_metadata() or ():
        if key != _STATUS_DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                violations.extend((v.field, v.description) for v in bad_request.field_violations)
    return AttnScopeError(error.code().name, error.details() or "", violations)


@dataclass
class Tokenization:
    ids: List[int]
    tokens: List[str]
    spans: List[tuple] = field(default_factory=list)  # (start, end) byte offsets in `text`
    text: str = ""


def _message_to_dict(message) -> dict:
    from google.protobuf.json_format import MessageToDict
    return MessageToDict(message, preserving_proto_field_name=True, including_default_value_fields=True)


def _set_input(request, text, messages, ids, add_generation_prompt=True, tools=None,
               documents=None, template_kwargs=None, template_date=None) -> None:
    given = [name for name, value in (("text", text), ("messages", messages), ("ids", ids)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of text=, messages=, ids= (got {given or 'none'})")
    chat_only = [name for name, value in (("tools", tools), ("documents", documents),
                                          ("template_kwargs", template_kwargs),
                                          ("template_date", template_date)) if value is not None]
    if chat_only and messages is None:
        raise ValueError(f"{', '.join(chat_only)} need messages=")
    if text is not None:
        request.text = text
    elif messages is not None:
        whole = []
        for message in messages:
            if isinstance(message, dict):
                whole.append(message)
                content = message.get("content")
                if isinstance(content, list):  # a list of parts: its text parts
                    content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
                request.messages.messages.add(role=message["role"], content=content or "")
            else:
                role, content = message
                whole.append({"role": role, "content": content})
                request.messages.messages.add(role=role, content=content)
        # The template sees each message whole (tool_calls, tool_call_id, name, ...), as
        # transformers' apply_chat_template passes them.
        request.messages.messages_json = json.dumps(whole, ensure_ascii=False)
        if tools is not None:
            request.messages.tools_json = json.dumps(list(tools), ensure_ascii=False)
        if documents is not None:
            request.messages.documents_json = json.dumps(list(documents), ensure_ascii=False)
        if template_kwargs:
            request.messages.template_kwargs_json = json.dumps(dict(template_kwargs), ensure_ascii=False)
        if template_date is not None:
            request.messages.template_date = str(template_date)
        request.messages.no_generation_prompt = not add_generation_prompt
    else:
        request.ids.ids.extend(int(i) for i in ids)


def _set_generation(params, max_new_tokens, greedy, temperature, top_p, top_k, seed,
                    repetition_penalty, stop_strings, eos_token_ids) -> None:
    # Zero values mean the server's defaults (proto3), so 0 new tokens is "prompt only".
    if max_new_tokens is not None:
        if max_new_tokens == 0:
            params.prompt_only = True
        else:
            params.max_new_tokens = int(max_new_tokens)
    if greedy is not None:
        params.sample = not greedy
    elif temperature is not None or top_p is not None or top_k:
        params.sample = True  # asking for sampling parameters means sampling
    if temperature is not None:
        params.temperature = float(temperature)
    if top_p is not None:
        params.top_p = float(top_p)
    if top_k:
        params.top_k = int(top_k)
    if seed:
        params.seed = int(seed)
    if repetition_penalty is not None:
        params.repetition_penalty = float(repetition_penalty)
    params.stop_strings.extend(stop_strings or [])
    params.eos_token_ids.extend(int(i) for i in (eos_token_ids or []))


def _set_interventions(wire, interventions, patch_source, plain_text) -> None:
    fill_interventions(pb2, wire, interventions or ())
    if patch_source is not None:
        wire.patch_source.plain_text = plain_text
        if isinstance(patch_source, str):
            wire.patch_source.text = patch_source
        else:
            wire.patch_source.ids.ids.extend(int(i) for i in patch_source)


def _set_candidates(request, candidates) -> None:
    for candidate in candidates:
        if isinstance(candidate, str):
            request.candidates.add(text=candidate)
        else:
            request.candidates.add().ids.ids.extend(int(i) for i in candidate)


class _Progress:
    """A tqdm bar (or a plain stderr line without tqdm) that appears only once a capture has
    taken more than `delay` seconds, so quick calls print nothing."""

    def __init__(self, total_tokens: Optional[int], enabled: bool, delay: float = 1.0):
        self._total = total_tokens
        self._enabled = enabled
        self._start = time.monotonic()
        self._delay = delay
        self._bar = None
        self._last_line = 0.0
        self._tokens = 0

    def update(self, assembler: StreamAssembler) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._start < self._delay:
            return
        tokens = len(assembler.generated_ids)
        megabytes = assembler.bytes_received / 1e6
        if self._bar is None and self._last_line == 0.0:
            try:
                from tqdm import tqdm  # optional dependency
                self._bar = tqdm(total=self._total, unit="tok", desc="attnscope capture", leave=False)
            except ImportError:
                self._bar = None
        if self._bar is not None:
            self._bar.update(tokens - self._tokens)
            self._bar.set_postfix_str(f"{megabytes:.1f} MB attention", refresh=False)
        elif now - self._last_line >= 1.0:
            total = f"/{self._total}" if self._total else ""
            print(f"attnscope capture: {tokens}{total} tokens, {megabytes:.1f} MB attention",
                  file=sys.stderr, flush=True)
            self._last_line = now
        self._tokens = tokens

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Client:
    """Connects to an attnscope server.

    address: "host:port". token: API key sent as `authorization: Bearer <token>`.
    tls: False (plain), True (system roots) or the path of a PEM root certificate.
    """

    def __init__(self, address: str, token: Optional[str] = None, tls: Union[bool, str] = False,
                 timeout: Optional[float] = None):
        self.address = address
        self.timeout = timeout
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        if tls:
            root = None
            if isinstance(tls, str):
                with open(tls, "rb") as f:
                    root = f.read()
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root), options)
        else:
            self._channel = grpc.insecure_channel(address, options)
        self._metadata = [("authorization", f"Bearer {token}")] if token else None
        self._stub = pb2_grpc.AttnScopeStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request):
        try:
            return method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as error:
            raise _error_from_rpc(error) from None

    # ---- RPCs --------------------------------------------------------------------------------

    def generate(self, text: Optional[str] = None, messages: Optional[Messages] = None,
                 ids: Optional[Sequence[int]] = None, *, max_new_tokens: Optional[int] = None,
                 greedy: Optional[bool] = None, temperature: Optional[float] = None,
                 top_p: Optional[float] = None, top_k: int = 0, seed: int = 0,
                 repetition_penalty: Optional[float] = None, stop_strings: Sequence[str] = (),
                 eos_token_ids: Sequence[int] = (), layers: Sequence[int] = (),
                 heads: Sequence[int] = (), dtype: str = "float32", rows: str = "all",
                 capture: bool = True, plain_text: bool = False, add_generation_prompt: bool = True,
                 on_token: Optional[Callable] = None, progress: bool = True,
                 client_tag: str = "", interventions: Sequence[dict] = (),
                 patch_source=None, tools: Optional[Sequence[dict]] = None,
                 documents: Optional[Sequence[dict]] = None,
                 template_kwargs: Optional[dict] = None,
                 template_date: Optional[str] = None) -> Capture:
        """Generates and returns the Capture (attention of `layers` x `heads`, all by default).

        on_token(event) is called for every generated token (event.id, .position, .text, .token).
        rows: "all", "prompt" or "generated". plain_text: special-token spellings in `text` are
        ordinary text. Raises AttnScopeError on a server error, IncompleteStreamError when the
        stream is cut short or fails verification. interventions: attnscope.interventions
        ablate/knockout/patch items; patch_source: text, or a list of ids, for the patches. With
        messages=: tools=[...] (tool schemas), documents=, template_kwargs={"enable_thinking":
        False, ...} and template_date="2025-01-15T09:30" (what the template's strftime_now()
        sees) reach the chat template as transformers' apply_chat_template passes them.
        """
        request = pb2.GenerateRequest(client_tag=client_tag)
        _set_input(request, text, messages, ids, add_generation_prompt, tools, documents,
                   template_kwargs, template_date)
        request.plain_text = plain_text
        _set_interventions(request.interventions, interventions, patch_source, plain_text)
        _set_generation(request.generation, max_new_tokens, greedy, temperature, top_p, top_k, seed,
                        repetition_penalty, stop_strings, eos_token_ids)
        if dtype not in _DTYPE_VALUES:
            raise ValueError(f"dtype {dtype!r} is not one of {sorted(_DTYPE_VALUES)}")
        if rows not in _ROW_VALUES:
            raise ValueError(f"rows {rows!r} is not one of {sorted(_ROW_VALUES)}")
        request.capture.layers.extend(int(x) for x in layers)
        request.capture.heads.extend(int(x) for x in heads)
        request.capture.dtype = _DTYPE_VALUES[dtype]
        request.capture.rows = _ROW_VALUES[rows]
        request.capture.disabled = not capture

        progress_display = _Progress(max_new_tokens, progress)
        assembler = StreamAssembler(on_token=on_token, on_progress=progress_display.update)
        try:
            stream = self._stub.GenerateWithAttention(request, metadata=self._metadata, timeout=self.timeout)
            for response in stream:
                assembler.feed(response)
        except grpc.RpcError as error:
            raise _error_from_rpc(error) from None
        finally:
            progress_display.close()
        return assembler.finish()

    def analyze(self, text: Optional[str] = None, messages: Optional[Messages] = None,
                ids: Optional[Sequence[int]] = None, *, max_new_tokens: Optional[int] = None,
                greedy: Optional[bool] = None, temperature: Optional[float] = None,
                top_p: Optional[float] = None, top_k_sampling: int = 0, seed: int = 0,
                stop_strings: Sequence[str] = (), layers: Sequence[int] = (), heads: Sequence[int] = (),
                terms: Sequence[str] = (), queries: Sequence[str] = (), query_positions: int = 0,
                top_k: int = 0, beginning_k: int = 0, self_threshold: Optional[float] = None,
                focused_entropy_threshold: Optional[float] = None,
                induction_probe: Optional[tuple] = None, include_term_submatrix: bool = False,
                plain_text: bool = False, add_generation_prompt: bool = True,
                client_tag: str = "", interventions: Sequence[dict] = (),
                patch_source=None, tools: Optional[Sequence[dict]] = None,
                documents: Optional[Sequence[dict]] = None,
                template_kwargs: Optional[dict] = None,
                template_date: Optional[str] = None) -> HeadReport:
        """Runs AnalyzeHeads: per-layer and per-head metrics computed inside the server.

        top_k is the number of keys listed per query (the sampling top-k is top_k_sampling).
        induction_probe=(n, seed) replaces the input by n random ids repeated twice.
        """
        request = pb2.AnalyzeRequest(client_tag=client_tag)
        if induction_probe is None or any(v is not None for v in (text, messages, ids)):
            _set_input(request, text, messages, ids, add_generation_prompt, tools, documents,
                       template_kwargs, template_date)
        request.plain_text = plain_text
        _set_interventions(request.interventions, interventions, patch_source, plain_text)
        _set_generation(request.generation, max_new_tokens, greedy, temperature, top_p, top_k_sampling,
                        seed, None, stop_strings, ())
        spec = request.analysis
        spec.layers.extend(int(x) for x in layers)
        spec.heads.extend(int(x) for x in heads)
        spec.terms.extend(terms)
        spec.queries.extend(queries)
        spec.query_positions = int(query_positions)
        spec.top_k = int(top_k)
        spec.beginning_k = int(beginning_k)
        spec.self_threshold = float(self_threshold or 0)  # 0: the server's default (0.3)
        spec.focused_entropy_threshold = float(focused_entropy_threshold or 0)  # 0: default 2.0
        if induction_probe is not None:
            spec.induction_probe.length, spec.induction_probe.seed = int(induction_probe[0]), int(induction_probe[1])
        spec.include_term_submatrix = include_term_submatrix
        return HeadReport.from_response(self._call(self._stub.AnalyzeHeads, request))

    def model_info(self) -> dict:
        """{"model": {...}, "limits": {...}, "server_version": ...} as plain Python values."""
        return _message_to_dict(self._call(self._stub.GetModelInfo, pb2.GetModelInfoRequest()))

    def tokenize(self, text: Optional[str] = None, messages: Optional[Messages] = None,
                 ids: Optional[Sequence[int]] = None, *, plain_text: bool = False,
                 add_generation_prompt: bool = True, tools: Optional[Sequence[dict]] = None,
                 documents: Optional[Sequence[dict]] = None,
                 template_kwargs: Optional[dict] = None,
                 template_date: Optional[str] = None) -> Tokenization:
        request = pb2.TokenizeRequest()
        _set_input(request, text, messages, ids, add_generation_prompt, tools, documents,
                   template_kwargs, template_date)
        request.plain_text = plain_text
        response = self._call(self._stub.Tokenize, request)
        return Tokenization(ids=list(response.ids), tokens=list(response.tokens),
                            spans=[(s.start, s.end) for s in response.spans], text=response.text)

    def _score_stream(self, request, on_progress):
        result = None
        try:
            for response in self._stub.ScoreAnswers(request, metadata=self._metadata, timeout=self.timeout):
                if response.HasField("progress"):
                    if on_progress is not None:
                        on_progress(response.progress.done, response.progress.total)
                elif response.HasField("result"):
                    result = response.result
        except grpc.RpcError as error:
            raise _error_from_rpc(error) from None
        if result is None:
            raise AttnScopeError("DATA_LOSS", "ScoreAnswers ended without a result")
        return result

    def score(self, text: Optional[str] = None, messages: Optional[Messages] = None,
              ids: Optional[Sequence[int]] = None, *, candidates: Sequence, interventions: Sequence[dict] = (),
              patch_source=None, plain_text: bool = False, add_generation_prompt: bool = True,
              client_tag: str = "") -> ScoreResult:
        """Log-probabilities of each candidate continuation (text, or a list of ids) after the
        input, under `interventions` (attnscope.interventions.ablate / knockout / patch)."""
        request = pb2.ScoreRequest(client_tag=client_tag)
        _set_input(request, text, messages, ids, add_generation_prompt)
        request.plain_text = plain_text
        _set_candidates(request, candidates)
        _set_interventions(request.interventions, interventions, patch_source, plain_text)
        return ScoreResult.from_message(self._score_stream(request, None))

    def sweep(self, text: Optional[str] = None, messages: Optional[Messages] = None,
              ids: Optional[Sequence[int]] = None, *, candidates: Sequence, layers: Sequence[int] = (),
              heads: Sequence[int] = (), mode: str = "zero", plain_text: bool = False,
              add_generation_prompt: bool = True, on_progress: Optional[Callable] = None,
              client_tag: str = "") -> SweepResult:
        """Ablates each selected head alone (all by default) and returns the layer x head table
        of the first two candidates' logit difference and its change from the clean run.
        on_progress(done, total) is called as the server streams its progress."""
        if mode not in ("zero", "mean"):
            raise ValueError(f"mode {mode!r} is not 'zero' or 'mean'")
        request = pb2.ScoreRequest(client_tag=client_tag)
        _set_input(request, text, messages, ids, add_generation_prompt)
        request.plain_text = plain_text
        _set_candidates(request, candidates)
        request.sweep.layers.extend(int(x) for x in layers)
        request.sweep.heads.extend(int(x) for x in heads)
        request.sweep.mode = pb2.ABLATION_MEAN if mode == "mean" else pb2.ABLATION_ZERO
        return SweepResult.from_message(self._score_stream(request, on_progress), mode)
