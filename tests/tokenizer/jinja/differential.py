"""Differential test: every collected real chat template (tests/data/chat_templates), in many chat
contexts, with and without the generation prompt, rendered by attnscope's Jinja library and by
python3-jinja2 as transformers configures it. Outputs must be byte-equal; where Jinja2 raises,
we must fail (with the template's own message when raise_exception raised it).

Required: every template of the families a Qwen2/Llama engine serves matches in every context,
and at least 95% of all cases match. Prints the match rate per family."""
import argparse
import collections
import copy
import json
import sys

from oracle import Oracle, matches, run_renderer

SPECIAL = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>",
           "unk_token": "<unk>"}
DATE = "2025-01-15T09:30"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
CALL = {"id": "call12345", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}


def contexts():
    user = {"role": "user", "content": "What is the weather in Paris?"}
    system = {"role": "system", "content": "You are a terse assistant."}
    yield "plain", {"messages": [{"role": "user", "content": "Hello"}]}
    yield "system_turns", {"messages": [system, {"role": "user", "content": "Hi"},
                                        {"role": "assistant", "content": "Hello! How can I help?"},
                                        {"role": "user", "content": "Net sales?"}]}
    yield "system_only", {"messages": [system]}
    yield "unicode", {"messages": [{"role": "user", "content": "Ünïcödé 日本語 😀 \"q\" 'a' \\ \t"}]}
    yield "braces", {"messages": [{"role": "user", "content": "{{ 1 + 1 }} {% if x %} {# c #} }}{"},
                                  {"role": "assistant", "content": "{\"a\": [1, {\"b\": 2}]}"},
                                  {"role": "user", "content": "ok"}]}
    yield "consecutive", {"messages": [{"role": "user", "content": "one"},
                                       {"role": "user", "content": "two"},
                                       {"role": "assistant", "content": "three"},
                                       {"role": "assistant", "content": "four"}]}
    yield "tools", {"messages": [system, user], "tools": [WEATHER_TOOL]}
    yield "tool_calls", {"messages": [user, {"role": "assistant", "content": "", "tool_calls": [CALL]},
                                      {"role": "tool", "tool_call_id": "call12345",
                                       "name": "get_weather", "content": "22 degrees"},
                                      {"role": "assistant", "content": "It is 22 degrees."}],
                         "tools": [WEATHER_TOOL]}
    yield "tool_call_null_content", {
        "messages": [user, {"role": "assistant", "content": None, "tool_calls": [CALL]}],
        "tools": [WEATHER_TOOL]}
    yield "list_content", {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}
    yield "kwargs", {"messages": [system, {"role": "user", "content": "Think."}],
                     "kwargs": {"enable_thinking": True, "date_string": "01 Feb 2025"}}


def cases_for(template):
    for name, context in contexts():
        for add_generation_prompt in (False, True):
            case = copy.deepcopy(context)
            case.update(template=template["template"], add_generation_prompt=add_generation_prompt,
                        special_tokens=SPECIAL, date=DATE)
            case.setdefault("tools", None)
            case.setdefault("documents", None)
            yield "%s/%s" % (name, "gen" if add_generation_prompt else "nogen"), case


REQUIRED_FAMILIES = {"Qwen2", "Qwen2.5", "QwQ", "DeepSeek-R1-Distill", "Llama-2", "Llama-3.0",
                     "Llama-3.1", "Llama-3.2", "Llama-3.3", "Mistral", "Hermes"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--renderer", required=True)
    parser.add_argument("--templates", required=True)
    parser.add_argument("--show", type=int, default=8, help="mismatches printed in full")
    args = parser.parse_args()
    templates = json.load(open(args.templates, encoding="utf-8"))
    oracle = Oracle(DATE)
    labels, cases, owners = [], [], []
    for t in templates:
        for label, case in cases_for(t):
            labels.append(label)
            cases.append(case)
            owners.append(t)
    expected = [oracle.render(c) for c in cases]
    got = run_renderer(args.renderer, cases)
    per_family = collections.defaultdict(lambda: [0, 0])
    per_template = collections.defaultdict(lambda: [0, 0])
    shown = 0
    for label, case, owner, e, g in zip(labels, cases, owners, expected, got):
        ok = matches(e, g)
        per_family[owner["family"]][0] += ok
        per_family[owner["family"]][1] += 1
        per_template[owner["name"]][0] += ok
        per_template[owner["name"]][1] += 1
        if not ok and (shown < args.show or owner["family"] in REQUIRED_FAMILIES):
            shown += 1
            print("MISMATCH %s [%s] %s" % (owner["name"], owner["family"], label))
            print("  jinja2:   %r" % (e.get("text", e.get("error"))[:600],))
            print("  attnscope: %r" % (g.get("text", g.get("error"))[:600],))
    total_ok = sum(v[0] for v in per_family.values())
    total = sum(v[1] for v in per_family.values())
    print("templates: %d, cases: %d" % (len(templates), total))
    for family in sorted(per_family):
        ok, n = per_family[family]
        print("  %-22s %5d / %5d  %6.2f%%" % (family, ok, n, 100.0 * ok / n))
    print("  %-22s %5d / %5d  %6.2f%%" % ("ALL", total_ok, total, 100.0 * total_ok / total))
    failing = [name for name, (ok, n) in per_template.items() if ok < n]
    print("templates with a mismatch: %d: %s" % (len(failing), ", ".join(sorted(failing))))
    missing = sorted(REQUIRED_FAMILIES - set(per_family))
    if missing:
        print("families without a template in the collection: " + ", ".join(missing))
    required_ok = all(per_family[f][0] == per_family[f][1] for f in REQUIRED_FAMILIES if f in per_family)
    if not required_ok or total_ok < 0.95 * total:
        print("FAIL")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
