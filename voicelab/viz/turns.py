"""Figures and tables of a voice agent's turn (:mod:`voicelab.turns` results)."""

from __future__ import annotations

from typing import Mapping

import pandas as pd
import plotly.graph_objects as go

from ..errors import ParameterError
from ..turns import BREAKDOWN, WEBRTC_PARTS

__all__ = ["LUMPED", "breakdown_table", "turn_records", "turn_waterfall"]

#: WebRTC's lumped transport parts (:func:`voicelab.turns.analyse_webrtc_turns`), in turn order.
LUMPED = ("uplink_and_endpointing", "downlink")
_ORDER = ("caller_packetization", "caller_sender", "network_up", "agent_jitter_buffer", "endpointing_wait",
          "uplink_and_endpointing", "asr_final", "llm_first_token", "tts_first_audio", "agent_send_queue", "agent_sender",
          "lost_reply_frames", "network_down", "caller_jitter_buffer", "codec_lookahead_down", "downlink")  # fmt: skip
assert set(_ORDER) == set(BREAKDOWN) | set(WEBRTC_PARTS) | set(LUMPED) | {"lost_reply_frames"}


def turn_records(results: Mapping[str, dict]) -> pd.DataFrame:
    """One row per answered turn of each result, with its label in column ``path``.

    Parameters
    ----------
    results : mapping of str to dict
        Label -> :func:`voicelab.turns.pipeline_call` (or ``sim_turns``) result.

    Returns
    -------
    pandas.DataFrame
        ``path``, ``utterance``, ``total_ms``, ``server_ms``, ``wer``, ``outcome``,
        ``false_cutoffs`` (0 when the agent heard the utterance as one), ``barge_in_stop_ms``
        (None where absent) and every
        breakdown part present (``*_ms``, milliseconds), plus ``lost_reply_frames_ms`` (SIP
        and WebSocket: the agent's first reply frames lost on the way down shift the first
        frame heard by 20 ms each). Turns without ``total_ms`` are left out.
    """
    rows = []
    for label, res in results.items():
        if "turns" not in res:
            raise ParameterError(f"result {label!r} has no 'turns' (not a pipeline_call/sim_turns result)")
        for r in res["turns"]:
            if r.get("total_ms") is None:
                continue
            row = {"path": label, "utterance": r.get("utterance"), "outcome": r.get("outcome"), "wer": r.get("wer"),
                   "total_ms": r["total_ms"], "server_ms": r.get("server_ms"),
                   "false_cutoffs": r.get("false_cutoffs", 0 if "agent_turns" in r else None), "barge_in_stop_ms": r.get("barge_in_stop_ms")}  # fmt: skip
            for p in _ORDER:
                if r.get(f"{p}_ms") is not None:
                    row[f"{p}_ms"] = float(r[f"{p}_ms"])
            if r.get("breakdown_sum_ms") is not None:
                # the first reply frame(s) lost on the way down: the caller first hears a later
                # frame; analyse_turns counts that shift in breakdown_sum_ms, not in a part
                row["lost_reply_frames_ms"] = float(r["breakdown_sum_ms"]) - sum(
                    float(r[f"{p}_ms"]) for p in BREAKDOWN + WEBRTC_PARTS if r.get(f"{p}_ms") is not None)
            rows.append(row)
    return pd.DataFrame(rows)


def breakdown_table(results: Mapping[str, dict]) -> pd.DataFrame:
    """Mean of each breakdown part per path (ms), with n, the mean total and the residual.

    Means (not medians) because means add up: the parts' means sum to the mean of the
    parts' sum, so ``residual_ms`` = mean total - sum of the part means is the mean
    residual (0 when every turn reconciles; WebRTC's lumped parts add up by construction).

    Returns
    -------
    pandas.DataFrame
        Index: path; columns: the parts present (in turn order), ``n`` (turns with their
        whole breakdown: a turn whose chain lost every frame has a total but no parts, and
        is left out), ``answered``, ``total_ms``, ``residual_ms``.
    """
    df = turn_records(results)
    if df.empty:
        raise ParameterError("no answered turn in the results: nothing to break down")
    parts = [f"{p}_ms" for p in _ORDER if f"{p}_ms" in df.columns]
    rows = {}
    for label in results:
        g = df[df["path"] == label]
        if g.empty:
            continue
        cols = [c for c in parts if g[c].notna().any()]
        full = g.dropna(subset=cols)  # turns whose whole breakdown is known
        if full.empty:
            continue
        row = {c: float(full[c].mean()) for c in cols}
        row.update(n=len(full), answered=len(g), total_ms=float(full["total_ms"].mean()))
        row["residual_ms"] = row["total_ms"] - sum(v for k, v in row.items() if k in parts)
        rows[label] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    return out[[c for c in parts if c in out.columns] + ["n", "answered", "total_ms", "residual_ms"]]


def turn_waterfall(results: Mapping[str, dict], *, title: str | None = None) -> go.Figure:
    """Stacked horizontal bar per path: where the turn's time goes, stage by stage.

    Each segment is the mean of one breakdown part over the path's answered turns (ms),
    in turn order from the caller's last word to the first reply sample at the ear; a
    diamond marks the mean measured total. WebRTC results show their two lumped
    transport parts. The y labels give n.

    Parameters
    ----------
    results : mapping of str to dict
        Label -> :func:`voicelab.turns.pipeline_call` result.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    tab = breakdown_table(results)
    labels = [f"{p} (n={int(tab.loc[p, 'n'])})" for p in tab.index]
    fig = go.Figure()
    for c in tab.columns:
        if not c.endswith("_ms") or c in ("total_ms", "residual_ms"):
            continue
        v = tab[c].fillna(0.0).to_numpy(float)
        if not (v > 0).any():
            continue
        fig.add_trace(go.Bar(y=labels, x=v, name=c.removesuffix("_ms").replace("_", " "), orientation="h",
                             hovertemplate="%{y}: %{x:.0f} ms<extra>%{fullData.name}</extra>"))  # fmt: skip
    fig.add_trace(go.Scatter(y=labels, x=tab["total_ms"].to_numpy(float), mode="markers", name="measured total",
                             marker=dict(symbol="diamond", size=10, color="black")))  # fmt: skip
    fig.update_layout(barmode="stack", title=title or "the turn, stage by stage (mean over turns)",
                      xaxis_title="ms from the caller's last word to the first reply sound at the ear",
                      yaxis=dict(autorange="reversed"), legend=dict(traceorder="normal"))  # fmt: skip
    return fig
