"""Figures of WebRTC calls and of the transport comparison (chapter 5).

Each function takes what :func:`voicelab.webrtc.call.webrtc_call`,
:func:`voicelab.compare.compare_transports` or :func:`voicelab.compare.opus_bitrate_sweep`
returned and builds a :class:`plotly.graph_objects.Figure`; save it with
:func:`voicelab.viz.export`. Figures made from synthetic speech carry the lab's warning.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import ParameterError

__all__ = [
    "SETUP_PHASES",
    "setup_phases",
    "setup_timeline",
    "candidate_frame",
    "candidate_table",
    "getstats_figure",
    "opus_sweep_figure",
    "transport_comparison",
]

#: Phases of a WebRTC call's setup: (label, start event, end event) of a peer's timeline.
SETUP_PHASES = (
    ("ICE gathering", "gather:gathering", "gather:completed"),
    ("ICE connectivity checks", "ice:checking", "ice:completed"),
    ("DTLS handshake", "dtls:connecting", "dtls:connected"),
)

_COLORS = {
    "ICE gathering": "#4c78a8",
    "ICE connectivity checks": "#f58518",
    "DTLS handshake": "#54a24b",
    "until media starts": "#bab0ac",
    "first audio in flight": "#b279a2",
    "sip": "#4c78a8",
    "webrtc": "#f58518",
    "ws": "#54a24b",
}

_PEERS = ("caller", "agent")
_INCOMING = {"caller": "agent_to_caller", "agent": "caller_to_agent"}


def _annotated(fig: go.Figure, data: Any) -> go.Figure:
    from . import _annotate, synthetic_note  # late: voicelab.viz may import this module

    return _annotate(fig, synthetic_note(data))


def _check_call(result: Any, *keys: str) -> Mapping[str, Any]:
    if not isinstance(result, Mapping):
        raise ParameterError(f"expected a call result dict (from webrtc_call), got {type(result).__name__}")
    missing = [k for k in keys if k not in result]
    if missing:
        raise ParameterError(f"the call result has no {missing}: pass what voicelab.webrtc.call.webrtc_call returned")
    return result


def setup_phases(result: Mapping[str, Any]) -> pd.DataFrame:
    """The setup phases of a WebRTC call, one row per (peer, phase), times from the offer.

    Parameters
    ----------
    result : dict
        A :func:`~voicelab.webrtc.call.webrtc_call` result (``timeline``,
        ``media_start_ms`` and the per-direction ``mouth_to_ear_ms``).

    Returns
    -------
    pandas.DataFrame
        ``peer``, ``phase``, ``start_ms``, ``end_ms``, ``duration_ms``. Phases:
        :data:`SETUP_PHASES`, then "until media starts" (``connected`` -> the first
        frame captured: the lab starts media 50 ms after both peers are connected) and
        "first audio in flight" (first frame captured -> heard by the peer: the
        direction's mouth-to-ear delay). A phase whose events are missing is left out.
    """
    r = _check_call(result, "timeline")
    first: dict[tuple[str, str], float] = {}
    for e in r["timeline"]:
        try:
            key = (str(e["peer"]), str(e["event"]))
            t = float(e["t_ms"])
        except (KeyError, TypeError, ValueError):
            raise ParameterError(f"timeline entries need 't_ms', 'peer' and 'event', got {e!r}") from None
        first.setdefault(key, t)
    rows = []
    for peer in _PEERS:
        for label, start, end in SETUP_PHASES:
            a, b = first.get((peer, start)), first.get((peer, end))
            if a is not None and b is not None and b >= a:
                rows.append({"peer": peer, "phase": label, "start_ms": a, "end_ms": b})
        connected = first.get((peer, "connection:connected"))
        media = r.get("media_start_ms")
        if connected is not None and media is not None and media >= connected:
            rows.append({"peer": peer, "phase": "until media starts", "start_ms": connected, "end_ms": float(media)})
        m2e = r.get(f"{_INCOMING[peer]}.mouth_to_ear_ms")
        if media is not None and m2e is not None:
            rows.append({"peer": peer, "phase": "first audio in flight", "start_ms": float(media),
                         "end_ms": float(media) + float(m2e)})
    df = pd.DataFrame(rows, columns=["peer", "phase", "start_ms", "end_ms"])
    df["duration_ms"] = df["end_ms"] - df["start_ms"]
    return df


def setup_timeline(result: Mapping[str, Any], *, title: str | None = None) -> go.Figure:
    """Gantt-like bars of a WebRTC call's setup: gathering, checks, DTLS, first audio.

    Parameters
    ----------
    result : dict
        A :func:`~voicelab.webrtc.call.webrtc_call` result.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
        One row per peer, time in ms from the caller's ``createOffer``; a dotted line
        where the caller is connected (``setup_ms``).

    See Also
    --------
    setup_phases : the same numbers as a table.
    """
    ph = setup_phases(result)
    if ph.empty:
        raise ParameterError("the call's timeline has none of the setup events (gather:*, ice:*, dtls:*)")
    fig = go.Figure()
    for label in list(dict.fromkeys(ph["phase"])):
        part = ph[ph["phase"] == label]
        fig.add_trace(go.Bar(
            y=part["peer"], x=part["duration_ms"], base=part["start_ms"], orientation="h", name=label,
            marker_color=_COLORS.get(label),
            customdata=part[["start_ms", "end_ms"]].to_numpy(),
            hovertemplate="%{y}: " + label + " %{customdata[0]:.1f} -> %{customdata[1]:.1f} ms "
                          "(%{x:.1f} ms)<extra></extra>",
        ))
    setup = result.get("setup_ms")
    if setup is not None:
        fig.add_vline(x=float(setup), line_dash="dot", line_color="black",
                      annotation_text=f"caller connected {float(setup):.0f} ms", annotation_position="top")
    path = result.get("ice_path") or {}
    what = f"{result.get('codec', '?')}, ICE path {path.get('caller', '?')}/{path.get('agent', '?')}"
    fig.update_layout(
        title=title or f"WebRTC call setup ({what})", barmode="overlay", template="plotly_white",
        xaxis_title="time since the offer was created (ms)", yaxis=dict(categoryorder="array", categoryarray=list(_PEERS)[::-1]),
        legend=dict(orientation="h", y=-0.2),
    )
    return _annotated(fig, bool(result.get("synthetic_speech", False)))


def candidate_frame(result: Mapping[str, Any]) -> pd.DataFrame:
    """The selected ICE candidate pair of each peer, with its transport counters.

    Parameters
    ----------
    result : dict
        A :func:`~voicelab.webrtc.call.webrtc_call` result (``selected_pair``,
        ``getstats``).

    Returns
    -------
    pandas.DataFrame
        One row per peer: ``local_type``, ``local_address``, ``remote_type``,
        ``remote_address`` (host/srflx/prflx/relay and ``ip:port``), ``packets_sent``,
        ``bytes_sent`` (RTP payload octets), ``transport_bytes_sent`` (DTLS/SRTP layer),
        ``rtt_ms`` (getStats, RTCP round trip).
    """
    r = _check_call(result, "selected_pair")
    stats = r.get("getstats") or {}
    rows = []
    for peer in _PEERS:
        pair = (r["selected_pair"] or {}).get(peer) or {}
        loc, rem = pair.get("local") or {}, pair.get("remote") or {}
        st = stats.get(peer) or {}
        rows.append({
            "peer": peer,
            "local_type": loc.get("type"), "local_address": f"{loc.get('host')}:{loc.get('port')}" if loc else None,
            "remote_type": rem.get("type"), "remote_address": f"{rem.get('host')}:{rem.get('port')}" if rem else None,
            "packets_sent": st.get("packets_sent"), "bytes_sent": st.get("bytes_sent"),
            "transport_bytes_sent": st.get("transport_bytes_sent"), "rtt_ms": st.get("rtt_ms"),
        })
    return pd.DataFrame(rows)


def candidate_table(result: Mapping[str, Any], *, title: str | None = None) -> go.Figure:
    """:func:`candidate_frame` as a plotly table (for export next to the other figures)."""
    df = candidate_frame(result)

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return "-"
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    header = ["peer", "local candidate", "local address", "remote candidate", "remote address",
              "RTP packets sent", "payload bytes", "DTLS/SRTP bytes", "RTT (ms)"]
    cells = [[fmt(v) for v in df[c]] for c in df.columns]
    fig = go.Figure(go.Table(header=dict(values=header, fill_color="#eeeeee", align="left"),
                             cells=dict(values=cells, align="left")))
    fig.update_layout(title=title or "Selected ICE candidate pairs", template="plotly_white", height=260)
    return fig


def _is_call(obj: Any) -> bool:
    return isinstance(obj, Mapping) and ("transport" in obj or "timeline" in obj or "getstats" in obj)


def getstats_figure(results: Any, *, title: str | None = None) -> go.Figure:
    """getStats numbers of one or more WebRTC calls.

    Parameters
    ----------
    results : dict or dict of str to dict
        A :func:`~voicelab.webrtc.call.webrtc_call` result, or ``{label: result}``
        for several calls side by side (e.g. ``{"clean": r1, "2 % loss": r2}``).
        When a result has ``getstats_series`` (a list of ``{"t_ms", "peer",
        "jitter_ms", "packets_lost", "rtt_ms"}`` samples taken during the call), the
        figure shows them over time; otherwise (what ``webrtc_call`` returns today: one
        report per peer at the end of the call) it shows the final jitter, loss and RTT
        of each direction as bars.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    calls = {"call": results} if _is_call(results) else results
    if not isinstance(calls, Mapping) or not calls or not all(_is_call(r) for r in calls.values()):
        raise ParameterError("getstats_figure needs a webrtc_call result or a dict {label: result}")
    series = [(label, r) for label, r in calls.items() if r.get("getstats_series")]
    metrics = (("jitter_ms", "jitter (ms)"), ("loss_pct", "packets lost (%)"), ("rtt_ms", "RTT (ms)"))
    synthetic = any(bool(r.get("synthetic_speech", False)) for r in calls.values())
    if series:
        fig = make_subplots(rows=3, cols=1, shared_xaxes=True, subplot_titles=[m[1] for m in metrics])
        colors: dict[str, str] = {}  # one colour per legend entry, the same in all three panels
        for label, r in series:
            s = pd.DataFrame(list(r["getstats_series"]))
            for col in ("t_ms", "peer"):
                if col not in s.columns:
                    raise ParameterError(f"getstats_series samples need {col!r}")
            for peer, part in s.groupby("peer", sort=False):
                part = part.sort_values("t_ms")
                name = f"{label}: {peer} receives" if len(calls) > 1 else f"{peer} receives"
                if "packets_lost" in part and "packets_received" in part:
                    tot = (part["packets_lost"].clip(lower=0) + part["packets_received"]).where(lambda v: v > 0)
                    part = part.assign(loss_pct=100.0 * part["packets_lost"].clip(lower=0) / tot)
                for i, (col, _) in enumerate(metrics, start=1):
                    if col in part:
                        color = colors.setdefault(name, _color(len(colors)))
                        fig.add_trace(go.Scatter(x=part["t_ms"] / 1000.0, y=part[col], mode="lines+markers", name=name,
                                                 legendgroup=name, showlegend=i == 1, line=dict(color=color),
                                                 marker=dict(color=color)), row=i, col=1)
        fig.update_xaxes(title_text="time since the offer (s)", row=3, col=1)
        fig.update_layout(title=title or "getStats() during the call", template="plotly_white", height=640,
                          legend=dict(title_text="all three panels", orientation="h", y=-0.12))
        return _annotated(fig, synthetic)
    rows = []
    for label, r in calls.items():
        for d in ("caller_to_agent", "agent_to_caller"):
            loss = r.get(f"{d}.loss_rate")
            rows.append({"call": label, "direction": d.replace("_", " "),
                         "jitter_ms": r.get(f"{d}.jitter_ms"),
                         "loss_pct": None if loss is None else 100.0 * loss,
                         "rtt_ms": r.get(f"{d}.rtt_ms")})
    df = pd.DataFrame(rows)
    fig = make_subplots(rows=1, cols=3, subplot_titles=[m[1] for m in metrics])
    for k, (label, part) in enumerate(df.groupby("call", sort=False)):
        for i, (col, _) in enumerate(metrics, start=1):
            fig.add_trace(go.Bar(x=part["direction"], y=part[col], name=str(label), legendgroup=str(label),
                                 showlegend=i == 1, marker_color=_color(k),
                                 text=[("" if pd.isna(v) else f"{v:.1f}") for v in part[col]], textposition="outside"),
                          row=1, col=i)
    fig.update_layout(title=title or "getStats() at the end of the call, per receiving direction", barmode="group",
                      template="plotly_white", legend=dict(title_text="all three panels", orientation="h", y=-0.25))
    return _annotated(fig, synthetic)


def _color(i: int) -> str:
    """The i-th colour of the lab's figure palette."""
    palette = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d")
    return palette[i % len(palette)]


def _require(df: Any, cols: Sequence[str], what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise ParameterError(f"{what} needs a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ParameterError(f"{what}: columns {missing} not in the results; have {sorted(df.columns)}")
    if df.empty:
        raise ParameterError(f"{what}: the results are empty")
    return df


def opus_sweep_figure(df: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Opus over WebRTC: PESQ-WB vs bit rate, with payload and wire bit rates.

    Parameters
    ----------
    df : pandas.DataFrame
        :func:`voicelab.compare.opus_bitrate_sweep` results (means over directions are
        plotted). Rows with ``mode == "aiortc-defaults"`` appear as one extra marker.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
        PESQ-WB on the left axis; the payload the encoder produced and what the packets
        cost on the wire (kbit/s) on the right; the x axis is the bit rate asked for
        (log scale).
    """
    _require(df, ["bitrate", "pesq_wb", "payload_kbps", "bitrate_kbps_wire"], "opus_sweep_figure")
    mode = df["mode"] if "mode" in df.columns else pd.Series(["lab"] * len(df), index=df.index)
    cols = ["pesq_wb", "payload_kbps", "bitrate_kbps_wire"]
    lab = df[mode == "lab"].groupby("bitrate")[cols].mean().reset_index().sort_values("bitrate")
    base = df[mode == "aiortc-defaults"].groupby("bitrate")[cols].mean().reset_index()
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x = lab["bitrate"] / 1000.0
    fig.add_trace(go.Scatter(x=x, y=lab["pesq_wb"], name="PESQ-WB (lab Opus)", mode="lines+markers",
                             marker=dict(size=9), line=dict(color=_color(0), width=3)), secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=lab["payload_kbps"], name="payload (kbit/s)", mode="lines+markers",
                             line=dict(color=_color(2), dash="dash")), secondary_y=True)
    fig.add_trace(go.Scatter(x=x, y=lab["bitrate_kbps_wire"], name="on the wire (kbit/s)", mode="lines+markers",
                             line=dict(color=_color(3), dash="dot")), secondary_y=True)
    if not base.empty:
        fig.add_trace(go.Scatter(x=base["bitrate"] / 1000.0, y=base["pesq_wb"], mode="markers",
                                 name="PESQ-WB, plain aiortc (96 kbit/s)",
                                 marker=dict(symbol="diamond", size=12, color=_color(1))), secondary_y=False)
        fig.add_trace(go.Scatter(x=base["bitrate"] / 1000.0, y=base["bitrate_kbps_wire"], mode="markers",
                                 name="plain aiortc on the wire (kbit/s)",
                                 marker=dict(symbol="diamond-open", size=12, color=_color(3))), secondary_y=True)
    ticks = sorted(set(x.tolist()) | set((base["bitrate"] / 1000.0).tolist()))
    fig.update_xaxes(type="log", title_text="Opus bit rate asked for (kbit/s)", tickvals=ticks,
                     ticktext=[f"{t:g}" for t in ticks])
    fig.update_yaxes(title_text="PESQ-WB (MOS-LQO)", secondary_y=False, range=[1.0, 4.7])
    top = pd.concat([lab["payload_kbps"], lab["bitrate_kbps_wire"], base["bitrate_kbps_wire"]]).max()
    top = float(top) * 1.1 if pd.notna(top) and top > 0 else None
    fig.update_yaxes(title_text="bit rate (kbit/s)", secondary_y=True, showgrid=False, tickmode="auto",
                     range=[0, top] if top else None, rangemode="tozero")
    fig.update_layout(title=title or "Opus over WebRTC: quality vs bit rate", template="plotly_white",
                      legend=dict(orientation="h", y=-0.2))
    return _annotated(fig, df)


def transport_comparison(
    df: pd.DataFrame,
    *,
    metrics: Sequence[str] = ("mouth_to_ear_ms", "pesq_nb"),
    title: str | None = None,
) -> go.Figure:
    """Grouped bars: each metric per condition, one bar per transport.

    Parameters
    ----------
    df : pandas.DataFrame
        :func:`voicelab.compare.compare_transports` results.
    metrics : sequence of str
        Result columns, one panel each. Bars are the mean of the two directions; the
        whiskers span the two directions.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    from . import LABELS

    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ParameterError("transport_comparison needs at least one metric column")
    _require(df, ["transport", "condition", *metrics], "transport_comparison")
    conditions = list(dict.fromkeys(df["condition"]))
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[LABELS.get(m, m) for m in metrics])
    for k, (transport, part) in enumerate(df.groupby("transport", sort=False)):
        for i, m in enumerate(metrics, start=1):
            g = part.groupby("condition", sort=False)[m].agg(["mean", "min", "max"]).reindex(conditions)
            vals = pd.to_numeric(g["mean"], errors="coerce")
            fig.add_trace(go.Bar(
                x=conditions, y=vals, name=str(transport), legendgroup=str(transport), showlegend=i == 1,
                marker_color=_COLORS.get(str(transport), _color(k)),
                error_y=dict(type="data", symmetric=False, array=(g["max"] - g["mean"]).astype(float),
                             arrayminus=(g["mean"] - g["min"]).astype(float)),
                text=[("" if pd.isna(v) else (f"{v:.0f}" if m.endswith("_ms") else f"{v:.2f}")) for v in vals],
                textposition="outside",
            ), row=1, col=i)
    calls = None
    if "direction" in df.columns:  # one row per call and direction
        calls = int(df.groupby(["transport", "condition"]).size().max() // max(1, df["direction"].nunique()))
    fig.update_layout(title=title or "The same call over SIP, WebRTC and WebSocket", barmode="group",
                      template="plotly_white", legend_title_text="transport", margin=dict(b=110))
    fig.add_annotation(
        text=("bar: mean of the two directions (caller to agent, agent to caller); whiskers: the two directions' "
              f"min and max{'' if calls is None else f'; {calls} call(s) per bar'}"),
        xref="paper", yref="paper", x=0, y=-0.2, showarrow=False, xanchor="left", yanchor="top",
        font=dict(size=11),
    )
    return _annotated(fig, df)
