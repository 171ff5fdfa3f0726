"""Figures of study summaries: means with their Student-t intervals, labelled as such."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..errors import ParameterError

__all__ = ["summary_figure"]


def summary_figure(summary: pd.DataFrame, metric: str, *, by: Sequence[str] | None = None,
                   level: float = 0.95, title: str | None = None) -> go.Figure:
    """Mean per cell with its Student-t interval as error bars.

    Parameters
    ----------
    summary : pandas.DataFrame
        :func:`voicelab.experiments.stats.summarize` output (``metric``, ``n``, ``mean``,
        ``ci_low``, ``ci_high`` and the grouping columns).
    metric : str
        Which metric to plot.
    by : sequence of str, optional
        Grouping columns; the last one colours the points, the others label the x axis
        (default: every column before ``metric``).
    level : float
        The intervals' level (for the label only).
    title : str, optional
        Figure title (default: the metric).

    Returns
    -------
    plotly.graph_objects.Figure
        The axis title says what the bars are: "mean with 95 % Student-t interval, n = ...".
    """
    if "metric" not in summary.columns:
        raise ParameterError("summary_figure needs a summarize() table (with a 'metric' column)")
    d = summary[summary["metric"] == metric]
    if d.empty:
        known = ", ".join(sorted(summary["metric"].unique()))
        raise ParameterError(f"no metric {metric!r} in the summary; metrics: {known}")
    if by is None:
        by = list(summary.columns[: list(summary.columns).index("metric")])
    by = list(by)
    colour = by[-1] if by else None
    xcols = by[:-1] if len(by) > 1 else by
    fig = go.Figure()
    groups = d.groupby(colour, sort=True, dropna=False) if colour and len(by) > 1 else [(None, d)]
    for name, g in groups:
        x = [" / ".join(f"{c.removeprefix('grid.')}={v}" for c, v in zip(xcols, row)) for row in g[xcols].itertuples(index=False)] if xcols else ["all"] * len(g)
        mean = g["mean"].to_numpy(float)
        hi = np.nan_to_num(g["ci_high"].to_numpy(float) - mean, nan=0.0)
        lo = np.nan_to_num(mean - g["ci_low"].to_numpy(float), nan=0.0)
        fig.add_trace(go.Scatter(
            x=x, y=mean, mode="markers", name=str(name) if name is not None else metric,
            error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo, visible=True),
            customdata=np.c_[g["n"].to_numpy(), g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float)],
            hovertemplate="%{x}<br>mean %{y:.4g} [%{customdata[1]:.4g}, %{customdata[2]:.4g}]<br>n = %{customdata[0]}<extra></extra>",
        ))
    ns = sorted({int(n) for n in d["n"]})
    ntext = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    fig.update_layout(
        title=title or metric,
        yaxis_title=f"{metric}: mean with {level * 100:g} % Student-t interval, n = {ntext}",
        legend_title=colour.removeprefix("grid.") if colour and len(by) > 1 else None,
        template="plotly_white",
    )
    return fig
