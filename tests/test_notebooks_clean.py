"""Chapters are Jupytext pairs (notebooks/*.md + *.ipynb): stored without outputs, with
stable cell ids, and each pair in sync (tools/notebooks.py check)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _tool():
    spec = importlib.util.spec_from_file_location("notebooks_tool", REPO / "tools" / "notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_cell_ids_present_and_unique(path):
    ids = [c.get("id") for c in json.loads(path.read_text())["cells"]]
    assert all(ids) and len(set(ids)) == len(ids), path.name


def test_every_chapter_is_a_synced_pair():
    assert len(NOTEBOOKS) >= 7
    assert _tool().check() == {}


@pytest.fixture
def pair(tmp_path):
    for p in (REPO / "notebooks").glob("03-sip-anatomy.*"):
        shutil.copy(p, tmp_path / p.name)
    shutil.copy(REPO / "notebooks" / "jupytext.toml", tmp_path)
    return tmp_path


def test_check_fails_when_the_md_was_edited(pair):
    tool = _tool()
    assert tool.check(pair) == {}
    md = pair / "03-sip-anatomy.md"
    md.write_text(md.read_text().replace("BYE ends the call", "BYE hangs up"))
    bad = tool.check(pair)
    assert list(bad) == ["03-sip-anatomy.ipynb"] and "hangs up" in bad["03-sip-anatomy.ipynb"][0]


def test_check_fails_when_the_notebook_gained_a_cell_or_lost_its_twin(pair):
    tool = _tool()
    nb_path = pair / "03-sip-anatomy.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["cells"].append({"cell_type": "markdown", "id": "extra", "metadata": {}, "source": ["new"]})
    nb_path.write_text(json.dumps(nb))
    assert "cells" in tool.check(pair)["03-sip-anatomy.ipynb"][0]
    (pair / "03-sip-anatomy.md").unlink()
    assert "has no" in tool.check(pair)["03-sip-anatomy.ipynb"][0]
    (pair / "orphan.md").write_text("# no notebook\n")
    assert tool.check(pair)["orphan.md"] == ["no paired .ipynb"]


def test_sync_after_editing_the_md_keeps_cell_ids(pair):
    nb_path, md = pair / "03-sip-anatomy.ipynb", pair / "03-sip-anatomy.md"
    before = [c["id"] for c in json.loads(nb_path.read_text())["cells"]]
    md.write_text(md.read_text().replace("BYE ends the call", "BYE hangs up"))
    subprocess.run([sys.executable, "-m", "jupytext", "--sync", str(nb_path)], check=True, capture_output=True)
    after = json.loads(nb_path.read_text())
    assert [c["id"] for c in after["cells"]] == before
    assert "BYE hangs up" in "".join(after["cells"][0]["source"])
    assert _tool().check(pair) == {}


def test_saving_in_jupyterlab_writes_both_files_of_the_pair(pair):
    """JupyterLab saves through the server's contents manager; jupytext's (enabled with the
    lab extra) reads notebooks/jupytext.toml and writes the .md twin in the same save."""
    jupytext = pytest.importorskip("jupytext")
    cm = jupytext.TextFileContentsManager(root_dir=str(pair))
    model = cm.get("03-sip-anatomy.ipynb")
    model["content"].cells[0].source += "\n\nAn edit made in JupyterLab."
    cm.save(model, "03-sip-anatomy.ipynb")
    assert "An edit made in JupyterLab." in (pair / "03-sip-anatomy.md").read_text()
    assert _tool().check(pair) == {}
