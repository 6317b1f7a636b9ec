"""The shipped model organism (config/organism) through this build's engine.

- logits: the training program's own forward (scripts/organism/model.py, a second
  implementation of Qwen2) and the engine (`attnscope capture --save-logits`) agree within
  1e-4 in float32 on the shipped weights, for a study prompt and a repeated random sequence;
- tokenizer: the training program's BPE encoder and the engine's tokenizer give the same ids
  for study prompts (the training data is what the engine will see);
- held-out accuracy >= 0.9 on 200 statements from a generator seed never trained on (batch
  run against a real server on loopback), and a head whose answer-position attention
  concentrates on the label rule's fields;
- the induction detector's best head >= 0.5, well above a random-weight model of the same
  shape (`make-tiny-model` with its shape);
- greedy continuation of the second half of repeated random sequences >= 0.9 (the study's
  procedure: the first token of the second half given, each generated token fed back).
"""

import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
ORGANISM = REPO / "config" / "organism"
sys.path.insert(0, str(REPO / "scripts" / "organism"))
sys.path.insert(0, str(REPO / "client" / "python"))
import bpe  # noqa: E402
import data  # noqa: E402
import study as organism_study  # noqa: E402
import train  # noqa: E402
from model import Qwen2ForCausalLM  # noqa: E402
from attnscope import Client, safetensors_io  # noqa: E402

_spec = importlib.util.spec_from_file_location("client_conftest", REPO / "client" / "python" / "tests" / "conftest.py")
client_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(client_conftest)


def binary(path: str) -> str:
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: build attnscope and attnscope-server first (ATTNSCOPE_BUILD_DIR)")
    return path


def load_organism() -> Qwen2ForCausalLM:
    return train.load_model(ORGANISM).eval()


def load_tokenizer() -> bpe.Tokenizer:
    return train.load_tokenizer(ORGANISM)


def study_prompts(count: int, seed: int):
    prompts = data.load_prompts(str(REPO / "config" / "prompts.yaml"))
    rng = random.Random(seed)
    return [data.chat_prompt(prompts, data.statement(rng)[0], i % 2) for i in range(count)]


def test_engine_logits_match_the_training_programs_forward(tmp_path):
    cli = binary(client_conftest.cli_binary())
    model = load_organism()
    tokenizer = load_tokenizer()
    prompt = tokenizer.encode(study_prompts(1, 5)[0])
    sequence = data.repeated_sequence(random.Random(3), 24, min(tokenizer.specials.values()))
    for ids in (prompt, sequence):
        out = tmp_path / "capture.safetensors"
        result = subprocess.run([cli, "capture", "--model", str(ORGANISM), "--ids", ",".join(map(str, ids)),
                                 "--max-new-tokens", "1", "--save-logits", "--layers", "0", "--quiet",
                                 "--out", str(out)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        tensors, _, _ = safetensors_io.load_file(str(out))
        engine = np.asarray(tensors["logits"], dtype=np.float32)[:len(ids)]
        with torch.no_grad():
            ours = model(torch.tensor([ids]))[0].numpy()
        assert engine.shape == ours.shape
        difference = float(np.abs(engine - ours).max())
        assert difference <= 1e-4, f"max |engine - training forward| = {difference} over {len(ids)} tokens"
        # Not trivially equal: the logits span several units.
        assert float(ours.max() - ours.min()) > 1.0


def test_engine_tokenizer_matches_the_training_encoder(tmp_path):
    cli = binary(client_conftest.cli_binary())
    tokenizer = load_tokenizer()
    texts = study_prompts(6, 11) + ["increase", "decrease<|im_end|>", "Net income (+12%): 1,234 vs 1,102\n\n"]
    lines = tmp_path / "texts.jsonl"
    lines.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    result = subprocess.run([cli, "tokenize", "--tokenizer", str(ORGANISM), "--jsonl", str(lines)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    engine = [json.loads(line)["ids"] for line in result.stdout.splitlines()]
    assert len(engine) == len(texts)
    for text, ids in zip(texts, engine):
        assert tokenizer.encode(text) == ids, text[:80]
    assert tokenizer.encode("increase") == [tokenizer.vocab["increase"]]  # one token per answer word


@pytest.fixture(scope="module")
def organism_server(tmp_path_factory):
    binary(client_conftest.server_binary())
    server = client_conftest.RunningServer(str(ORGANISM), str(tmp_path_factory.mktemp("organism") / "server.log"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def study_result(organism_server, tmp_path_factory):
    """scripts/organism/study.py against the organism server: 200 held-out statements by batch
    run, the answer position's attention on 8 statements, the induction probe, 10 sequences."""
    return organism_study.run(organism_server.address, str(tmp_path_factory.mktemp("study")), statements=200,
                              attention_statements=8, probe_length=32, sequences=10, progress=False)


def test_heldout_accuracy_through_the_server(study_result):
    accuracy = study_result["accuracy"]
    assert accuracy["items"] == 200 and accuracy["predictions"]["unknown"] == 0, accuracy
    assert accuracy["accuracy"] >= 0.9, accuracy


def test_the_best_label_field_head_attends_to_the_label_fields(study_result):
    # Per line, the best head's answer-position attention on the three label fields' lines is
    # several times what it pays to the other four fields' lines.
    top = study_result["label_field_attention"]["heads"][0]
    assert top["label_line"] > 5 * top["other_line"] and top["label_line"] > 0.1, top


# Greedy decoding derails at its first wrong token, so this needs per-token copying near 1
# (stage 7 of config/organism/MODEL_CARD.md; before it the organism continued these ~65%).
def test_second_half_of_a_repeated_sequence_is_continued(study_result):
    assert study_result["induction"]["continuation_accuracy"] >= 0.9, study_result["induction"]


def test_induction_detector_far_above_random_weights_of_the_same_shape(organism_server, study_result, tmp_path):
    cli = binary(client_conftest.cli_binary())
    config = json.loads((ORGANISM / "config.json").read_text())
    folder = tmp_path / "random"
    result = subprocess.run([cli, "make-tiny-model", str(folder), "--seed", "1",
                             "--layers", str(config["num_hidden_layers"]), "--heads", str(config["num_attention_heads"]),
                             "--kv-heads", str(config["num_key_value_heads"]), "--hidden", str(config["hidden_size"]),
                             "--intermediate", str(config["intermediate_size"]), "--vocab", str(config["vocab_size"])],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the same ordinary-token range for the probe
        shutil.copy(ORGANISM / name, folder / name)
    server = client_conftest.RunningServer(str(folder), str(tmp_path / "server.log"))
    try:
        with Client(server.address) as client:
            random_scores = client.analyze(induction_probe=(32, organism_study.PROBE_SEED)).data["detectors"]["induction"]
    finally:
        server.stop()
    organism = study_result["induction"]["induction"]
    assert organism[0]["score"] >= 0.5 and organism[0]["score"] > random_scores[0]["score"] + 0.3, (
        organism[:3], random_scores[:3])
