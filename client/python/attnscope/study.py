"""The earnings-direction study's inputs: the dataset, the prompt templates, the chat
messages sent to the server, and reading the model's answer."""

from __future__ import annotations

import json
import re
from typing import Dict, List, Tuple

LABELS = ("increase", "decrease")
PLACEHOLDER = "{balance_income_sheet}"

_INCREASE = r"increase[sd]?|increasing|rise|rises|rising|grow|grows|growing|improve[sd]?|improving|higher"
_DECREASE = r"decrease[sd]?|decreasing|decline[sd]?|declining|fall|falls|falling|drop|drops|dropping|lower"
_ANSWER_WORD = re.compile(rf"\b(?:(?P<inc>{_INCREASE})|(?P<dec>{_DECREASE}))\b", re.IGNORECASE)


def load_dataset(path: str) -> Dict[str, Dict[str, dict]]:
    """{company_id: {fiscal_year: {"description", "label"}}}; errors name the entry."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of companies, got {type(data).__name__}")
    for company, years in data.items():
        if not isinstance(years, dict):
            raise ValueError(f"{path}: company {company!r} must map fiscal years to entries")
        for year, entry in years.items():
            where = f"{path}: {company}/{year}"
            if not isinstance(entry, dict) or not isinstance(entry.get("description"), str):
                raise ValueError(f"{where}: missing the 'description' string")
            if entry.get("label") not in LABELS + (None,):
                raise ValueError(f"{where}: label {entry.get('label')!r} is not one of {LABELS}")
    return data


def dataset_items(data: Dict[str, Dict[str, dict]]) -> List[Tuple[str, str, dict]]:
    """(company_id, fiscal_year, entry), sorted, so runs visit items in a stable order."""
    return [(company, year, data[company][year]) for company in sorted(data) for year in sorted(data[company])]


def load_prompts(path: str) -> dict:
    import yaml  # python3-yaml; only the study needs it
    with open(path, encoding="utf-8") as f:
        prompts = yaml.safe_load(f)
    if not isinstance(prompts, dict):
        raise ValueError(f"{path}: expected a mapping of prompt keys to template lists")
    return prompts


def prompt_templates(prompts: dict, key: str) -> List[str]:
    templates = prompts.get(key)
    if isinstance(templates, str):
        templates = [templates]
    if not templates or not all(isinstance(t, str) for t in templates):
        keys = [k for k, v in prompts.items() if isinstance(v, list)]
        raise ValueError(f"prompt key {key!r} has no template list; available: {keys}")
    for index, template in enumerate(templates):
        if PLACEHOLDER not in template:
            raise ValueError(f"template {key}[{index}] lacks the {PLACEHOLDER} placeholder")
    return templates


def build_messages(prompts: dict, key: str, description: str, template_index: int = 0) -> List[dict]:
    """The chat for one statement: the optional system turn and the filled-in user turn."""
    templates = prompt_templates(prompts, key)
    if not 0 <= template_index < len(templates):
        raise ValueError(f"template index {template_index} out of range: {key} has {len(templates)} templates")
    user = templates[template_index].format(balance_income_sheet=description).strip()
    messages = []
    if isinstance(prompts.get("system"), str) and prompts["system"].strip():
        messages.append({"role": "system", "content": prompts["system"].strip()})
    messages.append({"role": "user", "content": user})
    return messages


def parse_prediction(text: str) -> str:
    """"increase", "decrease" or "unknown": the direction named first in the answer
    ("increase"/"rise"/"grow"/"improve"/"higher" vs "decrease"/"decline"/"fall"/"drop"/"lower")."""
    match = _ANSWER_WORD.search(text or "")
    if match is None:
        return "unknown"
    return "increase" if match.group("inc") else "decrease"
