"""Sphinx + MyST-NB configuration of the voicelab book (``make book``).

The chapters are the notebooks of ``notebooks/``, copied into ``book/chapters/`` (not in
git) when the build starts (a symlink would make MyST resolve the chapters' links to each
other against ``notebooks/``, outside the book), executed at build time: quick mode with ``VOICELAB_QUICK=1`` (CI), full mode otherwise.
Everything works offline: plotly.js is copied from the installed plotly package, no CDN.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import plotly

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

# The kernels that execute the chapters inherit this environment.
os.environ.setdefault("VOICELAB_NO_WIDGETS", "1")  # widgets run once with their defaults
os.environ.setdefault("VOICELAB_FIGURES", str(REPO / "build" / "book-figures"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
QUICK = os.environ.get("VOICELAB_QUICK") == "1"

# The chapters: the notebooks, copied (only the .ipynb; the .md twins are the same cells)
_chapters = HERE / "chapters"
_chapters.mkdir(exist_ok=True)
for _old in _chapters.glob("*.ipynb"):
    if not (REPO / "notebooks" / _old.name).exists():
        _old.unlink()
for _nb in sorted((REPO / "notebooks").glob("*.ipynb")):
    shutil.copy2(_nb, _chapters / _nb.name)

project = "voicelab: real-time voice, hands on"
author = "the voicelab authors"
copyright = "the voicelab authors"
release = ""

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build", "chapters/.ipynb_checkpoints"]
# the plotly JSON output is for JupyterLab; the book shows the text/html one (image + plot)
suppress_warnings = ["mystnb.unknown_mime_type"]
# VOICELAB_BOOK_CHAPTERS="01 03" builds only those chapters (the others are left out of the build)
_only = os.environ.get("VOICELAB_BOOK_CHAPTERS", "").split()
if _only:
    exclude_patterns += [
        f"chapters/{p.name}" for p in sorted((REPO / "notebooks").glob("*.ipynb")) if p.name[:2] not in _only
    ]
    suppress_warnings += ["toc.excluded", "toc.not_readable"]

# --- Execution: every chapter the build reads is executed, and a failing cell fails the build.
# VOICELAB_BOOK_JOBS chapters at once (default: 2 in quick mode, where the chapters'
# numbers are a smoke test and much of the time is waiting on real-time calls; 1 in full
# mode, whose live measurements should not share the cores with another chapter): before
# Sphinx reads them (the env-before-read-docs event), each in its own kernel, longest
# first (by the "Run time" its opening states); the executed notebooks replace the copies
# in book/chapters/ and MyST-NB renders their outputs (execution mode "off").
# VOICELAB_BOOK_JOBS=1: MyST-NB executes them one after another itself ("force"). Both
# run a kernel with cwd book/chapters/, the same per-cell timeout, and stop a chapter at
# its first error; any failed chapter fails the build.
JOBS = max(1, int(os.environ.get("VOICELAB_BOOK_JOBS") or (2 if QUICK else 1)))
nb_execution_mode = "force" if JOBS == 1 else "off"
nb_execution_timeout = 1800  # per cell: full-mode chapter 6 runs its NAT matrix in one cell
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "deflist", "html_image"]
myst_heading_anchors = 3

# --- API pages: autodoc + napoleon (numpydoc docstrings)
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes" sections as fields (dataclass attributes are documented once)

# --- HTML: the stock theme, plotly.js served from the book itself (offline)
html_theme = "alabaster"
html_title = "voicelab book"
html_theme_options = {"description": "SIP/RTP, WebRTC and WebSocket voice, measured", "sidebar_width": "250px",
                      "page_width": "1150px"}
_static = REPO / "build" / "book-static"
_static.mkdir(parents=True, exist_ok=True)
shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", _static / "plotly.min.js")
html_static_path = [str(_static)]
html_js_files = ["plotly.min.js"]
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}


def _stated_run_time_s(nb_path: Path) -> float:
    """The quick- (or full-) mode run time a chapter's opening states, in s (0 if none)."""
    import re

    text = (REPO / "notebooks" / nb_path.with_suffix(".md").name).read_text()
    mode = "quick" if QUICK else "full"
    m = re.search(rf"about (\d+(?:\.\d+)?) (s|min) in {mode} mode", text)
    return float(m.group(1)) * (60 if m.group(2) == "min" else 1) if m else 0.0


def _execute_chapters(app, env, docnames) -> None:
    """Execute the chapters about to be read, ``JOBS`` at a time (each stops at its first failing cell).

    Raises ``ExtensionError`` (the build fails) naming every chapter that failed, with its traceback.
    """
    from concurrent.futures import ThreadPoolExecutor

    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution  # what MyST-NB's "force" mode calls
    from sphinx.errors import ExtensionError
    from sphinx.util import logging

    paths = [_chapters / f"{d.split('/', 1)[1]}.ipynb" for d in docnames if d.startswith("chapters/")]
    paths.sort(key=_stated_run_time_s, reverse=True)

    def run(path: Path):
        nb = nbformat.read(path, as_version=4)
        result = single_nb_execution(nb, cwd=str(_chapters), allow_errors=False, timeout=nb_execution_timeout,
                                     meta_override=True)
        if result.err is None:
            nbformat.write(nb, path)
        return path, result

    log = logging.getLogger("voicelab.book")
    failed = []
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        for path, result in pool.map(run, paths):
            if result.err is not None:
                failed.append(f"{path.stem}: {result.err.__class__.__name__}\n{result.exc_string}")
            else:
                log.info(f"executed {path.stem} in {result.time:.1f} s")
    if failed:
        raise ExtensionError("executing chapters failed:\n" + "\n".join(failed))


def setup(app):
    if JOBS > 1:
        app.connect("env-before-read-docs", _execute_chapters)
    return {"parallel_read_safe": True}
