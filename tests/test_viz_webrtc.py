"""Chapter 5's figures, built from real calls."""

from __future__ import annotations

import copy

import pandas as pd
import plotly.graph_objects as go
import pytest

from voicelab import viz
from voicelab.audio import SYNTHETIC_WARNING
from voicelab.compare import compare_transports, opus_bitrate_sweep
from voicelab.errors import ParameterError
from voicelab.viz import webrtc as vw

from .conftest import speech_dir


@pytest.fixture(scope="module")
def runs():
    """A SIP and a WebRTC call (the sync API, as a notebook calls it) and a one-point sweep."""
    d = speech_dir()
    mp = pytest.MonkeyPatch()
    if d is not None:
        mp.setenv("VOICELAB_DATA", str(d))
    try:
        cmp = compare_transports(transports=("sip", "webrtc"), conditions={"clean": None}, seconds=1.0, seed=1)
        sweep = opus_bitrate_sweep((16000,), seconds=1.0, seed=1)
    finally:
        mp.undo()
    call = next(x["result"] for x in cmp.attrs["results"] if x["transport"] == "webrtc")
    return {"cmp": cmp, "call": call, "sweep": sweep}


def _synthetic(result):
    r = copy.deepcopy(result)
    r["synthetic_speech"] = True
    return r


def _notes(fig):
    return [a.text for a in fig.layout.annotations if a.text]


def test_setup_phases_follow_the_protocol(runs):
    ph = vw.setup_phases(runs["call"])
    assert set(ph["peer"]) == {"caller", "agent"}
    for peer, part in ph.groupby("peer"):
        p = part.set_index("phase")
        assert list(p.index) == ["ICE gathering", "ICE connectivity checks", "DTLS handshake", "until media starts",
                                 "first audio in flight"], peer
        assert (p["duration_ms"] >= 0).all()
        # gathering starts the checks, DTLS runs over a checked pair, media after DTLS
        assert p.loc["ICE gathering", "start_ms"] <= p.loc["ICE connectivity checks", "start_ms"]
        assert p.loc["ICE connectivity checks", "start_ms"] <= p.loc["DTLS handshake", "start_ms"]
        assert p.loc["DTLS handshake", "end_ms"] <= p.loc["first audio in flight", "start_ms"]
        incoming = "agent_to_caller" if peer == "caller" else "caller_to_agent"
        assert p.loc["first audio in flight", "duration_ms"] == pytest.approx(runs["call"][f"{incoming}.mouth_to_ear_ms"])
    caller = ph[ph["peer"] == "caller"].set_index("phase")
    assert caller.loc["ICE gathering", "duration_ms"] == pytest.approx(runs["call"]["ice_gathering_ms"])
    assert caller.loc["DTLS handshake", "duration_ms"] == pytest.approx(runs["call"]["dtls_ms"])


def test_setup_timeline_figure(runs):
    fig = vw.setup_timeline(runs["call"])
    assert isinstance(fig, go.Figure)
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert [b.name for b in bars][:3] == ["ICE gathering", "ICE connectivity checks", "DTLS handshake"]
    assert all(b.orientation == "h" and set(b.y) == {"caller", "agent"} for b in bars)
    assert any(s.x0 == pytest.approx(runs["call"]["setup_ms"]) for s in fig.layout.shapes)  # 'connected' line
    assert SYNTHETIC_WARNING in _notes(vw.setup_timeline(_synthetic(runs["call"])))
    assert SYNTHETIC_WARNING not in _notes(vw.setup_timeline({**runs["call"], "synthetic_speech": False}))


def test_candidate_pairs_match_across_peers(runs):
    df = vw.candidate_frame(runs["call"]).set_index("peer")
    assert list(df.index) == ["caller", "agent"]
    assert (df["local_type"] == "host").all() and (df["remote_type"] == "host").all()
    # each side's remote candidate is the other side's local one
    assert df.loc["caller", "remote_address"] == df.loc["agent", "local_address"]
    assert df.loc["agent", "remote_address"] == df.loc["caller", "local_address"]
    assert df.loc["caller", "local_address"].startswith("127.0.0.1:")
    assert (df["transport_bytes_sent"] > df["bytes_sent"]).all()  # headers, RTCP and DTLS on top of payload
    fig = vw.candidate_table(runs["call"])
    (table,) = fig.data
    assert isinstance(table, go.Table) and len(table.cells.values) == len(table.header.values) == 9
    assert list(table.cells.values[1]) == ["host", "host"]


def test_getstats_bars_from_final_reports(runs):
    call = {k: v for k, v in runs["call"].items() if k != "getstats_series"}  # final reports only
    fig = vw.getstats_figure(call)
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert len(bars) == 3
    jitter = bars[0]
    assert list(jitter.y) == pytest.approx([call["caller_to_agent.jitter_ms"], call["agent_to_caller.jitter_ms"]])
    two = vw.getstats_figure({"a": call, "b": call})
    assert {t.name for t in two.data} == {"a", "b"} and len(two.data) == 6


def test_getstats_series_over_time(runs):
    call = runs["call"]  # webrtc_call samples getStats during the call
    series = call["getstats_series"]
    fig = vw.getstats_figure(call)
    lines = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert len(lines) == 2 * 3  # two peers x (jitter, loss, rtt)
    caller_t = [row["t_ms"] / 1000.0 for row in series if row["peer"] == "caller"]
    assert len(caller_t) >= 2 and any(list(t.x) == pytest.approx(caller_t) for t in lines)
    # one colour per legend entry across the three panels (the legend covers all of them)
    for group in {t.legendgroup for t in lines}:
        assert len({t.line.color for t in lines if t.legendgroup == group}) == 1, group
    assert len({t.line.color for t in lines}) == 2


def test_opus_sweep_figure(runs):
    df = runs["sweep"]
    fig = vw.opus_sweep_figure(df)
    names = [t.name for t in fig.data]
    assert names == ["PESQ-WB (lab Opus)", "payload (kbit/s)", "on the wire (kbit/s)"]
    assert fig.data[0].y[0] == pytest.approx(df["pesq_wb"].mean())
    assert fig.data[2].y[0] > fig.data[1].y[0]  # wire > payload
    assert fig.layout.xaxis.type == "log"
    with_base = pd.concat([df, df.assign(mode="aiortc-defaults", bitrate=96000, payload_kbps=None)], ignore_index=True)
    assert len(vw.opus_sweep_figure(with_base).data) == 5


def test_transport_comparison_bars_are_direction_means(runs):
    cmp = runs["cmp"]
    fig = vw.transport_comparison(cmp)
    assert {t.name for t in fig.data} == {"sip", "webrtc"} and len(fig.data) == 4
    sip_m2e = next(t for t in fig.data if t.name == "sip" and t.xaxis == "x")
    assert sip_m2e.y[0] == pytest.approx(cmp[cmp["transport"] == "sip"]["mouth_to_ear_ms"].mean())
    assert list(sip_m2e.x) == ["clean"]
    assert cmp["note"].str.contains("codecs differ").sum() == 0  # both pcmu here
    legend_note = " ".join(a.text for a in fig.layout.annotations)
    assert "mean of the two directions" in legend_note and "min and max" in legend_note
    assert "1 call(s) per bar" in legend_note
    synth = cmp.assign(synthetic_speech=True)
    assert SYNTHETIC_WARNING in _notes(vw.transport_comparison(synth))


def test_figures_export(runs, tmp_path):
    (p,) = viz.export(vw.setup_timeline(runs["call"]), "timeline", directory=tmp_path, formats=("html",))
    assert p.stat().st_size > 100_000


@pytest.mark.parametrize("call", [
    lambda: vw.setup_timeline({}),
    lambda: vw.setup_timeline({"timeline": []}),
    lambda: vw.setup_phases({"timeline": [{"t": 1}]}),
    lambda: vw.candidate_frame("call"),
    lambda: vw.getstats_figure("call"),
    lambda: vw.getstats_figure({}),
    lambda: vw.opus_sweep_figure(pd.DataFrame()),
    lambda: vw.transport_comparison(pd.DataFrame({"transport": ["sip"]})),
    lambda: vw.transport_comparison([1, 2]),
    lambda: vw.transport_comparison(pd.DataFrame({"transport": ["sip"], "condition": ["c"], "pesq_nb": [4.0]}),
                                    metrics=()),
])
def test_bad_input_is_a_parameter_error(call):
    with pytest.raises(ParameterError):
        call()
