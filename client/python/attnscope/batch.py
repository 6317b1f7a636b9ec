"""Dataset runs: AnalyzeHeads for every (company, fiscal year) of a dataset, per-head metrics
with the label, the model's prediction and whether it was right, and a summary of the heads
that differ most between predicted-increase and predicted-decrease answers and between right
and wrong answers.

Output folder:
  items/<company>_<year>.json   one finished item (its rows, prediction, text); a re-run skips
                                the items that have one, so an interrupted run resumes
  items/<company>_<year>.error.json   a failed item (retried by the next run)
  heads.csv                     one row per (company, year, layer, head)
  predictions.csv               one row per item: label, prediction, correct, status, error,
                                logit_diff (with `candidates`: logprob(first) - logprob(second))
  sweeps.csv                    with `sweep_first` N: one row per (item, layer, head) of the
                                single-head ablation sweep of the first N items
  summary.json, summary.txt     the head differences, the logit difference by label and
                                correctness, and the heads whose ablation moves it most
"""

from __future__ import annotations

import csv
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Dict, List, Optional, Sequence

from attnscope.report import METRICS
from attnscope.study import build_messages, dataset_items, load_dataset, load_prompts, parse_prediction

HEAD_COLUMNS = (["company_id", "fiscal_year", "layer", "head", "label", "prediction", "correct", "type"]
                + list(METRICS) + ["gen_" + m for m in METRICS])
PREDICTION_COLUMNS = ["company_id", "fiscal_year", "label", "prediction", "correct", "status", "error",
                      "logit_diff", "generated_text"]
SWEEP_COLUMNS = ["company_id", "fiscal_year", "label", "prediction", "correct", "layer", "head", "logit_diff",
                 "delta"]


def _item_name(company: str, year: str) -> str:
    safe = lambda s: "".join(c if c.isalnum() or c in "-." else "_" for c in s)  # noqa: E731
    return f"{safe(company)}_{safe(year)}"


def _write_json(path: str, value) -> None:
    tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False)
    os.replace(tmp, path)  # a finished item file is never half written


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self._bar = None
        self._total = total
        self._done = 0
        self._enabled = enabled
        self._last = 0.0
        if enabled:
            try:
                from tqdm import tqdm
                self._bar = tqdm(total=total, unit="item", desc="attnscope batch")
            except ImportError:
                pass

    def step(self, note: str = "") -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.update(1)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
        elif self._enabled and (time.monotonic() - self._last > 1 or self._done == self._total):
            print(f"attnscope batch: {self._done}/{self._total} {note}", file=sys.stderr, flush=True)
            self._last = time.monotonic()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _head_rows(company: str, year: str, label: str, prediction: str, report) -> List[dict]:
    correct = "" if prediction == "unknown" or not label else int(prediction == label)
    rows = []
    for row in report.rows:
        out = {"company_id": company, "fiscal_year": year, "layer": row["layer"], "head": row["head"],
               "label": label, "prediction": prediction, "correct": correct, "type": row["type"]}
        for metric in METRICS:
            out[metric] = row[metric]
            out["gen_" + metric] = row["gen_" + metric]
        rows.append(out)
    return rows


def _mean(values: Sequence[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def summarize(rows: List[dict], top: int = 10) -> dict:
    """Heads whose metrics differ most between predicted-increase and predicted-decrease
    items, and between correct and wrong items: for each metric (over all rows, and over the
    generated rows), the `top` (layer, head) pairs by |mean(group A) - mean(group B)|."""
    comparisons = {
        "increase_vs_decrease": (lambda r: r["prediction"] == "increase", lambda r: r["prediction"] == "decrease"),
        "correct_vs_wrong": (lambda r: r["correct"] == 1, lambda r: r["correct"] == 0),
    }
    summary = {}
    for name, (in_a, in_b) in comparisons.items():
        items_a = {(r["company_id"], r["fiscal_year"]) for r in rows if in_a(r)}
        items_b = {(r["company_id"], r["fiscal_year"]) for r in rows if in_b(r)}
        entry = {"items_a": len(items_a), "items_b": len(items_b), "metrics": {}}
        if not items_a or not items_b:
            entry["note"] = "one of the groups is empty; nothing to compare"
            summary[name] = entry
            continue
        for metric in list(METRICS) + ["gen_" + m for m in METRICS]:
            groups: Dict[tuple, tuple] = {}
            for r in rows:
                if r[metric] is None or r[metric] == "":
                    continue
                a, b = groups.setdefault((r["layer"], r["head"]), ([], []))
                if in_a(r):
                    a.append(float(r[metric]))
                elif in_b(r):
                    b.append(float(r[metric]))
            ranked = []
            for (layer, head), (a, b) in groups.items():
                if a and b:
                    mean_a, mean_b = _mean(a), _mean(b)
                    ranked.append({"layer": layer, "head": head, "mean_a": mean_a, "mean_b": mean_b,
                                   "difference": mean_a - mean_b})
            ranked.sort(key=lambda e: (-abs(e["difference"]), e["layer"], e["head"]))
            entry["metrics"][metric] = ranked[:top]
        summary[name] = entry
    return summary


def _groups(record) -> List[str]:
    out = []
    if record["label"] in ("increase", "decrease"):
        out.append("label_" + record["label"])
    if record["correct"] != "":
        out.append("correct" if record["correct"] == 1 else "wrong")
    return out


def summarize_scores(predictions: List[dict], sweep_rows: List[dict], top: int = 10) -> dict:
    """Mean logit difference per group (label_increase, label_decrease, correct, wrong), and per
    group the `top` heads whose ablation moves it most (by |mean delta| over the swept items)."""
    out = {}
    for record in predictions:
        if record.get("logit_diff") in (None, ""):
            continue
        for group in _groups(record) + ["all"]:
            out.setdefault(group, {"items": 0, "mean_logit_diff": 0.0})
            out[group]["items"] += 1
            out[group]["mean_logit_diff"] += float(record["logit_diff"])
    for entry in out.values():
        entry["mean_logit_diff"] /= entry["items"]
    heads: Dict[str, Dict[tuple, List[float]]] = {}
    for row in sweep_rows:
        for group in _groups(row) + ["all"]:
            heads.setdefault(group, {}).setdefault((row["layer"], row["head"]), []).append(float(row["delta"]))
    for group, cells in heads.items():
        ranked = [{"layer": l, "head": h, "mean_delta": _mean(d), "items": len(d)} for (l, h), d in cells.items()]
        ranked.sort(key=lambda e: (-abs(e["mean_delta"]), e["layer"], e["head"]))
        out.setdefault(group, {"items": 0, "mean_logit_diff": None})["top_heads"] = ranked[:top]
    return out


def _summary_text(summary: dict, counts: dict) -> str:
    lines = [f"items: {counts['items']}, finished: {counts['finished']}, failed: {counts['failed']}, "
             f"predictions: {counts['predictions']}, accuracy (of known predictions): {counts['accuracy']}"]
    titles = {"increase_vs_decrease": ("predicted increase", "predicted decrease"),
              "correct_vs_wrong": ("correct", "wrong")}
    scores = summary.get("scores", {})
    for group, entry in scores.items():
        mean = entry.get("mean_logit_diff")
        cells = ", ".join(f"L{e['layer']}H{e['head']} {e['mean_delta']:+.4f}" for e in entry.get("top_heads", [])[:5])
        lines.append(f"logit_diff {group:<15} items {entry['items']:>4}  mean "
                     f"{'-' if mean is None else format(mean, '+.4f')}  {('heads: ' + cells) if cells else ''}")
    for name, entry in summary.items():
        if name == "scores":
            continue
        a, b = titles[name]
        lines.append("")
        lines.append(f"== {a} ({entry['items_a']} items) vs {b} ({entry['items_b']} items)")
        if "note" in entry:
            lines.append(f"   {entry['note']}")
            continue
        for metric in ("gen_entropy", "gen_sink", "gen_previous_token", "entropy", "sink", "diagonal"):
            best = entry["metrics"].get(metric, [])[:5]
            if best:
                cells = ", ".join(f"L{e['layer']}H{e['head']} {e['difference']:+.4f}" for e in best)
                lines.append(f"   {metric:<20} {cells}")
    return "\n".join(lines) + "\n"


def run_batch(server: str, data: str, prompts: str, prompt: str = "prompt_1", out: str = "batch_out",
              concurrency: int = 1, max_new_tokens: int = 16, template_index: int = 0,
              layers: Sequence[int] = (), heads: Sequence[int] = (), limit: Optional[int] = None,
              token: Optional[str] = None, progress: bool = True, client=None,
              request_timeout: Optional[float] = None, clients=None,
              candidates: Optional[Sequence[str]] = None, sweep_first: int = 0,
              sweep_mode: str = "zero") -> dict:
    """Runs (or resumes) a dataset run and returns the counts and summary it wrote.

    candidates=("increase", "decrease") also scores both answers after each item's prompt
    (ScoreAnswers) and records the logit difference; sweep_first=N sweeps every head of the
    first N items (single-head `sweep_mode` ablation), whose deltas the summary ranks.

    `server` may list several replicas, comma-separated ("gpu1:50051,gpu2:50051"): items are
    spread over them round-robin, so a dataset runs on every replica at once (give
    `concurrency` of at least the number of replicas).
    """
    dataset = load_dataset(data)
    prompt_config = load_prompts(prompts)
    items = dataset_items(dataset)[:limit]
    item_dir = os.path.join(out, "items")
    os.makedirs(item_dir, exist_ok=True)
    if clients is None:
        if client is not None:
            clients = [client]
        else:
            from attnscope.client import Client
            clients = [Client(address.strip(), token=token, timeout=request_timeout)
                       for address in server.split(",") if address.strip()]

    todo = [(i, c, y, e) for i, (c, y, e) in enumerate(items)
            if not os.path.exists(os.path.join(item_dir, _item_name(c, y) + ".json"))]
    skipped = len(items) - len(todo)
    bar = _Progress(len(todo), progress)

    def run_one(index, company, year, entry):
        name = _item_name(company, year)
        client = clients[index % len(clients)]
        try:
            messages = build_messages(prompt_config, prompt, entry["description"], template_index)
            report = client.analyze(messages=messages, max_new_tokens=max_new_tokens, greedy=True,
                                    layers=layers, heads=heads, client_tag=f"batch:{company}/{year}")
            prediction = parse_prediction(report.generated_text)
            label = entry.get("label") or ""
            record = {"company_id": company, "fiscal_year": year, "label": label, "prediction": prediction,
                      "generated_text": report.generated_text, "stop_reason": report.stop_reason,
                      "rows": _head_rows(company, year, label, prediction, report)}
            if candidates:
                score = client.score(messages=messages, candidates=list(candidates),
                                     client_tag=f"batch-score:{company}/{year}")
                record["logit_diff"] = score.logit_diff
            if candidates and index < sweep_first:
                sweep = client.sweep(messages=messages, candidates=list(candidates)[:2], layers=layers,
                                     heads=heads, mode=sweep_mode, client_tag=f"batch-sweep:{company}/{year}")
                record["sweep"] = sweep.rows()
            _write_json(os.path.join(item_dir, name + ".json"), record)
            error_path = os.path.join(item_dir, name + ".error.json")
            if os.path.exists(error_path):
                os.remove(error_path)
            return prediction
        except Exception as error:  # recorded per item, never dropped; the run goes on
            code = getattr(error, "code", type(error).__name__)
            _write_json(os.path.join(item_dir, name + ".error.json"),
                        {"company_id": company, "fiscal_year": year, "error": f"{code}: {getattr(error, 'message', error)}"})
            return "failed"

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = [pool.submit(run_one, i, c, y, e) for i, c, y, e in todo]
            for future in as_completed(futures):
                bar.step(future.result())
    finally:
        bar.close()
    return write_outputs(out, items, skipped)


def write_outputs(out: str, items, skipped: int = 0) -> dict:
    """Rebuilds heads.csv, predictions.csv and the summary from the item files."""
    item_dir = os.path.join(out, "items")
    all_rows: List[dict] = []
    sweep_rows: List[dict] = []
    predictions = []
    finished = failed = 0
    for company, year, entry in items:
        name = _item_name(company, year)
        done_path = os.path.join(item_dir, name + ".json")
        error_path = os.path.join(item_dir, name + ".error.json")
        record = {"company_id": company, "fiscal_year": year, "label": entry.get("label") or "",
                  "prediction": "", "correct": "", "status": "missing", "error": "", "generated_text": ""}
        if os.path.exists(done_path):
            with open(done_path, encoding="utf-8") as f:
                item = json.load(f)
            all_rows.extend(item["rows"])
            record.update(prediction=item["prediction"], generated_text=item["generated_text"], status="ok",
                          correct="" if item["prediction"] == "unknown" or not record["label"]
                          else int(item["prediction"] == record["label"]),
                          logit_diff=item.get("logit_diff", ""))
            for cell in item.get("sweep", []):
                sweep_rows.append({k: record[k] for k in ("company_id", "fiscal_year", "label", "prediction",
                                                          "correct")} | cell)
            finished += 1
        elif os.path.exists(error_path):
            with open(error_path, encoding="utf-8") as f:
                record.update(status="failed", error=json.load(f)["error"])
            failed += 1
        predictions.append(record)

    outputs = [("heads.csv", HEAD_COLUMNS, all_rows), ("predictions.csv", PREDICTION_COLUMNS, predictions)]
    if sweep_rows:
        outputs.append(("sweeps.csv", SWEEP_COLUMNS, sweep_rows))
    for file_name, columns, rows in outputs:
        tmp = os.path.join(out, file_name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
        os.replace(tmp, os.path.join(out, file_name))

    known = [p for p in predictions if p["correct"] != ""]
    counts = {"items": len(items), "finished": finished, "failed": failed, "skipped": skipped,
              "predictions": {k: sum(1 for p in predictions if p["prediction"] == k)
                              for k in ("increase", "decrease", "unknown")},
              "accuracy": round(sum(p["correct"] for p in known) / len(known), 4) if known else None,
              "head_rows": len(all_rows)}
    summary = summarize(all_rows)
    if any(p.get("logit_diff") not in (None, "") for p in predictions) or sweep_rows:
        summary["scores"] = summarize_scores(predictions, sweep_rows)
    _write_json(os.path.join(out, "summary.json"), {"counts": counts, "summary": summary})
    with open(os.path.join(out, "summary.txt"), "w", encoding="utf-8") as f:
        f.write(_summary_text(summary, counts))
    return {"counts": counts, "summary": summary}
