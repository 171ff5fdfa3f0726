"""The book (``make book``): built in quick mode, every chapter page shows its figures as
images (not only that Sphinx exits 0), audio players, a TOC, API pages, solutions.

The build executes every chapter once more (quick mode, ~2-3 min on 2 cores): it is
marked ``slow`` (``make test-fast`` skips it; ``make test`` runs it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from voicelab import viz

from .conftest import REPO, need, speech_dir

CHAPTERS = sorted(p.stem for p in (REPO / "notebooks").glob("*.md"))


def _sections(md_text: str) -> dict[str, str]:
    """Markdown headings (any level) -> the text up to the next heading of the same file."""
    parts = re.split(r"^(#{1,3} .+)$", md_text, flags=re.M)
    return {parts[i].lstrip("#").strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _exercises(stem: str) -> int:
    text = (REPO / "notebooks" / f"{stem}.md").read_text()
    body = _sections(text).get("Exercises", "")
    return len(re.findall(r"^\d+\. ", body, flags=re.M))


def _figure_calls(stem: str) -> int:
    """Figure outputs every run must show: unindented ``viz.show(`` / ``save(`` lines of code cells."""
    text = (REPO / "notebooks" / f"{stem}.md").read_text()
    cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, flags=re.S)
    return sum(len(re.findall(r"^(?:viz\.show|save)\(", c, flags=re.M)) for c in cells)


@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_opens_with_goals_and_ends_with_exercises(stem):
    text = (REPO / "notebooks" / f"{stem}.md").read_text()
    first_cell = text.split("```{code-cell}")[0]
    for part in ("Learning goals", "Prerequisites", "Run time"):
        assert part in first_cell, f"{stem}: the opening lacks {part!r}"
    assert re.search(r"quick mode.*full mode|full mode.*quick mode", first_cell, flags=re.S | re.I), stem
    assert list(_sections(text))[-1] == "Exercises", f"{stem}: the last section must be the exercises"
    assert _exercises(stem) >= 2


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    need(viz.static_export_available(), "no Chromium for the static figures (Debian package chromium)")
    need(speech_dir() is not None, "natural speech not found: set VOICELAB_DATA")
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ, VOICELAB_QUICK="1", VOICELAB_NO_WIDGETS="1", VOICELAB_DATA=str(speech_dir()),
               VOICELAB_FIGURES=str(out / "figures"), PYTHONPATH=str(REPO))
    env.pop("VOICELAB_BOOK_CHAPTERS", None)
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-E", "-q", str(REPO / "book"), str(out / "html")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "html"


slow = pytest.mark.slow


@slow
@pytest.mark.parametrize("stem", CHAPTERS)
def test_every_chapter_page_shows_its_figures_as_images(book, stem):
    page = (book / "chapters" / f"{stem}.html").read_text()
    figures = page.count('<div class="voicelab-figure">')
    images = re.findall(r'<img class="voicelab-static" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]{2000,})"', page)
    assert figures >= _figure_calls(stem), f"{stem}: {figures} figures, the source shows {_figure_calls(stem)}"
    assert len(images) == figures, f"{stem}: {figures} figures but {len(images)} static images"


@slow
def test_book_has_a_toc_audio_api_and_offline_plotly(book):
    index = (book / "index.html").read_text()
    for stem in CHAPTERS:
        assert f'href="chapters/{stem}.html"' in index, stem
    assert 'href="solutions/index.html"' in index and 'href="api.html"' in index
    assert "<audio" in (book / "chapters" / "01-codecs.html").read_text()
    api = (book / "api.html").read_text()
    assert 'id="voicelab.sim.simulate_call"' in api and 'id="voicelab.viz.show"' in api
    assert "Parameters" in api  # napoleon turned the numpydoc sections into field lists
    assert (book / "_static" / "plotly.min.js").stat().st_size > 1_000_000
    assert "cdn.plot.ly" not in (book / "chapters" / "01-codecs.html").read_text()


@slow
@pytest.mark.parametrize("stem", CHAPTERS)
def test_every_exercise_has_a_hidden_solution(book, stem):
    page = (book / "solutions" / f"ch{stem[:2]}.html").read_text()
    assert page.count("<details") == _exercises(stem) > 0
    assert "<details open" not in page
