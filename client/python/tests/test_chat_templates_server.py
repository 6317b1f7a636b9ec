"""A model folder carrying Meta's Llama-3.1 chat template (the tiny model's weights and
tokenizer; the template from tests/data/chat_templates) loads and serves text, chat and chat
with tools over gRPC, and the prompts equal python3-jinja2's rendering as transformers
configures it (tests/tokenizer/jinja/oracle.py)."""

import json
import os
import shutil
import sys

import pytest

from attnscope import AttnScopeError, Client
from conftest import REPO, RunningServer, _require, server_binary

sys.path.insert(0, os.path.join(REPO, "tests", "tokenizer", "jinja"))
from oracle import Oracle  # noqa: E402

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TOOL_TURNS = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "22"},
]


def _llama31_template():
    with open(os.path.join(REPO, "tests", "data", "chat_templates", "templates.json"), encoding="utf-8") as f:
        for entry in json.load(f):
            if entry["name"] == "meta-llama/Llama-3.1-8B-Instruct":
                return entry["template"]
    pytest.fail("Meta's Llama-3.1 template is missing from tests/data/chat_templates")


@pytest.fixture(scope="module")
def llama31_server(tiny_model_dir, tmp_path_factory):
    _require(server_binary(), "attnscope-server")
    folder = tmp_path_factory.mktemp("llama31") / "model"
    shutil.copytree(tiny_model_dir, folder)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["chat_template"] = _llama31_template()
    config["bos_token"] = "<|endoftext|>"
    path.write_text(json.dumps(config), encoding="utf-8")
    server = RunningServer(str(folder), str(tmp_path_factory.mktemp("llama31log") / "server.log"))
    yield server, config
    server.stop()


def _expected(config, messages, tools=None):
    special = {k: config[k] for k in ("bos_token", "eos_token", "pad_token") if config.get(k)}
    result = Oracle().render({"template": config["chat_template"], "messages": messages, "tools": tools,
                              "documents": None, "add_generation_prompt": True, "special_tokens": special,
                              "additional_special_tokens": config.get("additional_special_tokens", [])})
    assert result["ok"], result
    return result["text"]


def test_llama31_template_serves_text_chat_and_tools(llama31_server):
    server, config = llama31_server
    with Client(server.address) as client:
        text = client.generate(text="hi", max_new_tokens=2)
        assert text.prompt_length == 2
        chat = [{"role": "user", "content": "Revenue?"}]
        tokens = client.tokenize(messages=chat)
        assert tokens.text == _expected(config, chat)
        capture = client.generate(messages=chat, max_new_tokens=2)
        assert capture.ids[:capture.prompt_length].tolist() == tokens.ids
        with_tools = client.tokenize(messages=TOOL_TURNS, tools=[WEATHER])
        assert with_tools.text == _expected(config, TOOL_TURNS, [WEATHER])
        assert '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>' in with_tools.text
        report = client.analyze(messages=TOOL_TURNS, tools=[WEATHER], max_new_tokens=1)
        assert report is not None
        with pytest.raises(AttnScopeError) as error:
            client.tokenize(messages=chat, template_date="2025-13-01T00:00")
        assert error.value.code == "INVALID_ARGUMENT" and "2025-13-01T00:00" in str(error.value)
