"""Messages the package prints never point users to a file that is not in the repository."""

from __future__ import annotations

import ast
import re

import pytest

from .conftest import REPO

SOURCES = sorted((REPO / "voicelab").rglob("*.py"))
MD = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


def _message_strings(tree: ast.AST):
    """String constants that are not docstrings (docstrings may cite the design notes)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def _exists(name: str) -> bool:
    return (REPO / name).exists() or (REPO / "docs" / name).exists() or any(REPO.rglob(name.rsplit("/", 1)[-1]))


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(REPO)) for p in SOURCES])
def test_referenced_md_files_exist(path):
    missing = [(line, m) for line, text in _message_strings(ast.parse(path.read_text()))
               for m in MD.findall(text) if not _exists(m)]
    assert not missing, f"{path.relative_to(REPO)} points users to files not in the repository: {missing}"


def test_the_checker_catches_a_missing_file():
    tree = ast.parse('def f():\n    """See NOWHERE.md."""\n    raise ValueError("check AIORTC-SEAMS.md")\n')
    found = [m for _, t in _message_strings(tree) for m in MD.findall(t)]
    assert found == ["AIORTC-SEAMS.md"] and not _exists("AIORTC-SEAMS.md")


def test_the_aiortc_seam_message_points_to_an_existing_section():
    assert "## The seams used" in (REPO / "docs" / "webrtc.md").read_text()
    src = (REPO / "voicelab" / "webrtc" / "peer.py").read_text()
    assert 'docs/webrtc.md, \\"The seams used\\"' in src
