"""Builds attention_head_analysis.ipynb from attention_head_analysis.py ("# %%" cells), so the
notebook and the script never drift apart (a test checks the committed notebook is current).

    /usr/bin/python3 make_notebook.py            # rewrite the .ipynb
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "attention_head_analysis.py"
NOTEBOOK = HERE / "attention_head_analysis.ipynb"


def _lines(text):
    lines = text.strip("\n").split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def notebook_json(script_text: str) -> str:
    cells = []
    for block in script_text.split("# %%")[1:]:
        header, _, body = block.partition("\n")
        if header.strip() == "[markdown]":
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.strip().split("\n"))
            cells.append({"cell_type": "markdown", "metadata": {}, "source": _lines(text)})
        else:
            cells.append({"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                          "source": _lines(body)})
    notebook = {"cells": cells, "metadata": {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    for index, cell in enumerate(cells):
        cell["id"] = f"cell-{index:02d}"
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    NOTEBOOK.write_text(notebook_json(SCRIPT.read_text()))
    print(f"wrote {NOTEBOOK}", file=sys.stderr)
