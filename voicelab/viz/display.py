"""Show a plotly figure in a notebook as an interactive plot *and* a static image.

A chapter ends a figure cell with ``viz.show(fig)``. The output carries:

- ``application/vnd.plotly.v1+json``: what JupyterLab draws (interactive);
- ``text/html``: a static ``<img>`` (PNG, data URI) followed by a plotly ``<div>`` and a
  script that draws the interactive figure and hides the image once ``Plotly`` is on the
  page. Without JavaScript, or where plotly.js is not loaded (``nbconvert --to html``, a
  book page read offline with scripts off), the image stays: the figure is never lost;
- ``image/png``: the same image, for renderers that prefer images;
- ``text/plain``: the figure's title.

The PNG comes from plotly's static exporter (kaleido, which drives a headless Chromium:
Debian package ``chromium``). Without a Chromium, or with ``VOICELAB_STATIC_FIGURES=0``,
the output has no image (a logged warning says why) and everything else works.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import uuid

import plotly.graph_objects as go
import plotly.io as pio

from ..errors import ParameterError, VoicelabError

__all__ = ["FigureOutput", "show", "static_figures_enabled"]

log = logging.getLogger(__name__)


def static_figures_enabled() -> bool:
    """False when ``VOICELAB_STATIC_FIGURES=0`` (no PNG is rendered for :func:`show`)."""
    return os.environ.get("VOICELAB_STATIC_FIGURES", "1") != "0"


def _png(fig: go.Figure, width: int, height: int, scale: float) -> bytes | None:
    from . import _start_server, static_export_available

    if not static_figures_enabled():
        return None
    if not static_export_available():
        log.warning("static figure skipped: no Chromium found (install Debian package 'chromium')")
        return None
    _start_server()
    import kaleido

    try:
        return kaleido.calc_fig_sync(fig, opts={"format": "png", "width": width, "height": height, "scale": scale})
    except Exception as exc:  # kaleido/browser failures carry many types
        raise VoicelabError(f"static rendering of a figure failed: {exc}") from exc


class FigureOutput:
    """A figure as a notebook output (see the module docstring for what it carries).

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
    png : bytes or None
        The static image, or None for none.
    """

    def __init__(self, fig: go.Figure, png: bytes | None) -> None:
        self.fig = fig
        self.png = png

    @property
    def title(self) -> str:
        text = self.fig.layout.title.text if self.fig.layout.title else None
        return text or "figure"

    def html(self) -> str:
        """The ``text/html`` output: static image first, interactive plot over it when it can."""
        fid = f"voicelab-fig-{uuid.uuid4().hex[:12]}"
        parts = ['<div class="voicelab-figure">']
        if self.png is not None:
            src = base64.b64encode(self.png).decode()
            parts.append(
                f'<img class="voicelab-static" alt="{html.escape(self.title)}" '
                f'src="data:image/png;base64,{src}" style="max-width:100%;height:auto"/>'
            )
        spec = pio.to_json(self.fig, validate=False, remove_uids=True)
        parts.append(f'<div id="{fid}" class="voicelab-plotly"></div>')
        parts.append(
            "<script type=\"text/javascript\">(function(){"
            f"var el=document.getElementById(\"{fid}\");"
            "if(!el||!window.Plotly){return;}"
            f"var f={spec};"
            "window.Plotly.newPlot(el,f.data,f.layout,{responsive:true}).then(function(){"
            "var img=el.parentNode.querySelector(\"img.voicelab-static\");if(img){img.style.display=\"none\";}});"
            "})();</script>"
        )
        parts.append("</div>")
        return "".join(parts)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        bundle = {
            "application/vnd.plotly.v1+json": json.loads(pio.to_json(self.fig, validate=False, remove_uids=True)),
            "text/html": self.html(),
            "text/plain": f"<Figure: {self.title}>",
        }
        if self.png is not None:
            bundle["image/png"] = base64.b64encode(self.png).decode()
        return bundle


def show(fig: go.Figure, *, static: go.Figure | None = None, width: int | None = None, height: int | None = None,
         scale: float = 1.0) -> FigureOutput:
    """A figure as a notebook output: interactive, with a static PNG beside it.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
    static : plotly.graph_objects.Figure, optional
        The figure to render as the static image instead of ``fig``: for figures whose
        content needs JavaScript (a slider, an animation), e.g.
        :func:`voicelab.viz.nat.step_storyboard` for a step-through.
    width, height : int, optional
        Size of the static image in CSS pixels; default the figure's own layout size,
        else 900 x 540.
    scale : float
        Pixel density of the PNG (1 = one pixel per CSS pixel).

    Returns
    -------
    FigureOutput
        Display it (the last expression of a cell, or ``display(...)``).

    Raises
    ------
    ParameterError
        When ``fig`` is not a plotly figure.
    VoicelabError
        When the static exporter fails (not when it is absent).
    """
    for f in (fig, static if static is not None else fig):
        if not isinstance(f, go.Figure):
            raise ParameterError(f"viz.show takes a plotly Figure, not {type(f).__name__}")
    still = fig if static is None else static
    w = int(width or still.layout.width or 900)
    h = int(height or still.layout.height or 540)
    return FigureOutput(fig, _png(still, w, h, scale))
