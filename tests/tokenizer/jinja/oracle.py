"""The reference: Debian's python3-jinja2 configured exactly as transformers configures it for
apply_chat_template (transformers/utils/chat_template_utils.py): an ImmutableSandboxedEnvironment
with trim_blocks and lstrip_blocks, the loopcontrols extension, the {% generation %} extension,
tojson without ASCII escaping, raise_exception, and strftime_now (pinned here)."""
import datetime
import json

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment


class RaisedByTemplate(Exception):
    pass


class AssistantTracker(Extension):
    # transformers' {% generation %}: renders its body (and records spans, which we do not need).
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_environment(now):
    def raise_exception(message):
        raise RaisedByTemplate(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return now.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


class Oracle:
    def __init__(self, date="2025-01-15T09:30"):
        self.env = make_environment(datetime.datetime.fromisoformat(date))
        self.cache = {}

    def render(self, case):
        """{"ok": True, "text": ...} or {"ok": False, "error": ..., "raised": bool}."""
        source = case["template"]
        try:
            if source not in self.cache:
                self.cache[source] = self.env.from_string(source)
            kwargs = dict(case.get("special_tokens", {}))
            if case.get("additional_special_tokens"):
                kwargs["additional_special_tokens"] = case["additional_special_tokens"]
            kwargs.update(case.get("kwargs", {}))
            text = self.cache[source].render(messages=case["messages"], tools=case.get("tools"),
                                             documents=case.get("documents"),
                                             add_generation_prompt=case["add_generation_prompt"],
                                             **kwargs)
            return {"ok": True, "text": text}
        except RaisedByTemplate as e:
            return {"ok": False, "error": str(e), "raised": True}
        except Exception as e:  # any Jinja2 or Python error: we must fail too
            return {"ok": False, "error": "%s: %s" % (type(e).__name__, e), "raised": False}


def matches(expected, got):
    """Byte-equal output; where Jinja2 fails we fail, with the template's own message when the
    template raised it."""
    if expected["ok"]:
        return got["ok"] and got["text"] == expected["text"]
    if got["ok"]:
        return False
    if expected.get("raised"):
        return got["error"] == "chat template raised: " + expected["error"]
    return True


def run_renderer(renderer, cases):
    import subprocess
    payload = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases)
    out = subprocess.run([renderer], input=payload.encode("utf-8"), stdout=subprocess.PIPE,
                         check=True, timeout=600).stdout.decode("utf-8")
    results = [json.loads(line) for line in out.splitlines()]
    if len(results) != len(cases):
        raise RuntimeError("renderer answered %d of %d cases" % (len(results), len(cases)))
    return results
