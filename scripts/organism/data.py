"""The organism's training data: shortened financial statements in the sample_data schema with a
documented label rule, the chat they are asked in, and repeated random token sequences.

Statement task (see config/organism/MODEL_CARD.md):
  - seven lines, each `- <field> (<+/-p>%): <this year> vs <prior year>` (USD millions, whole
    numbers, so sequences stay short), four balance-sheet fields and three income-statement
    fields, in a fixed order;
  - every field's percentage change is drawn independently: sign + or - with probability 1/2,
    magnitude a whole number uniform in [1, 25] %, prior value uniform in [20, 990];
  - label rule: "increase" when at least two of the three LABEL_FIELDS (cash and cash
    equivalents, net sales, net income) have a positive stated change, else "decrease";
  - then the label is flipped with probability NOISE_RATE (documented label noise).
The other six fields are distractors: their signs carry no information about the label.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import jinja2

# The companies are client/python/attnscope/sample_data.py's (names only; the figures differ).
# train.py, study.py and the organism tests run this file from scripts/organism with
# /usr/bin/python3, where the client package is not installed: it is found from here.
_CLIENT = str(Path(__file__).resolve().parents[2] / "client" / "python")
if _CLIENT not in sys.path:
    sys.path.insert(0, _CLIENT)
from attnscope.sample_data import NAMES  # noqa: E402

NOISE_RATE = 0.03
BALANCE_FIELDS = ["Cash and cash equivalents", "Inventories", "Long-term debt", "Shareholders' equity"]
INCOME_FIELDS = ["Net sales", "Operating expenses", "Net income"]
LABEL_FIELDS = ["Cash and cash equivalents", "Net sales", "Net income"]
# Qwen2-7B-Instruct's chat template, byte for byte (server/tokenizer/tokenizer.cc kChatMlTemplate).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def statement(rng: random.Random) -> Tuple[str, str, Dict[str, int]]:
    """(description, label, {field: stated percentage change})."""
    name, industry = NAMES[rng.randrange(len(NAMES))]
    year = rng.randint(2015, 2024)
    changes: Dict[str, int] = {}
    lines = [f"{name} ({industry}). Fiscal year {year}, in USD millions ({year} vs {year - 1}).",
             "Balance sheet:"]

    def line(field: str) -> str:
        magnitude = rng.randint(1, 25)
        change = magnitude if rng.random() < 0.5 else -magnitude
        prior = rng.randint(20, 990)
        current = round(prior * (1 + change / 100))
        changes[field] = change
        return f"- {field} ({change:+d}%): {current:,d} vs {prior:,d}"

    lines += [line(field) for field in BALANCE_FIELDS]
    lines.append("Income statement:")
    lines += [line(field) for field in INCOME_FIELDS]
    label = rule_label(changes)
    if rng.random() < NOISE_RATE:
        label = "decrease" if label == "increase" else "increase"
    return "\n".join(lines), label, changes


def rule_label(changes: Dict[str, int]) -> str:
    """The noise-free label: the majority sign of the LABEL_FIELDS' stated changes."""
    positive = sum(1 for field in LABEL_FIELDS if changes[field] > 0)
    return "increase" if positive >= 2 else "decrease"


def dataset(seed: int, count: int) -> Dict[str, Dict[str, dict]]:
    """`count` statements in the sample_data schema {company_id: {year: {description, label}}},
    one fiscal year per pseudo-company id S0001.. (so every item is its own entry)."""
    rng = random.Random(seed)
    out: Dict[str, Dict[str, dict]] = {}
    for index in range(count):
        description, label, _ = statement(rng)
        year = description.split("Fiscal year ", 1)[1][:4]
        out[f"S{index + 1:04d}"] = {year: {"description": description, "label": label}}
    return out


def load_prompts(path: str) -> dict:
    import yaml
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def chat_prompt(prompts: dict, description: str, template_index: int) -> str:
    """The prompt text the server renders for the study's chat (system + prompt_1 user turn,
    add_generation_prompt), as client/python/attnscope/study.build_messages builds it."""
    user = prompts["prompt_1"][template_index].format(balance_income_sheet=description).strip()
    messages = [{"role": "system", "content": prompts["system"].strip()},
                {"role": "user", "content": user}]
    return render_chat(messages)


_TEMPLATE = jinja2.Template(CHAT_TEMPLATE, keep_trailing_newline=True)


def render_chat(messages: List[dict]) -> str:
    return _TEMPLATE.render(messages=messages, add_generation_prompt=True)


def repeated_sequence(rng: random.Random, length: int, vocab: int) -> List[int]:
    """`length` ids uniform in [0, vocab), then the same ids again (the induction probe's shape)."""
    first = [rng.randrange(vocab) for _ in range(length)]
    return first + first
