"""The three layers: dependencies point down only (tweetoscope -> streams, estimators)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "estimators": {"confluent_kafka", "dask", "distributed", "streamz", "bokeh", "tweetoscope", "streams", "tornado"},
    "streams": {"estimators", "tweetoscope"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.add(node.module.split(".")[0])
    return mods


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offenders = {str(f.relative_to(ROOT)): sorted(imported_modules(f) & FORBIDDEN[package]) for f in files}
    assert {f: m for f, m in offenders.items() if m} == {}


def test_the_check_itself_sees_imports(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import dask.array as da\nfrom confluent_kafka import Producer\nfrom . import y\n")
    assert imported_modules(f) == {"dask", "confluent_kafka"}


def test_no_pickle_or_eval_in_the_product():
    for package in ("estimators", "streams", "tweetoscope"):
        for f in (ROOT / package).rglob("*.py"):
            tree = ast.parse(f.read_text())
            names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            assert not {"eval", "exec"} & names, f
            assert "pickle" not in imported_modules(f), f
