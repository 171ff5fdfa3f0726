"""Figures of an RTP stream: transit time per packet, RFC 3550 jitter, lost packets."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import ParameterError
from ..rtp.virtual import rfc3550_jitter_ms

__all__ = ["transit_jitter_figure"]


def transit_jitter_figure(packets: pd.DataFrame, *, clock_rate: int = 8000,
                          title: str = "Transit time and interarrival jitter") -> go.Figure:
    """One direction of an RTP call: transit time, the receiver's jitter, lost packets.

    Three rows on one time axis, each with its own y axis in its own unit: the transit
    time of every received packet (ms); the RFC 3550 A.8 interarrival jitter the
    receiver computes (ms, from 0); and a strip with one mark per lost packet at its send
    time (a lost packet has no transit time, so it is not drawn on the transit axis).

    Parameters
    ----------
    packets : pandas.DataFrame
        One direction of :attr:`voicelab.rtp.virtual.RtpCallResult.packets`: columns
        ``send_time_s``, ``arrival_time_s`` (NaN when lost) and ``transit_ms``.
    clock_rate : int
        RTP clock rate of the stream in Hz (8000 for G.711).
    title : str

    Returns
    -------
    plotly.graph_objects.Figure
    """
    for c in ("send_time_s", "arrival_time_s", "transit_ms"):
        if c not in packets.columns:
            raise ParameterError(f"column {c!r} not in the packet table; have {sorted(packets.columns)}")
    rec = packets.dropna(subset=["arrival_time_s"]).sort_values("arrival_time_s")
    lost = packets[packets["arrival_time_s"].isna()]
    jitter = rfc3550_jitter_ms(rec["transit_ms"].to_numpy() / 1000.0, clock_rate)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, row_heights=[0.55, 0.33, 0.12], vertical_spacing=0.05)
    fig.add_trace(go.Scatter(x=rec["send_time_s"], y=rec["transit_ms"], mode="markers", marker=dict(size=3),
                             name="transit of a received packet"), row=1, col=1)
    fig.add_trace(go.Scatter(x=rec["arrival_time_s"], y=jitter, mode="lines", name="RFC 3550 jitter"), row=2, col=1)
    fig.add_trace(go.Scatter(x=lost["send_time_s"], y=[0] * len(lost), mode="markers",
                             marker=dict(symbol="line-ns-open", size=14, color="firebrick"),
                             name=f"lost packet ({len(lost)}), at its send time"), row=3, col=1)
    fig.update_yaxes(title_text="transit (ms)", row=1, col=1)
    fig.update_yaxes(title_text="jitter (ms)", rangemode="tozero", tickformat=".1f", nticks=5, row=2, col=1)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, title_text="lost", range=[-1, 1], row=3, col=1)
    fig.update_xaxes(title_text="time (s)", row=3, col=1)
    fig.update_layout(title=title, template="plotly_white", legend=dict(orientation="h", y=-0.18), height=600)
    return fig
