"""Figures of real-world paths: per-hop delay against the G.114 budget, and the cost of a path."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
import plotly.graph_objects as go

from ..errors import ParameterError

__all__ = ["hop_delays", "path_costs"]

_HOW_COLOURS = {"modelled": "#b0b7c3", "measured (sim)": "#2a6fdb", "measured (live)": "#e4572e"}


def hop_delays(paths: Mapping[str, Any], *, budget_ms: float = 150.0, title: str | None = None) -> go.Figure:
    """One horizontal stacked bar per path: each hop's one-way delay, coloured by how it was obtained.

    Parameters
    ----------
    paths : mapping
        Path name -> its hop table (a DataFrame or list of dicts with ``hop``, ``delay_ms``,
        ``how``), e.g. ``simulate_path(...).hops`` or ``path_call(...)["hops"]``.
    budget_ms : float
        The ITU-T G.114 one-way budget drawn as a line (150 ms).
    """
    if not paths:
        raise ParameterError("give at least one path")
    fig = go.Figure()
    seen: set[str] = set()
    names = list(paths)
    for name in names:
        table = paths[name]
        df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))
        for _, h in df.iterrows():
            if h["delay_ms"] is None or pd.isna(h["delay_ms"]):
                continue
            how = str(h["how"])
            fig.add_trace(go.Bar(y=[name], x=[float(h["delay_ms"])], orientation="h", name=how,
                                 legendgroup=how, showlegend=how not in seen,
                                 marker_color=_HOW_COLOURS.get(how, "#666"),
                                 marker_line=dict(color="white", width=1),
                                 hovertemplate=f"{h['hop']}<br>%{{x:.1f}} ms ({how})<extra></extra>"))
            seen.add(how)
    fig.add_vline(x=budget_ms, line_dash="dash", line_color="black",
                  annotation_text=f"G.114: {budget_ms:g} ms one way", annotation_position="top")
    fig.update_layout(barmode="stack", title=title or "One-way delay, hop by hop (colour: how each hop's figure was obtained)",
                      xaxis_title="one-way delay (ms)", yaxis=dict(autorange="reversed"), height=140 + 60 * len(names),
                      legend_title_text="hop figure", margin=dict(l=10, r=10, t=60, b=40))
    return fig


def path_costs(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Cost per 1,000 minutes per path, stacked by component (from :func:`voicelab.cost.cost_table`)."""
    need = {"path", "carrier", "turn", "egress", "prices_label"}
    if not need <= set(table.columns):
        raise ParameterError(f"the table needs columns {sorted(need)}")
    fig = go.Figure()
    for comp, colour in (("carrier", "#6c4ab6"), ("turn", "#e4572e"), ("egress", "#2a6fdb")):
        fig.add_trace(go.Bar(x=table["path"], y=table[comp], name=comp, marker_color=colour))
    label = str(table["prices_label"].iloc[0]) if len(table) else ""
    fig.update_layout(barmode="stack", title=title or f"Cost per 1,000 minutes ({label})",
                      yaxis_title="cost per 1,000 min (price units)", xaxis_tickangle=-20,
                      margin=dict(l=10, r=10, t=60, b=120))
    return fig
