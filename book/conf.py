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

# --- MyST-NB: execute every chapter, fail the build on the first error
nb_execution_mode = "force"
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
