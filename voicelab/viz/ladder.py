"""Ladder (sequence) diagrams of signalling traces.

A trace is a list of messages, each a mapping (or object with attributes) with:

``send_time_s``, ``arrival_time_s`` (None or NaN when lost), ``src``, ``dst`` (party
names), ``label`` (e.g. the SIP first line), and optionally ``retransmission`` (bool).

Time runs downwards; each party is a vertical line; each message an arrow from sender to
receiver, sloped by its transit time. Lost messages end in a cross halfway;
retransmissions are dashed.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import plotly.graph_objects as go

from ..errors import ParameterError

__all__ = ["ladder"]


def _get(m: Any, key: str, default: Any = None) -> Any:
    if isinstance(m, Mapping):
        return m.get(key, default)
    return getattr(m, key, default)


def ladder(
    trace: Iterable[Any],
    *,
    parties: Sequence[str] | None = None,
    title: str = "call ladder",
    time_unit: str = "ms",
    max_label: int = 48,
    spacing: str = "sequence",
) -> go.Figure:
    """Draw a ladder diagram.

    Parameters
    ----------
    trace : iterable
        Messages as described in the module docstring.
    parties : sequence of str, optional
        Column order (default: order of first appearance).
    title : str
    time_unit : {"ms", "s"}
        Unit of the vertical axis.
    max_label : int
        Labels longer than this are shortened.
    spacing : {"sequence", "time"}
        ``"sequence"``: one row per message in send order, send time written beside it
        (readable when delays are tiny next to the call's length); ``"time"``: the
        vertical axis is time itself, arrows sloped by their transit time.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    msgs = list(trace)
    if not msgs:
        raise ParameterError("ladder(): the trace is empty")
    if spacing not in ("sequence", "time"):
        raise ParameterError(f"spacing must be 'sequence' or 'time', got {spacing!r}")
    if time_unit not in ("ms", "s"):
        raise ParameterError(f"time_unit must be 'ms' or 's', got {time_unit!r}")
    scale = 1000.0 if time_unit == "ms" else 1.0
    order: list[str] = list(parties or [])
    for m in msgs:
        for p in (_get(m, "src"), _get(m, "dst")):
            if p is None:
                raise ParameterError("ladder(): every message needs 'src' and 'dst'")
            if p not in order:
                order.append(p)
    x = {p: i for i, p in enumerate(order)}
    t0 = min(float(_get(m, "send_time_s")) for m in msgs)
    t_end = t0
    fig = go.Figure()
    if spacing == "sequence":
        msgs = sorted(msgs, key=lambda m: float(_get(m, "send_time_s")))
    for row, m in enumerate(msgs):
        src, dst = _get(m, "src"), _get(m, "dst")
        ts = (float(_get(m, "send_time_s")) - t0) * scale
        arr = _get(m, "arrival_time_s")
        lost = arr is None or (isinstance(arr, float) and math.isnan(arr))
        # a lost message is drawn 10 ms long, ending in a cross halfway across
        ta = ts + 0.010 * scale if lost else (float(arr) - t0) * scale
        if spacing == "sequence":
            when = f"{ts:.0f} {time_unit}" if time_unit == "ms" else f"{ts:.3f} s"
            transit = "" if lost else f" (+{ta - ts:.0f})" if time_unit == "ms" else ""
            fig.add_annotation(x=-0.45, y=row, text=when + transit, showarrow=False, xanchor="left", font=dict(size=9, color="grey"))
            ts, ta = float(row), row + 0.6
        t_end = max(t_end, ta)
        xs, xd = x[src], x[dst]
        x_end = xs + (xd - xs) * (0.5 if lost else 1.0)
        label = str(_get(m, "label", ""))
        if len(label) > max_label:
            label = label[: max_label - 1] + "…"
        retrans = bool(_get(m, "retransmission", False))
        color = "firebrick" if lost else ("darkorange" if retrans else "royalblue")
        fig.add_trace(
            go.Scatter(
                x=[xs, x_end], y=[ts, ta], mode="lines+markers",
                line=dict(color=color, dash="dash" if retrans else "solid", width=1.5),
                marker=dict(symbol=["circle", "x" if lost else "arrow"], size=[4, 12 if lost else 10],
                            angleref="previous", color=color),
                hovertext=f"{label}<br>sent {ts:.1f} {time_unit}" + ("<br>LOST" if lost else f"<br>arrived {ta:.1f} {time_unit}"),
                hoverinfo="text", showlegend=False,
            )
        )
        fig.add_annotation(
            x=(xs + x_end) / 2, y=(ts + ta) / 2, text=label + (" (lost)" if lost else ""),
            showarrow=False, yshift=8, font=dict(size=10, color=color),
        )
    for p, i in x.items():
        fig.add_shape(type="line", x0=i, x1=i, y0=0, y1=t_end * 1.02 + 1, line=dict(color="grey", width=1))
    fig.update_layout(
        title=title, template="plotly_white", height=max(400, 28 * len(msgs) + 150),
        xaxis=dict(tickmode="array", tickvals=list(x.values()), ticktext=list(x), side="top", range=[-0.5, len(order) - 0.5], showgrid=False),
        yaxis=dict(title=f"time ({time_unit})" if spacing == "time" else "messages in send order (send time, +transit)",
                   autorange="reversed", zeroline=False, showticklabels=spacing == "time"),
    )
    return fig
