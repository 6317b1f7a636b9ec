"""The training program (scripts/organism/train.py) on a short run: its loss falls, and it is
deterministic (two runs with the same seed write the same weights)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "scripts" / "organism" / "train.py"
SMALL = ["--statement-batch", "4", "--induction-batch", "4", "--eval-statements", "25",
         "--warmup", "20"]


def run_training(out: Path, steps: int, *extra: str) -> list:
    result = subprocess.run([sys.executable, str(TRAIN), "--out", str(out), "--steps", str(steps),
                             "--eval-every", str(steps), *SMALL, *extra],
                            capture_output=True, text=True, timeout=1700)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]


def test_a_few_hundred_steps_make_the_loss_fall(tmp_path):
    log = run_training(tmp_path / "run", 300)
    train = [r for r in log if "loss" in r]
    vocab = json.loads((tmp_path / "run" / "config.json").read_text())["vocab_size"]
    # At initialisation (weights ~ N(0, 0.02)) the logits are nearly uniform: each of the two
    # losses is close to ln(vocab) nats.
    assert train[0]["step"] == 1
    assert abs(train[0]["answer_loss"] - math.log(vocab)) < 0.2, train[0]
    assert abs(train[0]["induction_loss"] - math.log(vocab)) < 0.2, train[0]
    first = train[0]["loss"]
    last = sum(r["loss"] for r in train[-3:]) / 3       # steps 280, 290, 300
    # After 300 steps the answer is one of the two label words (the answer loss, averaged over
    # the word and the <|im_end|> after it, is at most ~ln(2)/2 + a little) and copying of the
    # repeated half has begun.
    assert last < 0.6 * first, (first, last, train[-3:])
    answer_last = sum(r["answer_loss"] for r in train[-3:]) / 3
    assert answer_last < 0.1 * train[0]["answer_loss"], (train[0]["answer_loss"], answer_last)
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "training_curve.png"):
        assert (tmp_path / "run" / name).is_file(), name
    done = [r for r in log if r.get("done")]
    assert done and done[0]["steps"] == 300


def test_same_seed_same_weights(tmp_path):
    run_training(tmp_path / "a", 4)
    run_training(tmp_path / "b", 4)
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    b = (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a == b
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    run_training(tmp_path / "c", 4, "--seed", "99")
    assert (tmp_path / "c" / "model.safetensors").read_bytes() != a
