"""Figures export for publication, and the demo writes its report."""

from __future__ import annotations

import pandas as pd
import pytest

from voicelab import viz
from voicelab.errors import ParameterError

from .conftest import need


def _df(synthetic=False):
    return pd.DataFrame(
        {
            "codec": ["pcmu", "pcmu", "opus", "opus"],
            "channel.loss_rate": [0.0, 0.05, 0.0, 0.05],
            "pesq_nb": [4.4, 3.6, 4.3, 3.9],
            "synthetic_speech": [synthetic] * 4,
        }
    )


def test_export_html_is_self_contained(tmp_path):
    fig = viz.metric_vs_param(_df(), x="channel.loss_rate", y="pesq_nb")
    (p,) = viz.export(fig, "f", directory=tmp_path, formats=("html",))
    text = p.read_text()
    import re

    assert "<script" in text
    assert not re.search(r"<script[^>]+src=", text)  # plotly.js embedded: works offline
    assert len(text) > 1_000_000


def test_export_png_svg(tmp_path):
    need(viz.static_export_available(), "no Chromium for static figure export (Debian package chromium)")
    fig = viz.codec_bars(_df(), metrics=("pesq_nb",))
    paths = viz.export(fig, "bars", directory=tmp_path, formats=("png", "svg"))
    png, svg = paths
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in svg.read_bytes()[:500]


def test_synthetic_note_on_figures():
    fig = viz.metric_vs_param(_df(synthetic=True), x="channel.loss_rate", y="pesq_nb")
    texts = [a.text for a in fig.layout.annotations]
    assert any("synthetic speech" in t for t in texts)
    fig2 = viz.metric_vs_param(_df(synthetic=False), x="channel.loss_rate", y="pesq_nb")
    assert not fig2.layout.annotations


def test_export_rejects_bad_names(tmp_path):
    fig = viz.codec_bars(_df(), metrics=("pesq_nb",))
    with pytest.raises(ParameterError):
        viz.export(fig, "a/b", directory=tmp_path)
    with pytest.raises(ParameterError):
        viz.export(fig, "x", directory=tmp_path, formats=("gif",))
    with pytest.raises(ParameterError):
        viz.metric_vs_param(_df(), x="nope", y="pesq_nb")


@pytest.mark.slow
def test_demo_quick_writes_report(tmp_path):
    from voicelab.demo import run_demo

    report = run_demo(out_dir=tmp_path, quick=True, progress=False)
    assert report.exists()
    html = report.read_text()
    assert "Opus 24k FEC" in html and "G.722" in html
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert len(df) == 6 and df["error"].isna().all()
    # the demo's own claim: at 5 % loss Opus+FEC keeps more wideband quality than G.711
    at5 = df[df["channel.loss_rate"] == 0.05].set_index("label")
    assert at5.loc["Opus 24k FEC", "pesq_wb"] > at5.loc["G.711 PCMU", "pesq_wb"]
    assert (tmp_path / "figures" / "pesq_wb_vs_loss.html").exists()
    if df["synthetic_speech"].any():
        assert "synthetic speech" in html
    # the live part: the same call over the three transports, clean and impaired
    live = pd.read_csv(tmp_path / "results-live.csv")
    assert set(live["transport"]) == {"sip", "webrtc", "ws"} and live["condition"].nunique() == 2
    assert "SIP/RTP, WebRTC and a WebSocket" in html and (tmp_path / "figures" / "live_mouth_to_ear_ms.html").exists()
    lossy = live[live["condition"] != "clean"]
    assert (lossy[lossy["transport"] == "ws"]["loss_rate"] == 0).all()  # TCP: late, never lost
    # a small study, not an anecdote: paired repeats over different utterances, intervals, verdicts
    from voicelab.demo import LIVE_REPEATS_QUICK

    assert live["trial"].nunique() == LIVE_REPEATS_QUICK and live["speech"].nunique() == LIVE_REPEATS_QUICK
    assert f"n = {LIVE_REPEATS_QUICK} paired trials per cell" in html and "Student-t" in html
    summary = pd.read_csv(tmp_path / "results-live-summary.csv")
    assert {"n", "mean", "ci_low", "ci_high"} <= set(summary.columns)
    assert (summary["n"] == LIVE_REPEATS_QUICK).all()
    assert "paired trials</li>" in html or "paired" in html


def test_interact_headless_runs_defaults_once(monkeypatch):
    monkeypatch.setenv("VOICELAB_NO_WIDGETS", "1")
    calls = []

    def show(loss=0.05, codec="pcmu"):
        calls.append((loss, codec))
        return "ok"

    assert viz.interact(show, loss=(0.0, 0.3, 0.01), codec=["pcmu", "opus"]) == "ok"
    assert calls == [(0.05, "pcmu")]


def test_interact_builds_widgets_and_reports_errors(monkeypatch, capsys):
    monkeypatch.delenv("VOICELAB_NO_WIDGETS", raising=False)
    from voicelab.errors import VoicelabError

    def show(loss=0.05, codec="pcmu"):
        if codec == "opus":
            raise VoicelabError("impossible setting")
        print(f"ran {codec} {loss}")

    box = viz.interact(show, loss=(0.0, 0.3, 0.01), codec=["pcmu", "opus"])
    sliders = [c for c in box.children if hasattr(c, "continuous_update")]
    assert sliders and not any(c.continuous_update for c in sliders)
    assert box.kwargs == {"loss": 0.05, "codec": "pcmu"}
    box.children[1].value = "opus"  # the dropdown: the error becomes one printed line
    assert box.result is None


def test_interact_box_is_drawn_once_when_it_ends_a_cell(monkeypatch, capsys):
    """``viz.interact(...)`` as a cell's last line: displayed by interact, not again as Out[]."""
    monkeypatch.delenv("VOICELAB_NO_WIDGETS", raising=False)
    from IPython.core.formatters import DisplayFormatter

    def show(codec="pcmu"):
        print(codec)

    box = viz.interact(show, codec=["pcmu", "opus"])
    capsys.readouterr()
    # what IPython's displayhook does with a cell's result: nothing left to draw
    assert DisplayFormatter().format(box) == ({}, {})
    assert capsys.readouterr().out == ""
    assert box.kwargs == {"codec": "pcmu"}  # still the working widget box


def test_interact_rejects_controls_without_defaults():
    def show(loss):
        return loss

    with pytest.raises(ParameterError):
        viz.interact(show, loss=(0.0, 1.0))


def test_ladder_draws_each_message_and_marks_losses():
    trace = [
        {"send_time_s": 0.0, "arrival_time_s": 0.02, "src": "caller", "dst": "agent", "label": "INVITE sip:agent@lab SIP/2.0"},
        {"send_time_s": 0.5, "arrival_time_s": float("nan"), "src": "caller", "dst": "agent", "label": "INVITE", "retransmission": True},
        {"send_time_s": 0.03, "arrival_time_s": 0.05, "src": "agent", "dst": "caller", "label": "SIP/2.0 200 OK"},
    ]
    fig = viz.ladder(trace)
    assert len(fig.data) == 3
    texts = [a.text for a in fig.layout.annotations]
    assert sum(t.endswith("(lost)") for t in texts) == 1
    assert "0 ms (+20)" in texts  # sequence spacing writes each send time and transit
    fig_t = viz.ladder(trace, spacing="time")
    assert fig_t.data[2].y[1] == pytest.approx(50.0)  # arrival of the 200 OK at 50 ms
    assert list(fig.layout.xaxis.ticktext) == ["caller", "agent"]
    with pytest.raises(ParameterError):
        viz.ladder([])
