"""Notebooks are stored without outputs, and match their generator (tools/make_notebooks.py)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, path.name


def test_notebooks_match_their_generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", REPO / "tools" / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    chapters = mod.chapters()
    assert sorted(name for name, _ in chapters) == [p.name for p in NOTEBOOKS], "a notebook without a generator (or the reverse)"
    for name, cells in chapters:
        stored = json.loads((REPO / "notebooks" / name).read_text())["cells"]
        assert ["".join(c["source"]) for c in stored] == [c.source for c in cells], (
            f"{name} differs from tools/make_notebooks.py: edit the generator and rerun it"
        )
