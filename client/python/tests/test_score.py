"""client.score / client.sweep against a real attnscope-server on loopback: the reference
numbers of tests/engine/intervention_reference.py (an independent PyTorch Qwen2), the same
JSON as the command line's local mode, DataFrame tables, the sweep heatmap, text candidates
and term knockouts on the tiny model with a tokenizer."""

import json
import os
import subprocess

import numpy as np
import pytest

from attnscope import AttnScopeError, Client, plot
from attnscope.interventions import ablate, knockout, patch
from conftest import REPO, cli_binary

REFERENCE = os.path.join(REPO, "tests", "engine", "testdata", "interventions_qwen2-tiny.json")


@pytest.fixture(scope="module")
def reference():
    with open(REFERENCE) as f:
        return json.load(f)


def _items(case):
    out = []
    for e in case["interventions"]:
        if e["kind"] == "ablate":
            out.append(ablate(e["layer"], e["heads"], e["mode"]))
        elif e["kind"] == "knockout":
            rows = e["rows"] if e["rows"] != "range" else (e["row_begin"], e["row_end"])
            out.append(knockout(e["layer"], e["heads"], rows, e["keys"]))
        else:
            out.append(patch(e["layer"], e["heads"], e["positions"]))
    return out


def test_scores_equal_the_reference_under_every_intervention(golden_server, reference):
    with Client(golden_server.address) as client:
        for case in reference["cases"]:
            score = client.score(ids=reference["prompt"], candidates=reference["candidates"],
                                 interventions=_items(case), patch_source=case.get("source"))
            frame = score.to_dataframe()
            assert list(frame.columns) == ["text", "token_ids", "token_logprobs", "logprob", "first_token_rank"]
            for got, want in zip(score.candidates, case["scores"]):
                np.testing.assert_allclose(got["token_logprobs"], want["token_logprobs"], atol=1e-4)
                assert got["first_token_rank"] == want["first_token_rank"]
            assert score.logit_diff == pytest.approx(
                case["scores"][0]["logprob"] - case["scores"][1]["logprob"], abs=1e-4)


def test_sweep_table_progress_and_heatmap(golden_server, reference, tmp_path):
    progress = []
    with Client(golden_server.address) as client:
        sweep = client.sweep(ids=reference["prompt"], candidates=reference["candidates"][:2], mode="mean",
                             on_progress=lambda done, total: progress.append((done, total)))
    frame = sweep.to_dataframe()
    assert list(frame.columns) == ["layer", "head", "logit_diff", "delta"]
    assert len(frame) == 8
    want = {(r["layer"], r["head"]): r["logit_diff"] for r in reference["sweep"]["mean"]}
    for row in sweep.rows():
        assert row["logit_diff"] == pytest.approx(want[(row["layer"], row["head"])], abs=1e-4)
        assert row["delta"] == pytest.approx(row["logit_diff"] - sweep.clean_logit_diff, abs=1e-12)
    assert progress[-1] == (8, 8)
    layers, heads, matrix = sweep.matrix("delta")
    assert matrix.shape == (2, 4) and layers == [0, 1]
    assert sweep.top(1)[0]["delta"] == max(sweep.rows(), key=lambda r: abs(r["delta"]))["delta"]
    figure = plot.layer_head_map(sweep, path=str(tmp_path / "sweep.png"))
    assert os.path.getsize(tmp_path / "sweep.png") > 1000
    assert "mean ablation" in figure.axes[0].get_title()


def test_python_equals_the_command_line_local_mode(golden_server, reference):
    if not os.path.exists(cli_binary()):
        pytest.skip(f"attnscope command line not found at {cli_binary()}")
    prompt = reference["prompt"]
    ids = ",".join(str(i) for i in prompt)
    from conftest import GOLDEN
    result = subprocess.run([cli_binary(), "score", "--model", os.path.join(GOLDEN, "model"), "--ids", ids,
                             "--candidate-ids", "399,125,155;17", "--ablate", "1:0,2:mean", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    local = json.loads(result.stdout)
    with Client(golden_server.address) as client:
        score = client.score(ids=prompt, candidates=[[399, 125, 155], [17]],
                             interventions=[ablate(1, [0, 2], "mean")])
    assert [c["token_logprobs"] for c in local["candidates"]] == [c["token_logprobs"] for c in score.candidates]
    assert local["logit_diff"] == score.logit_diff


def test_bad_interventions_are_refused_and_the_server_keeps_serving(golden_server, reference):
    with Client(golden_server.address) as client:
        with pytest.raises(AttnScopeError) as error:
            client.score(ids=reference["prompt"], candidates=[[1], [2]], interventions=[ablate(0, [9])])
        assert error.value.code == "INVALID_ARGUMENT" and "interventions[0].heads: index 9" in str(error.value)
        with pytest.raises(AttnScopeError) as error:
            client.score(ids=reference["prompt"], candidates=[[1]], interventions=[patch(0, [1])],
                         patch_source=[1, 2, 3])
        assert "patch_source = 3 tokens: the target prompt has 37 tokens" in str(error.value)
        assert client.score(ids=reference["prompt"], candidates=[[1], [2]]).logit_diff is not None


def test_text_candidates_and_term_knockout_on_the_tiny_model(tiny_server):
    text = "Revenue rose and net income fell. Will earnings"
    with Client(tiny_server.address) as client:
        clean = client.score(text=text, candidates=[" increase", " decrease"])
        assert clean.candidates[0]["text"] == " increase"
        assert len(clean.candidates[0]["token_ids"]) == len(" increase".encode())  # byte tokenizer
        knocked = client.score(text=text, candidates=[" increase", " decrease"],
                               interventions=[knockout(0, [], "generated", ["revenue", "income"])])
        assert knocked.logit_diff != clean.logit_diff
        # The echo lists the positions of the words' tokens (byte tokens: one per byte).
        positions = knocked.interventions[0]["knockout"]["key_positions"]
        assert positions == list(range(0, 7)) + list(range(text.index("income"), text.index("income") + 6))
        with pytest.raises(AttnScopeError) as error:
            client.score(text=text, candidates=[" up"], interventions=[knockout(0, [], "generated", ["profit"])])
        assert "key_terms[0] = \"profit\": matches no word of the input" in str(error.value)


def test_batch_records_logit_differences_and_sweeps_the_first_items(tiny_server, tmp_path):
    import csv
    from attnscope.batch import run_batch
    from attnscope.study import build_messages, dataset_items, load_dataset, load_prompts
    data = os.path.join(REPO, "config", "sample_data", "financial_statements.json")
    prompts = os.path.join(REPO, "config", "prompts.yaml")
    if not os.path.exists(data):
        pytest.skip(f"sample dataset not found at {data}")
    result = run_batch(tiny_server.address, data, prompts, out=str(tmp_path), max_new_tokens=2, limit=3,
                       progress=False, candidates=["increase", "decrease"], sweep_first=1)
    assert result["counts"]["failed"] == 0
    with open(tmp_path / "predictions.csv") as f:
        predictions = list(csv.DictReader(f))
    assert all(p["logit_diff"] != "" for p in predictions)
    # The recorded difference is ScoreAnswers' for the item's own messages.
    company, year, entry = dataset_items(load_dataset(data))[0]
    messages = build_messages(load_prompts(prompts), "prompt_1", entry["description"], 0)
    with Client(tiny_server.address) as client:
        direct = client.score(messages=messages, candidates=["increase", "decrease"]).logit_diff
        model = client.model_info()["model"]
    first = next(p for p in predictions if p["company_id"] == company and p["fiscal_year"] == year)
    assert float(first["logit_diff"]) == pytest.approx(direct, abs=1e-9)
    with open(tmp_path / "sweeps.csv") as f:
        sweeps = list(csv.DictReader(f))
    assert len(sweeps) == model["num_layers"] * model["num_attention_heads"]
    scores = result["summary"]["scores"]
    assert scores["all"]["items"] == 3
    assert len(scores["all"]["top_heads"]) == 10
    assert abs(scores["all"]["top_heads"][0]["mean_delta"]) >= abs(scores["all"]["top_heads"][-1]["mean_delta"])
    assert "logit_diff all" in (tmp_path / "summary.txt").read_text()
