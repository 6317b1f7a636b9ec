"""The plots write PNGs of the requested pixel size that carry a picture (not blank)."""

import json

import matplotlib.image
import numpy as np
import pytest

from attnscope import Capture, HeadReport, plot
from stream_fixtures import causal_attention

TOKENS = ["<|im_start|>", "user", "Ċ", "Net", "Ġsales", "Ġrose", "Ġand", "Ġrevenue", "Ġgrew", ".",
          "Ġincome", "<|im_end|>", "The", "Ġearnings", "Ġwill", "Ġincrease", "."]


@pytest.fixture
def capture():
    rng = np.random.default_rng(3)
    total = len(TOKENS)
    return Capture(ids=np.arange(total, dtype=np.int64), prompt_length=12, layers=[0, 1], heads=[0, 1, 2, 3],
                   attention_by_layer={0: causal_attention(rng, 4, total), 1: causal_attention(rng, 4, total)},
                   tokens=TOKENS)


@pytest.fixture
def report():
    rows = []
    types = ["self", "beginning-focused", "focused", "distributed"]
    for layer in range(3):
        for head in range(4):
            row = {"layer": layer, "head": head, "type": types[(layer + head) % 4]}
            for i, metric in enumerate(("diagonal", "previous_token", "causal", "beginning", "sink", "entropy", "max")):
                row[metric] = (layer * 4 + head + i) / 20
                row["gen_" + metric] = None
            rows.append(row)
    data = {"terms": [{"term": "sales", "word": "sales", "positions": [4]},
                      {"term": "revenue", "word": "revenue", "positions": [7]}],
            "top_k": [{"layer": 1, "head": None, "query": "sales", "query_position": 4, "query_token": "Ġsales",
                       "keys": [{"position": 4, "token": "Ġsales", "weight": 0.5},
                                {"position": 0, "token": "<|im_start|>", "weight": 0.3},
                                {"position": 3, "token": "Net", "weight": 0.2}]}]}
    return HeadReport(rows, [], data, list(range(17)), 12, "")


def _assert_png(path, width, height):
    pixels = matplotlib.image.imread(str(path))
    assert pixels.shape[:2] == (height, width)
    rgb = pixels[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05, "image is (nearly) one colour"
    assert len(np.unique(np.round(rgb * 255).astype(np.uint8), axis=0)) > 50, "too few colours for a plot"


def test_heatmap_png(tmp_path, capture):
    figure = plot.heatmap(capture, layer=1, head=2, max_tokens=10, figsize=(6, 5), dpi=100,
                          path=tmp_path / "h.png")
    _assert_png(tmp_path / "h.png", 600, 500)
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels[:5] == ["0:<|im_start|>", "1:user", "2:Ċ", "3:Net", "4:Ġsales"] and len(labels) == 10


def test_head_grid_png(tmp_path, capture):
    figure = plot.head_grid(capture, layer=0, last=8, columns=2, figsize=(6, 6), dpi=80, path=tmp_path / "g.png")
    _assert_png(tmp_path / "g.png", 480, 480)
    assert len([ax for ax in figure.axes if ax.images]) == 4
    assert figure.axes[0].images[0].get_array().shape == (8, 8)


def test_term_attention_png(tmp_path, capture, report):
    figure = plot.term_attention(capture, report, layer=1, head=0, figsize=(7, 5), path=tmp_path / "t.png")
    _assert_png(tmp_path / "t.png", 700, 500)
    shown = figure.axes[0].images[0].get_array()
    expected = capture.attention(1)[0][np.ix_(range(12, 17), [4, 7])]
    np.testing.assert_array_equal(shown, expected)


def test_term_attention_without_report_finds_terms_in_tokens(capture):
    figure = plot.term_attention(capture, None, layer=0, head=1)
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels == ["4:Ġsales", "7:Ġrevenue", "10:Ġincome"]


@pytest.mark.parametrize("metric", ["entropy", "type", "gen_sink"])
def test_layer_head_map_png(tmp_path, report, metric):
    figure = plot.layer_head_map(report, metric, figsize=(5, 4), dpi=100, path=tmp_path / "m.png")
    image = figure.axes[0].images[0].get_array()
    assert image.shape == (3, 4)
    if metric == "entropy":
        _assert_png(tmp_path / "m.png", 500, 400)
        assert image[2, 3] == pytest.approx((2 * 4 + 3 + 5) / 20)
    if metric == "type":
        assert image[0, 1] == 1  # "beginning-focused"


def test_top_k_bar_from_capture_and_report(tmp_path, capture, report):
    figure = plot.top_k_bar(capture, "sales", layer=1, head=None, k=3, path=tmp_path / "k.png", figsize=(6, 4))
    _assert_png(tmp_path / "k.png", 600, 400)
    heights = [p.get_height() for p in figure.axes[0].patches]
    row = capture.attention(1)[:, 4, :5].mean(axis=0)
    assert heights == pytest.approx(sorted(row, reverse=True)[:3])
    figure = plot.top_k_bar(report, "sales", layer=1, k=3)
    assert [p.get_height() for p in figure.axes[0].patches] == [0.5, 0.3, 0.2]


def test_query_positions_span_split_tokens():
    tokens = ["Net", " s", "al", "es", " rose", "; sales", "!"]
    assert plot.find_query_positions(tokens, "SALES") == [3, 5]
    assert plot.find_query_positions(tokens, "profit") == []


def test_report_from_cli_json():
    doc = {"prompt_length": 3, "generated_text": "up", "tokens": ["a", "b", "c", "d"],
           "layers": [{"layer": 1, "num_heads": 2, "seq_length": 4, "mean_attention": 0.25,
                       "max_attention": 1.0, "attention_entropy": 0.5,
                       "heads": [{"head": 0, "diagonal": 0.5, "previous_token": 0.1, "causal": 0.2,
                                  "beginning": 0.3, "sink": 0.4, "entropy": 0.6, "max": 1.0, "type": "self",
                                  "generated_rows": {"diagonal": 0.7, "previous_token": 0.1, "causal": 0.2,
                                                     "beginning": 0.3, "sink": 0.4, "entropy": 0.6,
                                                     "max": 1.0, "type": "self"}},
                                 {"head": 3, "diagonal": 0.1, "previous_token": 0.1, "causal": 0.2,
                                  "beginning": 0.3, "sink": 0.4, "entropy": 0.6, "max": 1.0,
                                  "type": "distributed"}]}]}
    report = HeadReport.from_json(json.dumps(doc))
    assert report.layers == [1] and report.heads == [0, 3]
    assert report.row(1, 0)["gen_diagonal"] == 0.7 and report.row(1, 3)["gen_diagonal"] is None
    assert report.metric_matrix("type")[2].tolist() == [[0, 3]]
