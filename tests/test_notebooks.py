"""The notebooks under notebooks/ run top to bottom without error (on the shipped small data)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_three_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01-exploring-cascades.ipynb", "02-live-pipeline.ipynb",
                                           "03-backtesting.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    for var in ("TWEETOSCOPE_KAFKA", "TWEETOSCOPE_OUT", "TWEETOSCOPE_SCHEDULER"):
        monkeypatch.delenv(var, raising=False)
    nb = nbformat.read(path, as_version=4)
    # run in a copy of the notebooks folder's place so that relative paths (../data) resolve,
    # while what a notebook writes lands in tmp_path
    work = tmp_path / "notebooks"
    work.mkdir()
    os.symlink(path.parents[1] / "data", tmp_path / "data")
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError with the failing cell and its traceback
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
