"""Capture.show() / _repr_html_ and Capture.save_view(): the Python packing of the viewer page
against the command line's `attnscope view` (two writers of one format must agree byte for
byte), plus an independent check of the thumbnail rule and of the lower-triangle layout."""

import json
import os
import re
import subprocess

import numpy as np
import pytest

from conftest import cli_binary

from attnscope import Capture, viewer

TEXT = "Net sales rose 8% while revenue and cash from operations increased; debt fell."
DATA = re.compile(r'<script type="application/json" id="attnscope-data">(.*?)</script>', re.S)
MATRIX = re.compile(r'<script type="application/octet-stream" id="attnscope-matrix-([^"]+)">(.*?)</script>', re.S)


def page_document(page):
    """The view document of a command-line page, with the matrices that follow the viewer's
    script (the "deferred" ones) put back."""
    document = json.loads(DATA.search(page).group(1))
    deferred = document.pop("deferred")
    found = dict(MATRIX.findall(page))
    assert sorted(found) == sorted(deferred)
    for key, dtype in deferred.items():
        document["matrices"][key] = {"dtype": dtype, "data": found[key]}
    return document


def run(*args):
    result = subprocess.run([cli_binary(), *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module", params=["float32", "float16"])
def captured(request, tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"view-{request.param}")
    path = str(folder / "capture.safetensors")
    run("capture", "--model", tiny_model_dir, "--text", TEXT, "--max-new-tokens", "6", "--greedy",
        "--dtype", request.param, "--out", path)
    report = str(folder / "report.json")
    with open(report, "w") as f:
        f.write(run("analyze", "--from", path, "--json"))
    return path, report, folder


def cli_document(*args):
    page_path = args[-1]
    run("view", *args[:-1], "--out", page_path)
    with open(page_path, encoding="utf-8") as f:
        page = f.read()
    return page, page_document(page)


def test_python_document_equals_the_command_lines(captured):
    path, report, folder = captured
    page, expected = cli_document(path, "--report", report, str(folder / "cli.html"))
    capture = Capture.load(path)
    document = viewer.view_document(capture, report=report, max_bytes=50_000_000)
    assert document.keys() == expected.keys()
    for key in expected:
        assert document[key] == expected[key], key
    # The same bundle: the JavaScript in the command line's page is the one Python embeds.
    assert viewer.load_bundle() in page


def test_budget_and_heads_choose_the_same_matrices(captured):
    path, _, folder = captured
    capture = Capture.load(path)
    t = capture.num_tokens
    one_head = 4 * ((t * (t + 1) // 2 * (4 if capture.dtype == "float32" else 2) + 2) // 3)
    budget = 3 * one_head + 10
    _, expected = cli_document(path, "--max-bytes", str(budget), str(folder / "budget.html"))
    document = viewer.view_document(capture, max_bytes=budget)
    assert document["matrices"] == expected["matrices"]
    assert document["embedded"] == expected["embedded"]
    assert document["embedded"]["heads_full"] < document["embedded"]["heads_total"]
    _, expected = cli_document(path, "--heads", "2:3,1:mean", str(folder / "heads.html"))
    document = viewer.view_document(capture, heads=[(2, 3), (1, "mean")])
    assert sorted(document["matrices"]) == ["1:mean", "2:3"]
    assert document["matrices"] == expected["matrices"]
    with pytest.raises(ValueError, match="layer 9 is not in the capture"):
        viewer.view_document(capture, heads=[(9, 0)])
    with pytest.raises(ValueError, match="over max_bytes 10"):
        viewer.view_document(capture, heads=[(0, 0)], max_bytes=10)


def test_thumbnail_and_triangle_by_hand(captured):
    path, _, _ = captured
    capture = Capture.load(path)
    t = capture.num_tokens
    cells, thumbs = viewer.thumbnails(capture)
    assert cells == min(t, viewer.THUMBNAIL_CELLS)
    a = capture.attention(capture.layers[1])[2]
    for block_row, block_col in [(0, 0), (cells - 1, 0), (cells - 1, cells - 1), (20, 7)]:
        r0, r1 = block_row * t // cells, (block_row + 1) * t // cells
        c0, c1 = block_col * t // cells, (block_col + 1) * t // cells
        peak = max(float(a[i, j]) for i in range(r0, r1) for j in range(c0, c1))
        assert thumbs[1, 2, block_row, block_col] == int(np.floor(255 * np.sqrt(peak) + 0.5))
    dtype, data = viewer.lower_triangle_bytes(capture, capture.layers[1], capture.heads[2])
    values = np.frombuffer(data, dtype={"float32": "<f4", "float16": "<f2"}[dtype]).astype(np.float32)
    assert values.size == t * (t + 1) // 2
    row = t - 1
    start = row * (row + 1) // 2
    np.testing.assert_array_equal(values[start:start + row + 1], a[row, :row + 1])


def test_show_and_repr_html_render_the_viewer_fragment(captured):
    path, report, folder = captured
    capture = Capture.load(path)
    fragment = capture._repr_html_()
    root = re.search(r'<div id="(attnscope-[0-9a-f]+)"></div>', fragment).group(1)
    assert f"AttnScopeViewer.mount(document.getElementById('{root}')" in fragment
    data = re.search(rf'<script type="application/json" id="{root}-data">(.*?)</script>', fragment, re.S)
    document = json.loads(data.group(1))
    assert document["tokens"] == capture.tokens and document["prompt_length"] == capture.prompt_length
    assert viewer.load_bundle() in fragment
    assert capture.show(report=report)._repr_html_().count("AttnScopeViewer.mount") == 1
    page = folder / "python.html"
    capture.save_view(page, report=report)
    assert json.loads(DATA.search(page.read_text(encoding="utf-8")).group(1))["format"] == "attnscope.view.v1"


def test_missing_bundle_names_where_it_looked(monkeypatch):
    monkeypatch.setattr(viewer, "bundle_candidates", lambda: ["/nonexistent/viewer.js"])
    with pytest.raises(FileNotFoundError, match="/nonexistent/viewer.js"):
        viewer.load_bundle()
