"""Study inputs (dataset, prompts, answer parsing) and dataset runs with a stand-in client."""

import csv
import json
import os

import pytest

from attnscope import HeadReport, batch, sample_data, study

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DATA = os.path.join(REPO, "config", "sample_data", "financial_statements.json")
PROMPTS = os.path.join(REPO, "config", "prompts.yaml")


def test_committed_sample_data_is_what_the_generator_writes():
    with open(DATA, encoding="utf-8") as f:
        assert f.read() == sample_data.dumps(sample_data.generate())


def test_sample_data_schema_and_labels():
    data = study.load_dataset(DATA)
    assert len(data) == 20
    items = study.dataset_items(data)
    assert len(items) == 40 and items[0][:2] == ("C01", "2022")
    labels = {entry["label"] for _, _, entry in items}
    assert labels == {"increase", "decrease"}
    for _, _, entry in items:
        assert "Balance sheet:" in entry["description"] and "Net income:" in entry["description"]


def test_labels_follow_the_simulation():
    # The label is next year's net income direction: for 2022 it can be read off the 2023
    # statement's "Net income: <2023> vs <2022>" line.
    data = study.load_dataset(DATA)
    for company, years in data.items():
        line = next(l for l in years["2023"]["description"].splitlines() if l.startswith("- Net income:"))
        this_year, prior = (float(x.replace(",", "")) for x in line.split(":")[1].split(" vs "))
        assert years["2022"]["label"] == ("increase" if this_year > prior else "decrease"), company


def test_dataset_validation_names_the_entry(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"A": {"2020": {"description": "x", "label": "up"}}}))
    with pytest.raises(ValueError, match="A/2020: label 'up'"):
        study.load_dataset(str(path))


def test_prompts_and_messages():
    prompts = study.load_prompts(PROMPTS)
    assert len(study.prompt_templates(prompts, "prompt_1")) >= 2
    messages = study.build_messages(prompts, "prompt_1", "STATEMENT-TEXT", 1)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "STATEMENT-TEXT" in messages[1]["content"] and "{" not in messages[1]["content"]
    assert "increase or decrease" in messages[1]["content"]
    with pytest.raises(ValueError, match="available"):
        study.prompt_templates(prompts, "prompt_9")


@pytest.mark.parametrize("text,expected", [
    ("Increase. Sales grew 5%.", "increase"),
    ("I expect earnings to DECREASE because margins fell", "decrease"),
    ("Earnings will likely decline; the company's debt rose.", "decrease"),
    ("answer: increases", "increase"),
    ("\u00e9\u00e9 xq", "unknown"),
    ("", "unknown"),
    ("the increased-cost", "increase"),
    ("decreasingly", "unknown"),
])
def test_parse_prediction(text, expected):
    assert study.parse_prediction(text) == expected


def _rows(company, prediction, label, values):
    return [{"company_id": company, "fiscal_year": "2022", "layer": layer, "head": head, "prediction": prediction,
             "label": label, "correct": "" if prediction == "unknown" else int(prediction == label),
             **{m: values[(layer, head)] for m in batch.METRICS},
             **{"gen_" + m: None for m in batch.METRICS}}
            for layer, head in values]


def test_summarize_ranks_heads_by_group_difference():
    rows = (_rows("A", "increase", "increase", {(0, 0): 0.9, (0, 1): 0.5})
            + _rows("B", "increase", "decrease", {(0, 0): 0.7, (0, 1): 0.5})
            + _rows("C", "decrease", "decrease", {(0, 0): 0.2, (0, 1): 0.6})
            + _rows("D", "unknown", "decrease", {(0, 0): 5.0, (0, 1): 5.0}))
    summary = batch.summarize(rows)
    by_prediction = summary["increase_vs_decrease"]
    assert (by_prediction["items_a"], by_prediction["items_b"]) == (2, 1)
    top = by_prediction["metrics"]["entropy"]
    assert [(e["layer"], e["head"]) for e in top] == [(0, 0), (0, 1)]
    assert top[0]["difference"] == pytest.approx(0.8 - 0.2)
    assert top[1]["difference"] == pytest.approx(0.5 - 0.6)
    correct = summary["correct_vs_wrong"]
    assert (correct["items_a"], correct["items_b"]) == (2, 1)
    assert correct["metrics"]["sink"][0]["difference"] == pytest.approx((0.9 + 0.2) / 2 - 0.7)
    assert "gen_sink" in correct["metrics"] and correct["metrics"]["gen_sink"] == []


class FakeClient:
    """Answers AnalyzeHeads like a 2-layer x 3-head model; fails for one company."""

    def __init__(self, fail_company=None):
        self.calls = []
        self.fail_company = fail_company

    def analyze(self, messages, client_tag="", **kwargs):
        self.calls.append(client_tag)
        if self.fail_company and self.fail_company in client_tag:
            from attnscope.errors import AttnScopeError
            raise AttnScopeError("RESOURCE_EXHAUSTED", "queue full")
        rows = [{"layer": l, "head": h, "type": "focused", **{m: 0.1 * h + l for m in batch.METRICS},
                 **{"gen_" + m: 0.2 for m in batch.METRICS}} for l in range(2) for h in range(3)]
        answer = "increase" if len(self.calls) % 2 else "It will decrease"
        return HeadReport(rows, [], {}, [1, 2, 3], 2, answer, "max_new_tokens")


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_batch_writes_one_row_per_item_layer_head_and_records_failures(tmp_path):
    client = FakeClient(fail_company="C03")
    result = batch.run_batch("unused", DATA, PROMPTS, "prompt_1", str(tmp_path), limit=8, client=client,
                             progress=False, concurrency=3)
    assert result["counts"]["finished"] == 6 and result["counts"]["failed"] == 2
    rows = _read_csv(tmp_path / "heads.csv")
    assert len(rows) == 6 * 2 * 3
    keys = {(r["company_id"], r["fiscal_year"], r["layer"], r["head"]) for r in rows}
    assert len(keys) == len(rows)
    for r in rows:
        assert r["correct"] == str(int(r["prediction"] == r["label"]))
    predictions = _read_csv(tmp_path / "predictions.csv")
    failed = [p for p in predictions if p["status"] == "failed"]
    assert [(p["company_id"], p["fiscal_year"]) for p in failed] == [("C03", "2022"), ("C03", "2023")]
    assert failed[0]["error"] == "RESOURCE_EXHAUSTED: queue full"
    assert os.path.exists(tmp_path / "summary.txt")

    # Re-run: finished items are skipped, the failed ones retried.
    retry = FakeClient()
    result = batch.run_batch("unused", DATA, PROMPTS, "prompt_1", str(tmp_path), limit=8, client=retry,
                             progress=False)
    assert sorted(retry.calls) == ["batch:C03/2022", "batch:C03/2023"]
    assert result["counts"] == {**result["counts"], "finished": 8, "failed": 0, "skipped": 6, "head_rows": 48}
    assert len(_read_csv(tmp_path / "heads.csv")) == 8 * 6


def test_batch_spreads_items_over_several_replicas(tmp_path):
    replicas = [FakeClient(), FakeClient()]
    result = batch.run_batch("gpu1:1,gpu2:2", DATA, PROMPTS, "prompt_1", str(tmp_path), limit=8,
                             clients=replicas, progress=False, concurrency=2)
    assert result["counts"]["finished"] == 8
    # Round-robin: each replica answers half the items, and no item is asked twice.
    assert [len(r.calls) for r in replicas] == [4, 4]
    assert len(set(replicas[0].calls) | set(replicas[1].calls)) == 8
