#!/usr/bin/env python3
"""The research notebook's questions, asked of the model organism through an attnscope server.

    /usr/bin/python3 scripts/organism/study.py --server 127.0.0.1:50051 --out out/demo/organism

1. Accuracy on held-out statements (a fresh generator seed, never trained on) with
   `attnscope batch` (prompt_1, template 0, greedy), and the heads whose metrics differ most
   between predicted-increase and predicted-decrease answers (the batch summary).
2. Label-field attention: for each head, the attention that the answer position (the last
   prompt token, whose logits choose the answer word) pays to the lines of the three fields
   of the label rule, against the other fields' lines, per line, averaged over statements.
3. Induction and previous-token heads: the server's detectors on an induction probe, and how
   often greedy decoding continues the second half of a repeated random sequence correctly.
4. Causal check of the label-field heads (ScoreAnswers): on held-out statements, the logit
   difference "increase" - "decrease" clean, with the label-field heads of the model card
   (L0H3, L0H5, L0H7) ablated together, and with as many heads drawn at random from the other
   thirteen ablated together;
   and the mean single-head sweep (sweep_heatmap.png: the change of the answer's margin when
   each head alone is ablated, averaged over the statements).
Writes organism_study.json and organism_study.txt (and prints the text).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "client" / "python"))
import data  # noqa: E402
from attnscope import Client, batch, study  # noqa: E402
from attnscope.interventions import ablate  # noqa: E402

HELD_OUT_SEED = 424242   # no training stream uses it (train.py draws from seed+1, seed+2, seed+7919)
PROBE_SEED = 7


def write_heldout(path: str, seed: int, count: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data.dataset(seed, count), f, indent=1)


def field_line_spans(text: str):
    """{field: (begin, end)} character range of each statement line `- <field> (...` in text."""
    spans = {}
    for field in data.BALANCE_FIELDS + data.INCOME_FIELDS:
        begin = text.index(f"- {field} (")
        end = text.index("\n", begin)
        spans[field] = (begin, end)
    return spans


def label_field_attention(client: Client, prompts: dict, seed: int, count: int) -> dict:
    """Per head: mean attention per line from the answer position to the label fields' lines
    and to the other fields' lines, and to the lines' sign tokens ("(+" / "(-")."""
    rng = random.Random(seed)
    sums = {}
    for _ in range(count):
        description, _, _ = data.statement(rng)
        messages = study.build_messages(prompts, "prompt_1", description, 0)
        tokens = client.tokenize(messages=messages)
        # The prompt text is ASCII: byte spans are character spans.
        lines = field_line_spans(tokens.text)
        capture = client.generate(messages=messages, max_new_tokens=1, greedy=True, dtype="float32",
                                  progress=False)
        if capture.prompt_length != len(tokens.ids):
            raise RuntimeError(f"tokenize gave {len(tokens.ids)} prompt tokens, generate {capture.prompt_length}")
        answer_row = capture.prompt_length - 1  # its logits choose the answer word
        for layer in capture.layers:
            attention = capture.attention(layer)  # [heads, T, T]
            for h in range(attention.shape[0]):
                row = attention[h, answer_row]
                entry = sums.setdefault((layer, capture.heads[h]),
                                        {"label": 0.0, "other": 0.0, "label_sign": 0.0, "other_sign": 0.0})
                for field, (begin, end) in lines.items():
                    positions = [i for i, (b, e) in enumerate(tokens.spans) if b < end and e > begin]
                    signs = [i for i in positions if "(" in tokens.text[tokens.spans[i][0]:tokens.spans[i][1]]]
                    mass = float(row[positions].sum())
                    sign_mass = float(row[signs].sum())
                    group = "label" if field in data.LABEL_FIELDS else "other"
                    entry[group] += mass
                    entry[group + "_sign"] += sign_mass
    label_lines, other_lines = len(data.LABEL_FIELDS), len(data.BALANCE_FIELDS + data.INCOME_FIELDS) - len(data.LABEL_FIELDS)
    heads = []
    for (layer, head), entry in sums.items():
        per_label = entry["label"] / count / label_lines
        per_other = entry["other"] / count / other_lines
        heads.append({"layer": layer, "head": head, "label_line": per_label, "other_line": per_other,
                      "label_sign": entry["label_sign"] / count / label_lines,
                      "other_sign": entry["other_sign"] / count / other_lines,
                      "difference": per_label - per_other})
    heads.sort(key=lambda e: (-e["difference"], e["layer"], e["head"]))
    return {"statements": count, "label_fields": data.LABEL_FIELDS, "heads": heads}


def induction(client: Client, length: int, sequences: int, seed: int) -> dict:
    """The server's detectors on its induction probe, and greedy continuation accuracy of the
    second half of repeated random sequences (the first token of the second half is given)."""
    report = client.analyze(induction_probe=(length, seed))
    detectors = report.data["detectors"]
    rng = random.Random(seed)
    right = total = 0
    ordinary = ordinary_vocab(client)
    for _ in range(sequences):
        sequence = data.repeated_sequence(rng, length, ordinary)
        prompt = sequence[:length + 1]
        capture = client.generate(ids=prompt, max_new_tokens=length - 1, greedy=True, capture=False,
                                  eos_token_ids=[], progress=False)
        generated = list(capture.generated_ids)
        expected = sequence[length + 1:]
        right += sum(1 for g, e in zip(generated, expected) if g == e)
        total += len(expected)
    return {"probe_length": length, "probe_seed": seed, "induction": detectors["induction"][:8],
            "previous_token": detectors["previous_token"][:8], "duplicate_token": detectors["duplicate_token"][:8],
            "continuation_accuracy": right / total, "continuation_tokens": total}


LABEL_FIELD_HEADS = [(0, 3), (0, 5), (0, 7)]  # MODEL_CARD.md: the label-field heads after stage 7
ANSWERS = ["increase", "decrease"]


def _ablations(heads, mode: str):
    by_layer = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    return [ablate(layer, sorted(hs), mode) for layer, hs in sorted(by_layer.items())]


def ablation_experiment(client: Client, prompts: dict, seed: int, count: int, draws: int = 5,
                        mode: str = "zero", out: str = "") -> dict:
    """The answer's margin (the logit difference signed towards the clean answer) clean, with
    the label-field heads ablated, and with as many random other heads ablated (`draws` draws
    per statement); how often the answer flips; and the mean single-head sweep of the margin."""
    rng = random.Random(seed)  # the statements: the same for every mode and head list
    draw = random.Random(seed + 1)  # the random heads
    others = None
    clean_margin, label_margin, random_margin = [], [], []
    label_flips = random_flips = random_runs = 0
    sweep_sum = {}
    first_sweep = None
    for _ in range(count):
        description, _, _ = data.statement(rng)
        messages = study.build_messages(prompts, "prompt_1", description, 0)
        swept = client.sweep(messages=messages, candidates=ANSWERS, mode=mode)  # every head
        if others is None:
            others = [(e["layer"], e["head"]) for e in swept.heads
                      if (e["layer"], e["head"]) not in LABEL_FIELD_HEADS]
        clean = swept.clean_logit_diff
        sign = 1.0 if clean >= 0 else -1.0
        clean_margin.append(sign * clean)
        label = client.score(messages=messages, candidates=ANSWERS,
                             interventions=_ablations(LABEL_FIELD_HEADS, mode)).logit_diff
        label_margin.append(sign * label)
        label_flips += sign * label < 0
        for _ in range(draws):
            chosen = draw.sample(others, len(LABEL_FIELD_HEADS))
            value = client.score(messages=messages, candidates=ANSWERS,
                                 interventions=_ablations(chosen, mode)).logit_diff
            random_margin.append(sign * value)
            random_flips += sign * value < 0
            random_runs += 1
        first_sweep = first_sweep or swept
        for row in swept.heads:
            key = (row["layer"], row["head"])
            sweep_sum[key] = sweep_sum.get(key, 0.0) + sign * row["delta"]
    mean = lambda values: sum(values) / len(values)
    sweep_mean = [{"layer": l, "head": h, "margin_delta": v / count} for (l, h), v in sorted(sweep_sum.items())]
    if out and first_sweep is not None:
        from attnscope.interventions import SweepResult
        from attnscope.plot import layer_head_map
        averaged = SweepResult(clean_logit_diff=mean(clean_margin), clean=first_sweep.clean, mode=mode,
                               heads=[{"layer": e["layer"], "head": e["head"], "delta": e["margin_delta"],
                                       "logit_diff": mean(clean_margin) + e["margin_delta"]} for e in sweep_mean])
        layer_head_map(averaged, "delta", path=os.path.join(out, "sweep_heatmap.png"))
    return {"statements": count, "mode": mode, "label_field_heads": [f"L{l}H{h}" for l, h in LABEL_FIELD_HEADS],
            "random_draws_per_statement": draws,
            "clean_margin": mean(clean_margin), "label_ablated_margin": mean(label_margin),
            "random_ablated_margin": mean(random_margin),
            "label_flip_rate": label_flips / count, "random_flip_rate": random_flips / random_runs,
            "sweep_margin_delta": sorted(sweep_mean, key=lambda e: e["margin_delta"])}


def ordinary_vocab(client: Client) -> int:
    """Ids below the first special token are ordinary (the training program draws from them)."""
    tokens = client.tokenize(text="<|endoftext|>")
    return min(tokens.ids)


def text_report(result: dict) -> str:
    lines = []
    acc = result["accuracy"]
    lines.append(f"1. Held-out accuracy (batch run, {acc['items']} statements, generator seed {acc['seed']}): "
                 f"{acc['accuracy']:.3f} (labels include {data.NOISE_RATE:.0%} documented noise; "
                 f"noise-free rule accuracy {acc['rule_accuracy']:.3f}); predictions {acc['predictions']}")
    summary = acc["increase_vs_decrease"]
    if "metrics" in summary:
        for metric in ("gen_entropy", "gen_max", "gen_previous_token", "entropy"):
            best = summary["metrics"].get(metric, [])[:4]
            if best:
                lines.append(f"   heads differing most, predicted increase vs decrease, {metric}: " +
                             ", ".join(f"L{e['layer']}H{e['head']} {e['difference']:+.4f}" for e in best))
    fields = result["label_field_attention"]
    lines.append(f"2. Answer-position attention per line, label fields {fields['label_fields']} vs the other "
                 f"fields ({fields['statements']} statements):")
    for e in fields["heads"][:6]:
        lines.append(f"   L{e['layer']}H{e['head']}: label line {e['label_line']:.3f} (sign token {e['label_sign']:.3f}) "
                     f"vs other line {e['other_line']:.3f} (sign token {e['other_sign']:.3f})")
    ind = result["induction"]
    lines.append(f"3. Induction probe (n={ind['probe_length']}, seed {ind['probe_seed']}): induction " +
                 ", ".join(f"L{e['layer']}H{e['head']} {e['score']:.3f}" for e in ind["induction"][:4]) +
                 "; previous-token " + ", ".join(f"L{e['layer']}H{e['head']} {e['score']:.3f}" for e in ind["previous_token"][:4]))
    lines.append(f"   second half of a repeated random sequence continued correctly: "
                 f"{ind['continuation_accuracy']:.3f} of {ind['continuation_tokens']} tokens")
    for ab in result.get("ablation", []):
        lines.append(f"4. Answer margin (logit difference towards the clean answer, {ab['mode']} ablation, "
                     f"{ab['statements']} statements): clean {ab['clean_margin']:.3f}; label-field heads "
                     f"{','.join(ab['label_field_heads'])} ablated {ab['label_ablated_margin']:.3f} "
                     f"(answer flipped in {ab['label_flip_rate']:.3f}); {len(ab['label_field_heads'])} random other heads ablated "
                     f"{ab['random_ablated_margin']:.3f} (flipped {ab['random_flip_rate']:.3f}, "
                     f"{ab['random_draws_per_statement']} draws per statement)")
        lines.append("   single-head sweep, mean margin change, most harmful: " +
                     ", ".join(f"L{e['layer']}H{e['head']} {e['margin_delta']:+.3f}" for e in ab["sweep_margin_delta"][:6]))
    return "\n".join(lines) + "\n"


def run(server: str, out: str, statements: int = 200, attention_statements: int = 40,
        probe_length: int = 32, sequences: int = 20, progress: bool = True) -> dict:
    os.makedirs(out, exist_ok=True)
    prompts_path = str(REPO / "config" / "prompts.yaml")
    prompts = study.load_prompts(prompts_path)
    heldout = os.path.join(out, "heldout_statements.json")
    write_heldout(heldout, HELD_OUT_SEED, statements)
    batch_result = batch.run_batch(server, heldout, prompts_path, prompt="prompt_1", out=os.path.join(out, "batch"),
                                   max_new_tokens=4, progress=progress)
    # The noise-free rule's answer for each held-out item (regenerated from the same seed).
    rng = random.Random(HELD_OUT_SEED)
    rule = {}
    for index in range(statements):
        _, _, changes = data.statement(rng)
        rule[f"S{index + 1:04d}"] = data.rule_label(changes)
    with open(os.path.join(out, "batch", "predictions.csv"), encoding="utf-8") as f:
        import csv
        rows = list(csv.DictReader(f))
    rule_right = sum(1 for r in rows if r["prediction"] == rule[r["company_id"]])
    with Client(server) as client:
        result = {
            "accuracy": {"items": statements, "seed": HELD_OUT_SEED, "accuracy": batch_result["counts"]["accuracy"],
                         "rule_accuracy": rule_right / statements,
                         "predictions": batch_result["counts"]["predictions"],
                         "increase_vs_decrease": batch_result["summary"]["increase_vs_decrease"]},
            "label_field_attention": label_field_attention(client, prompts, HELD_OUT_SEED + 1, attention_statements),
            "induction": induction(client, probe_length, sequences, PROBE_SEED),
            "ablation": [ablation_experiment(client, prompts, HELD_OUT_SEED + 2, attention_statements, mode=mode,
                                             out=out if mode == "zero" else "")
                         for mode in ("zero", "mean")],
        }
    with open(os.path.join(out, "organism_study.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    text = text_report(result)
    with open(os.path.join(out, "organism_study.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--statements", type=int, default=200)
    parser.add_argument("--attention-statements", type=int, default=40)
    args = parser.parse_args(argv)
    result = run(args.server, args.out, args.statements, args.attention_statements)
    print(text_report(result), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
