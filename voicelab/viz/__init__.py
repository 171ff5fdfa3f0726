"""Plotly figures for results, and their export for publication.

Every figure function returns a :class:`plotly.graph_objects.Figure`; :func:`export`
writes it to ``figures/`` as self-contained HTML (always) and PNG/SVG (when a Chromium
is installed: plotly's static export, kaleido >= 1, drives a headless browser; on Debian
install the package ``chromium``). No file is ever fetched from the network: the HTML
embeds plotly.js and the static exporter is given the local copy and no MathJax.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..errors import ParameterError, VoicelabError
from .ladder import ladder
from .display import FigureOutput, show
from .widgets import headless, interact

__all__ = [
    "show",
    "FigureOutput",
    "ci_halfwidth",
    "ladder",
    "interact",
    "headless",
    "export",
    "static_export_available",
    "metric_vs_param",
    "codec_bars",
    "jitter_buffer_tradeoff",
    "quality_vs_bitrate",
    "emodel_vs_pesq",
    "label_positions",
    "waveforms",
    "LABELS",
    "synthetic_note",
]

log = logging.getLogger(__name__)

#: Axis labels for result columns.
LABELS = {
    "pesq_nb": "PESQ-NB (MOS-LQO)",
    "pesq_wb": "PESQ-WB (MOS-LQO)",
    "mos_cqe": "E-model MOS-CQE",
    "r_factor": "E-model R",
    "stoi": "STOI",
    "mouth_to_ear_ms": "mouth-to-ear delay (ms)",
    "playout_delay_ms": "jitter-buffer delay (ms)",
    "late_loss_rate": "late loss rate",
    "loss_rate": "network loss rate",
    "channel.loss_rate": "configured loss rate",
    "channel.jitter_ms": "jitter (ms)",
    "bitrate_kbps_wire": "bitrate on the wire (kbit/s)",
    "bitrate_kbps": "codec bitrate (kbit/s)",
}

_server_lock = threading.Lock()
_server_started = False


def _browser() -> str | None:
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def static_export_available() -> bool:
    """True when PNG/SVG export can run here (a Chromium is installed)."""
    return _browser() is not None


def _start_server() -> None:
    global _server_started
    with _server_lock:
        if _server_started:
            return
        import kaleido
        import plotly

        plotlyjs = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        os.environ.setdefault("BROWSER_PATH", _browser() or "")
        kaleido.start_sync_server(mathjax=False, plotlyjs=str(plotlyjs), silence_warnings=True)
        atexit.register(lambda: kaleido.stop_sync_server(silence_warnings=True))
        _server_started = True


def export(
    fig: go.Figure,
    name: str,
    *,
    directory: str | os.PathLike = "figures",
    formats: Sequence[str] = ("html", "png", "svg"),
    width: int = 900,
    height: int = 540,
    scale: float = 2.0,
) -> list[Path]:
    """Write a figure for publication.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
    name : str
        File stem (``"pesq_vs_loss"``).
    directory : path
        Output folder, created if needed.
    formats : sequence of {"html", "png", "svg", "pdf"}
        HTML is self-contained (plotly.js embedded, works offline).
    width, height : int
        Static image size in CSS pixels; ``scale`` multiplies PNG resolution.

    Returns
    -------
    list of Path
        The files written. Static formats are skipped with a logged warning when no
        Chromium is installed (Debian package ``chromium``).
    """
    bad = set(formats) - {"html", "png", "svg", "pdf"}
    if bad:
        raise ParameterError(f"unknown figure format(s) {sorted(bad)}; use html, png, svg or pdf")
    if not name or "/" in name:
        raise ParameterError(f"figure name {name!r} must be a plain file stem")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "html" in formats:
        p = out / f"{name}.html"
        fig.write_html(p, include_plotlyjs=True, full_html=True)
        written.append(p)
    static = [f for f in formats if f != "html"]
    if static:
        if not static_export_available():
            log.warning(
                "PNG/SVG export of %s skipped: no Chromium found (install Debian package 'chromium')", name
            )
            return written
        _start_server()
        import kaleido

        for fmt in static:
            p = out / f"{name}.{fmt}"
            try:
                data = kaleido.calc_fig_sync(
                    fig, opts={"format": fmt, "width": width, "height": height, "scale": scale if fmt == "png" else 1}
                )
            except Exception as exc:  # kaleido/browser failures carry many types
                raise VoicelabError(f"static export of {name}.{fmt} failed: {exc}") from exc
            p.write_bytes(data)
            written.append(p)
    return written


def synthetic_note(df_or_flag) -> str | None:
    """The label every figure made from synthetic speech must carry, or None."""
    flag = df_or_flag
    if isinstance(df_or_flag, pd.DataFrame):
        flag = bool(df_or_flag.get("synthetic_speech", pd.Series([False])).fillna(False).any())
    if flag:
        from ..audio import SYNTHETIC_WARNING

        return SYNTHETIC_WARNING
    return None


def _annotate(fig: go.Figure, note: str | None) -> go.Figure:
    if note:
        fig.add_annotation(
            text=note, xref="paper", yref="paper", x=0, y=-0.3, showarrow=False,
            font=dict(size=11, color="firebrick"), xanchor="left", yanchor="top",
        )
        fig.update_layout(margin=dict(b=130))
    return fig


def _summary(df: pd.DataFrame, x: str, y: str, by: Sequence[str]) -> pd.DataFrame:
    cols = [c for c in by if c in df.columns]
    g = df.groupby(cols + [x], dropna=False)[y]
    s = g.agg(["mean", "std", "count"]).reset_index()
    s["ci95"] = ci_halfwidth(s["std"], s["count"])
    return s


def ci_halfwidth(std, count, confidence: float = 0.95):
    """Half-width of the Student-t confidence interval of a mean.

    ``t(1 - (1 - confidence)/2, n - 1) * std / sqrt(n)``: with n = 3 repeats the 95 %
    factor is 4.30, not the normal 1.96 (which only holds for large n).

    Parameters
    ----------
    std : float or array-like
        Sample standard deviation (ddof = 1) of each group.
    count : int or array-like
        Number of samples n of each group.
    confidence : float
        Two-sided confidence level, 0 < confidence < 1.

    Returns
    -------
    float or numpy.ndarray
        The half-width, in the unit of ``std``; 0 where n < 2 (no interval from one
        sample: nothing is drawn).
    """
    from ..experiments.stats import t_halfwidth

    if not 0 < confidence < 1:
        raise ParameterError(f"confidence must be between 0 and 1, not {confidence}")
    return t_halfwidth(std, count, confidence)


def metric_vs_param(
    df: pd.DataFrame,
    *,
    x: str = "channel.loss_rate",
    y: str = "pesq_nb",
    color: str | Sequence[str] = "codec",
    title: str | None = None,
    percent_x: bool | None = None,
) -> go.Figure:
    """Mean metric vs one parameter, one line per group, 95 % CI bars over repeats."""
    for c in [x, y]:
        if c not in df.columns:
            raise ParameterError(f"column {c!r} not in results; have {sorted(df.columns)}")
    by = [color] if isinstance(color, str) else list(color)
    s = _summary(df, x, y, by)
    if percent_x is None:
        percent_x = "loss" in x
    fig = go.Figure()
    groups = s.groupby(by, dropna=False) if by else [((), s)]
    for key, part in groups:
        label = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        xs = part[x] * (100 if percent_x else 1)
        fig.add_trace(
            go.Scatter(
                x=xs, y=part["mean"], name=label or y, mode="lines+markers",
                error_y=dict(type="data", array=part["ci95"], visible=bool((part["count"] > 1).any())),
            )
        )
    fig.update_layout(
        title=title or f"{LABELS.get(y, y)} vs {LABELS.get(x, x)}",
        xaxis_title=LABELS.get(x, x) + (" (%)" if percent_x and "(%)" not in LABELS.get(x, x) else ""),
        yaxis_title=LABELS.get(y, y),
        template="plotly_white",
        legend_title_text=", ".join(by),
    )
    return _annotate(fig, synthetic_note(df))


def codec_bars(df: pd.DataFrame, *, metrics: Sequence[str] = ("pesq_nb", "pesq_wb"), by: str = "codec", title: str | None = None) -> go.Figure:
    """Grouped bars of metrics per codec (mean over rows)."""
    fig = go.Figure()
    for m in metrics:
        if m not in df.columns:
            continue
        s = df.groupby(by, sort=False)[m].mean()
        fig.add_trace(go.Bar(x=s.index.astype(str), y=s.values, name=LABELS.get(m, m), text=[f"{v:.2f}" if pd.notna(v) else "" for v in s.values], textposition="outside"))
    fig.update_layout(barmode="group", title=title or "Quality per codec", template="plotly_white", yaxis_title="score")
    return _annotate(fig, synthetic_note(df))


def jitter_buffer_tradeoff(df: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Late loss vs playout delay, one marker per jitter-buffer setting."""
    for c in ("playout_delay_ms", "late_loss_rate", "jitter_buffer"):
        if c not in df.columns:
            raise ParameterError(f"column {c!r} not in results")
    s = df.groupby("jitter_buffer", sort=False)[["playout_delay_ms", "late_loss_rate", "mouth_to_ear_ms"]].mean().reset_index()
    fig = go.Figure(
        go.Scatter(
            x=s["playout_delay_ms"], y=s["late_loss_rate"] * 100, text=s["jitter_buffer"],
            mode="markers+text", textposition="top center", marker=dict(size=12),
        )
    )
    fig.update_layout(
        title=title or "Jitter buffer: delay vs late loss",
        xaxis_title="mean jitter-buffer delay (ms)", yaxis_title="late loss (%)", template="plotly_white",
    )
    return _annotate(fig, synthetic_note(df))


def waveforms(reference: np.ndarray, degraded: np.ndarray, sample_rate: int, *, title: str = "sent vs received", max_points: int = 20000) -> go.Figure:
    """Sent and received waveforms on one time axis (decimated for display)."""
    n = max(len(reference), len(degraded))
    step = max(1, n // max_points)
    fig = go.Figure()
    for sig, name in ((reference, "sent"), (degraded, "received")):
        t = np.arange(0, len(sig), step) / sample_rate
        fig.add_trace(go.Scattergl(x=t, y=sig[::step], name=name, mode="lines", line=dict(width=1)))
    fig.update_layout(title=title, xaxis_title="time (s)", yaxis_title="amplitude", template="plotly_white")
    return fig


_POSITIONS = ("top center", "bottom center", "middle right", "middle left", "top right", "bottom left",
              "top left", "bottom right")


def label_positions(x: Sequence[float], y: Sequence[float], *, near: tuple[float, float] = (0.15, 0.06)) -> list[str]:
    """Text positions for point labels so that labels of nearby points do not overlap.

    Points are visited left to right; a point takes the first position of
    ``top center, bottom center, middle right, middle left, ...`` that no earlier point
    within ``near`` already uses.

    Parameters
    ----------
    x, y : sequence of float
        Point coordinates (NaN points get ``"top center"``).
    near : (float, float)
        Neighbourhood, as fractions of the x and the y span (wider in x: labels are
        wider than tall).

    Returns
    -------
    list of str
        One plotly ``textposition`` per point, in input order.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    span_x = float(np.ptp(xs[ok])) if ok.sum() > 1 else 1.0
    span_y = float(np.ptp(ys[ok])) if ok.sum() > 1 else 1.0
    span_x, span_y = span_x or 1.0, span_y or 1.0
    out = ["top center"] * len(xs)
    placed: list[int] = []
    for i in sorted(np.flatnonzero(ok), key=lambda k: (xs[k], ys[k])):
        used = {out[j] for j in placed
                if abs(xs[j] - xs[i]) <= near[0] * span_x and abs(ys[j] - ys[i]) <= near[1] * span_y}
        out[i] = next((p for p in _POSITIONS if p not in used), "top center")
        placed.append(int(i))
    return out


def quality_vs_bitrate(
    df: pd.DataFrame, *, x: str = "bitrate_kbps_wire", y: str = "pesq_wb", label: str = "codec",
    title: str = "Quality per bit on the wire",
) -> go.Figure:
    """One labelled marker per codec mode: quality against bits on the wire.

    Labels of points that fall close together (PCMU and PCMA, Opus 24k and 32k) are
    placed on different sides (:func:`label_positions`).
    """
    for c in (x, y, label):
        if c not in df.columns:
            raise ParameterError(f"column {c!r} not in results; have {sorted(df.columns)}")
    d = df[[x, y, label]].dropna()
    fig = go.Figure(go.Scatter(
        x=d[x], y=d[y], text=d[label].astype(str), mode="markers+text", marker=dict(size=9),
        textposition=label_positions(d[x], d[y]), cliponaxis=False, showlegend=False,
    ))
    xlabel = "bitrate on the wire incl. IPv4/UDP/RTP (kbit/s)" if x == "bitrate_kbps_wire" else LABELS.get(x, x)
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=LABELS.get(y, y), template="plotly_white")
    return _annotate(fig, synthetic_note(df))


def emodel_vs_pesq(df: pd.DataFrame, *, x: str = "channel.loss_rate", by: str = "variant",
                   title: str = "E-model prediction vs PESQ") -> go.Figure:
    """Measured PESQ-NB (solid, with 95 % Student-t intervals) next to the E-model's MOS-CQE
    (dashed), per group, against a loss-like parameter.

    Parameters
    ----------
    df : pandas.DataFrame
        Sweep results with ``pesq_nb``, ``mos_cqe``, ``x`` and ``by`` columns.
    x : str
        The swept column; loss rates (0..1) are drawn in percent.
    by : str
        One pair of lines per value of this column.
    title : str

    Returns
    -------
    plotly.graph_objects.Figure
    """
    for c in (x, by, "pesq_nb", "mos_cqe"):
        if c not in df.columns:
            raise ParameterError(f"column {c!r} not in results; have {sorted(df.columns)}")
    scale = 100.0 if "loss" in x else 1.0
    fig = go.Figure()
    for k, (label, part) in enumerate(df.groupby(by, sort=False)):
        color = _PALETTE[k % len(_PALETTE)]
        s = _summary(part, x, "pesq_nb", [])
        e = part.groupby(x)["mos_cqe"].mean().reset_index()
        fig.add_trace(go.Scatter(x=s[x] * scale, y=s["mean"], name=f"{label}: PESQ-NB", mode="lines+markers",
                                 line=dict(color=color), legendgroup=str(label),
                                 error_y=dict(type="data", array=s["ci95"], visible=bool((s["count"] > 1).any()))))
        fig.add_trace(go.Scatter(x=e[x] * scale, y=e["mos_cqe"], name=f"{label}: E-model", mode="lines",
                                 line=dict(color=color, dash="dash"), legendgroup=str(label)))
    fig.update_layout(title=title, xaxis_title=LABELS.get(x, x) + (" (%)" if scale == 100.0 else ""),
                      yaxis_title="MOS", template="plotly_white")
    return _annotate(fig, synthetic_note(df))


_PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")
