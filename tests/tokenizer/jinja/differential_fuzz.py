"""Differential fuzzer: random small templates over the constructs chat templates use, rendered
in random small contexts by attnscope's Jinja library and by python3-jinja2 (configured as
transformers configures it). Seeded and bounded (--cases); every disagreement is printed, and
more than --max-mismatch-rate of them fails the run. A template that Jinja2 refuses to parse
counts as matching when we fail too."""
import argparse
import random
import sys

from oracle import Oracle, matches, run_renderer

NAMES = ["x", "y", "s", "items", "messages", "ns.n", "loop.index", "nothing"]
STRINGS = ["''", "'a'", "'Ab c'", "' pad '", "'a,b,,c'", "'{}'", "'%s'", "'é'", "'x\\ny'"]
NUMBERS = ["0", "1", "2", "-3", "7", "2.5", "1e3", "0.1"]
FILTERS = ["length", "upper", "lower", "trim", "title", "capitalize", "first", "last", "list",
           "string", "int", "float", "abs", "round", "reverse", "sort", "unique", "join(',')",
           "tojson", "default('d')", "default('d', true)", "replace('a', 'b')", "select('odd')",
           "reject('none')", "map('string')", "map(attribute='role')", "selectattr('role')",
           "rejectattr('content', 'equalto', 'hi')", "indent(2)", "center(9)", "items", "dictsort",
           "sum", "min", "max", "count", "wordcount", "batch(2) | list", "format(1)"]
TESTS = ["defined", "undefined", "none", "string", "number", "integer", "float", "mapping",
         "iterable", "sequence", "odd", "even", "true", "false", "boolean", "divisibleby(2)",
         "equalto(1)", "in([1, 2])", "lower", "upper"]
METHODS = ["strip()", "upper()", "split(',')", "split(',', 1)", "split()", "startswith('a')",
           "endswith('c')", "replace('a', 'z')", "title()", "find('b')", "count('a')",
           "rsplit(',', 1)", "lstrip('a')"]
OPS = ["+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", ">=", "and", "or", "in", "not in"]


def expr(rng, depth=0):
    k = rng.randrange(10 if depth < 3 else 4)
    if k == 0:
        return rng.choice(NAMES)
    if k == 1:
        return rng.choice(STRINGS)
    if k == 2:
        return rng.choice(NUMBERS)
    if k == 3:
        return rng.choice(["[1, 2, 3]", "[]", "['b', 'a', 'B']", "{'k': 1, 'j': 'v'}", "none",
                           "true", "(1, 'a')", "range(3)"])
    if k == 4:
        return "%s %s %s" % (expr(rng, depth + 1), rng.choice(OPS), expr(rng, depth + 1))
    if k == 5:
        return "(%s) | %s" % (expr(rng, depth + 1), rng.choice(FILTERS))
    if k == 6:
        return "%s is %s%s" % (expr(rng, depth + 1), rng.choice(["", "not "]), rng.choice(TESTS))
    if k == 7:
        return "%s.%s" % (rng.choice(STRINGS), rng.choice(METHODS))
    if k == 8:
        return "%s if %s else %s" % (expr(rng, depth + 1), expr(rng, depth + 1), expr(rng, depth + 1))
    return "%s[%s]" % (rng.choice(["items", "s", "messages", "[1, 2, 3]", "'abc'", "{'k': 1}"]),
                       rng.choice(["0", "-1", "1:", ":2", "::-1", "'k'", "5"]))


def statement(rng, depth=0):
    k = rng.randrange(8 if depth < 2 else 3)
    if k == 0:
        return "{{ %s }}" % expr(rng)
    if k == 1:
        return rng.choice(["text ", "\n", "  ", "{# c #}", "a\n  ", "{{- ' ' -}}"])
    if k == 2:
        return "{%% set %s = %s %%}" % (rng.choice(["x", "y", "ns.n"]), expr(rng))
    if k == 3:
        return "{%% if %s %%}%s{%% else %%}%s{%% endif %%}\n" % (
            expr(rng), statement(rng, depth + 1), statement(rng, depth + 1))
    if k == 4:
        return "{%% for %s in %s %%}%s{{ loop.index }}{%% endfor %%}" % (
            rng.choice(["x", "m"]), rng.choice(["messages", "items", "'ab'", "range(2)", "s.split()"]),
            statement(rng, depth + 1))
    if k == 5:
        return "{%% macro f(a, b=%s) %%}%s{{ a }}{{ b }}{%% endmacro %%}{{ f(%s) }}" % (
            expr(rng), statement(rng, depth + 1), expr(rng))
    if k == 6:
        return "{%% set x %%}%s{%% endset %%}{{ x }}" % statement(rng, depth + 1)
    return "  {%%- if %s -%%}\n%s\n  {%%- endif %%}\n" % (expr(rng), statement(rng, depth + 1))


def template(rng):
    return "{% set ns = namespace(n=1) %}" + "".join(statement(rng) for _ in range(rng.randint(1, 5)))


def context(rng):
    messages = [{"role": rng.choice(["user", "assistant", "system"]),
                 "content": rng.choice(["hi", " pad ", "a,b", "", "é {{ }}"])}
                for _ in range(rng.randint(0, 3))]
    return {"messages": messages, "add_generation_prompt": rng.random() < 0.5, "tools": None,
            "documents": None, "special_tokens": {"bos_token": "<s>"},
            "kwargs": {"x": rng.choice([1, "s", [1, 2], None, 2.5]), "s": "a,b,c",
                       "items": rng.choice([[3, 1, 2], ["b", "A"], [], [{"role": "r"}]])},
            "date": "2025-01-15T09:30"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--renderer", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--max-mismatch-rate", type=float, default=0.02)
    parser.add_argument("--show", type=int, default=15)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cases = []
    for _ in range(args.cases):
        case = context(rng)
        case["template"] = template(rng)
        cases.append(case)
    oracle = Oracle("2025-01-15T09:30")
    expected = [oracle.render(c) for c in cases]
    got = run_renderer(args.renderer, cases)
    # Python prints generators and range objects with addresses and reprs of their own; such
    # outputs are not compared.
    def comparable(e):
        return not (e["ok"] and ("<generator object" in e["text"] or "range(" in e["text"]))
    kept = [(c, e, g) for c, e, g in zip(cases, expected, got) if comparable(e)]
    bad = [(c, e, g) for c, e, g in kept if not matches(e, g)]
    for c, e, g in bad[:args.show]:
        print("MISMATCH template=%r kwargs=%r messages=%r" % (c["template"], c["kwargs"], c["messages"]))
        print("  jinja2:    %r" % (e.get("text", e.get("error"))[:300],))
        print("  attnscope: %r" % (g.get("text", g.get("error"))[:300],))
    rate = len(bad) / len(kept)
    print("seed %d: %d cases, %d compared, %d mismatches (%.2f%%)" % (
        args.seed, len(cases), len(kept), len(bad), 100 * rate))
    return 1 if rate > args.max_mismatch_rate else 0


if __name__ == "__main__":
    sys.exit(main())
