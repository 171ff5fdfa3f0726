"""The voice agent's turn measured at the caller's ear: SIP and WebSocket, breakdown, WER, barge-in."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voicelab.net.vclock import run_virtual
from voicelab.turns import BREAKDOWN, load_utterances, pipeline_call


def _short(n):
    """``n`` turns cycling through the three shortest utterances (the recogniser's CPU time is the test's)."""
    u = sorted(load_utterances(6), key=lambda u: len(u.samples))[:3]
    return [u[i % 3] for i in range(n)]


def _virtual(**kw):
    kw.setdefault("utterances", _short(kw.get("turns", 5)))
    return run_virtual(pipeline_call(network="virtual", **kw), stall_timeout=30.0)


def _check_reconciled(res, n):
    assert res["turn.count"] == n and res["turn.answered"] == n, res["turn.outcomes"]
    for r in res["turns"]:
        assert r["outcome"] == "ok" and "residual_ms" in r, r
        parts = sum(r[f"{p}_ms"] for p in BREAKDOWN)
        assert parts == pytest.approx(r["breakdown_sum_ms"], abs=1e-6)
        assert abs(r["total_ms"] - parts) <= 2.0  # the parts add up to the total measured at the ear
        assert r["endpointing_wait_ms"] >= 300.0 - 20.0  # stop_ms of silence, less one frame at most
        assert r["server_ms"] is not None and r["server_ms"] < r["total_ms"]
    assert res["turn.reconciled"] is True and res["turn.llm_modelled"] is True


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["sip", "ws"])
def test_five_turns_on_the_virtual_network_reconcile(transport):
    res = _virtual(transport=transport, turns=5, seed=3)
    _check_reconciled(res, 5)
    r = res["turns"][0]
    assert r["network_up_ms"] > 0 and r["network_down_ms"] > 0
    assert r["agent_jitter_buffer_ms"] == 0.0  # the arrival tap: nothing reordered on a clean path, no playout buffer
    assert 0.0 <= r["agent_send_queue_ms"] <= 20.0 + 1e-6  # the next 20 ms send tick
    assert res["turn.total_ms.p50"] <= res["turn.total_ms.p90"] <= res["turn.total_ms.max"]


def test_one_turn_over_real_loopback_sockets_is_answered_and_reconciles_or_says_why():
    res = asyncio.run(pipeline_call(transport="sip", turns=1, seed=1, utterances=_short(1)))
    assert res["turn.answered"] == 1
    r = res["turns"][0]
    if "residual_ms" in r:
        assert abs(r["residual_ms"]) <= 2.0 and r["asr_final_ms"] > 0  # the recogniser's real time is on the loop clock
    else:  # an overloaded machine: the agent's jitter buffer dropped the frames the chain follows
        assert "breakdown unavailable" in r["reason"] and "missing" in r["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("codec, rate, tol", [("g722", 16000, 0.05), ("opus", 16000, 0.05), ("pcmu", 8000, 0.10)])
def test_wer_of_a_clean_call_is_the_recogniser_s_own_on_the_unprocessed_audio(natural_env, codec, rate, tol):
    """The transport does not change what the agent understands: a clean call's WER is the
    same pipeline's on the unprocessed utterances at the codec's rate, heard call-shaped
    (measured: G.722 0.222 vs 0.222, PCMU 0.296 vs 0.259 with the narrowband MLLR
    transform on both sides, 0.296 vs 0.333 without; 27 words). For G.722 and Opus
    24 kbit/s that reference is the unprocessed 16 kHz audio: issue #12's acceptance,
    within 5 points. PocketSphinx's en-us
    model is a 16 kHz model: fed 8 kHz audio through a band-limited resampler it was
    erratic (shifting the same audio by 0.2 s moved the WER by 0.07); with the band folded
    into 4-8 kHz (the pipeline's default for 8 kHz) it is stable enough for the same 10
    points. Against the unprocessed 16 kHz utterances PCMU stays worse (docs/agent-turn.md)."""
    from voicelab import audio
    from voicelab.pipeline.wer import word_errors
    from voicelab.sim.turns import hear_offline

    utts = load_utterances(3)
    res = _virtual(transport="sip", codec=codec, turns=3, utterances=utts, seed=2)
    # the same pipeline offline on the unprocessed utterances at the codec's rate, one after
    # the other with room for the replies, as in the call (one recogniser for the call)
    gap = np.zeros(16000 * 6)
    x = np.concatenate([np.zeros(8000)] + [np.concatenate([u.samples, gap]) for u in utts])
    p = hear_offline(audio.resample(x, 16000, rate), rate)
    e, n = word_errors(" ".join(u.transcript for u in utts), " ".join(t.text or "" for t in p.turns))
    print(f"WER {codec} call {res['turn.wer']:.3f}, unprocessed at {rate} Hz {e / n:.3f}")
    assert res["turn.wer"] == pytest.approx(e / n, abs=tol)


@pytest.mark.slow
@pytest.mark.parametrize("transport, down_ms", [("sip", 0.0), ("ws", 0.0)])
def test_barge_in_stops_the_agent_at_the_callers_ear_within_the_issue_s_bound(transport, down_ms):
    """Issue #12: the agent's audio stops at the caller's ear within stop detection + one
    jitter buffer + 40 ms. The agent hears the caller as the frames arrive (no playout
    buffer before its VAD) and drops its queued reply at once: what still reaches the ear
    is the one frame already sent, crossing the downlink and the caller's 60 ms buffer.
    That fits the issue's 40 ms when the downlink network takes at most 20 ms (here 16 ms:
    the caller's access link at 0 ms); on the default path (21 ms down) only the path's own
    bound (detection + one frame + downlink + buffer, 1 ms above the issue's) is
    guaranteed (measured there: docs/agent-turn.md)."""
    from voicelab.net import ChannelConfig
    from voicelab.turns import barge_in_bounds

    down = None if down_ms is None else ChannelConfig(delay_ms=down_ms)
    res = _virtual(transport=transport, turns=2, barge_in_after_s=0.6, seed=4, downlink=down)
    stops = [r for r in res["turns"] if "barge_in_stop_ms" in r]
    assert stops, res["turn.outcomes"]
    assert any(a["reason"] == "barged_in" for a in res["agent"])
    for r in stops:
        b = barge_in_bounds(r)
        assert r["agent_jitter_buffer_ms"] == 0.0  # the tap released every frame as it arrived
        assert r["barge_in_detect_ms"] < r["barge_in_stop_ms"] <= b["path_ms"] + 1e-6, (r, b)
        if down_ms is not None:
            assert r["network_down_ms"] + 20 <= 40 and b["path_extra_ms"] < 0
            assert r["barge_in_stop_ms"] <= b["issue_ms"], (r, b)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_barge_in_over_webrtc_stops_the_agent_at_the_callers_ear_within_the_issue_s_bound(natural_env):
    """Issue #12's bound over WebRTC (aiortc, PCMU, real time on loopback, ~13 s): the
    caller talks over the first reply 0.6 s in, and the agent's audio stops at the
    caller's ear within stop detection + one jitter buffer + 40 ms, all measured on this
    barge-in: detection (the caller's speech onset -> the agent's decision taking effect),
    and for the reply frame heard last its hand-over to aiortc after the decision,
    aiortc's sender, the network, the caller's jitter buffer (its LabPlayout wait) and how
    far into its slot the sound ended; these telescope exactly into the stop time.

    PCMU, not Opus: the bound is about how fast the agent stops, and PCMU adds no
    codec delay. Opus's 6.5 ms look-ahead and its 20 ms transform frames carry a hard cut
    into the next packet (the last audible sample 10-15 ms into the following slot), which
    leaves ~5 ms of the 40 for aiortc's sender: docs/agent-turn.md "Barge-in"."""
    res = asyncio.run(pipeline_call(transport="webrtc", codec="pcmu", turns=2, seed=4, barge_in_after_s=0.6,
                                    utterances=_short(2)))  # fmt: skip
    assert res["turn.answered"] == 2, res["turn.outcomes"]
    assert res["turns"][1]["barge_in"] and res["agent"][0]["reason"] == "barged_in"
    r = res["turns"][0]
    assert "barge_in_stop_ms" in r and "barge_in_detect_ms" in r, r
    # the chain of the last frame heard (re-run alone if a loaded machine left one of its
    # packets unrecorded: the note says which)
    c = r.get("barge_in_chain_ms")
    assert c is not None, r.get("barge_in_chain_note")
    detect, stop = r["barge_in_detect_ms"], r["barge_in_stop_ms"]
    assert detect + sum(c.values()) == pytest.approx(stop, abs=1e-6)
    assert 0.0 < detect < stop
    # (after_decision: the frame asked at the next send tick, up to 20 ms, after the decision took
    # effect on the agent's loop (a loop that ran behind counts in detection): measured, not bounded)
    assert 0.0 <= c["frame_tail"] <= 20.0 + 1e-6 and c["network_down"] >= 0.0
    assert 30.0 <= c["caller_jitter_buffer"] <= 80.0  # the caller's fixed 60 ms buffer on its 20 ms slot grid
    assert stop <= detect + c["caller_jitter_buffer"] + 40.0, (stop, detect, c)  # issue #12's bound
    assert res["turn.barge_in_stop_ms.p50"] == stop


def test_a_caller_hanging_up_mid_reply_is_recorded_and_nothing_hangs():
    res = _virtual(transport="sip", turns=1, hangup_after_s=0.3, seed=5)
    assert res["turns"][0]["outcome"] == "hung_up_mid_reply"
    assert res["agent"][-1]["reason"] == "caller_hung_up"
    assert res["agent_errors"] == []


def test_impaired_uplink_still_answers_every_turn():
    from voicelab.net import ChannelConfig

    res = _virtual(transport="sip", turns=1, seed=6, uplink=ChannelConfig(delay_ms=80.0, jitter_ms=10.0))
    assert res["turn.answered"] == 1
    assert res["turn.network_up_ms.p50"] > 80.0


@pytest.mark.slow
def test_webrtc_turns_the_same_pipeline_behind_aiortc(natural_env):
    """Over WebRTC (aiortc, Opus 48 kHz, real time): every turn answered and broken down per
    packet (the RTP sequence numbers on the wire both ways, the agent's arrival tap, the
    caller's playout): the parts add up to the total within 2 ms, as on SIP and WS."""
    from voicelab.turns import WEBRTC_PARTS

    res = asyncio.run(pipeline_call(transport="webrtc", codec="opus", turns=2, seed=1, utterances=_short(2)))
    assert res["turn.answered"] == 2
    for r in res["turns"]:
        if "residual_ms" not in r:  # a piece of the chain is missing: lumped, and it says so
            assert "per-packet breakdown unavailable" in r["reason"], r
            lumped = ["uplink_and_endpointing", "asr_final", "llm_first_token", "tts_first_audio", "agent_send_queue",
                      "downlink"]  # fmt: skip
            assert sum(r[f"{p}_ms"] for p in lumped) == pytest.approx(r["total_ms"], abs=1e-6)
            continue
        parts = sum(r[f"{p}_ms"] for p in BREAKDOWN + WEBRTC_PARTS)
        assert parts == pytest.approx(r["breakdown_sum_ms"], abs=1e-6)
        assert abs(r["total_ms"] - parts) <= 2.0 and r["reconciled"]
        # the caller's fixed 60 ms buffer on its 20 ms slot grid: a reply frame waits 60 ms less
        # how late it reached the grid (up to one frame on loopback under load)
        assert 40.0 <= r["caller_jitter_buffer_ms"] <= 80.0
        assert 0 <= r["network_up_ms"] < 20 and 0 <= r["network_down_ms"] < 20  # loopback
        assert r["codec_lookahead_down_ms"] == 6.5 and r["server_ms"] < r["total_ms"]
        assert set(r["lumped_ms"]) == {"uplink_and_endpointing", "downlink"}  # kept aside, not counted twice
    assert res["turn.reconciled"] in (True, None)
    # the caller's send timer is reported as on SIP and WS (frames are handed over up to 0.5 ms
    # early, so lateness can be slightly negative); the agent's track has none (its playout paces it)
    assert -0.5 - 1e-3 <= res["caller_send_lateness_ms.p99"] <= res["caller_send_lateness_ms.max"]
    assert "agent_send_lateness_ms.p99" not in res


def test_send_lateness_is_reported_for_the_sides_that_have_a_send_timer():
    from types import SimpleNamespace

    from voicelab.turns import _lateness

    out = _lateness(SimpleNamespace(send_lateness_s=[0.001] * 99 + [0.5]), None)
    assert set(out) == {"caller_send_lateness_ms.p99", "caller_send_lateness_ms.max"}
    assert out["caller_send_lateness_ms.max"] == pytest.approx(500.0)
    assert 1.0 <= out["caller_send_lateness_ms.p99"] < 500.0


@pytest.mark.parametrize("argv, needle", [
    (["call", "--agent", "pipeline", "--transport", "webrtc", "--net", "vnet"], "loopback"),
    (["call", "--agent", "pipeline", "--loss", "0.1"], "--net vnet or --net sim"),
    (["call", "--net", "sim"], "--agent pipeline"),
    (["call", "--agent", "pipeline", "--llm", "ftp://x", "--net", "vnet", "--turns", "1"], "http(s) URL"),
    (["call", "--agent", "pipeline", "--net", "sim", "--asr-adapt", "/no/such.mllr"], "--asr-adapt"),
])  # fmt: skip
def test_cli_bad_pipeline_input_is_one_line(capsys, argv, needle):
    from voicelab.cli import main

    rc = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc not in (0, None) and len(err) == 1 and needle in err[0], err


@pytest.mark.slow
def test_cli_asr_adapt_reaches_the_pipeline_config(monkeypatch):
    """``--asr-adapt on|off|FILE`` becomes PipelineConfig's ``asr_adapt`` (narrowband calls only)."""
    import argparse

    from voicelab.cli import _asr_adapt
    from voicelab.pipeline.asr import narrowband_transform

    assert _asr_adapt(argparse.Namespace(asr_adapt="on")) is True
    assert _asr_adapt(argparse.Namespace(asr_adapt="off")) is False
    shipped = narrowband_transform(8000, "fold", True)
    assert _asr_adapt(argparse.Namespace(asr_adapt=shipped)) == shipped
    seen = {}

    def fake_sim_turns(**kw):
        seen.update(kw)
        return {"turn.count": 0}

    monkeypatch.setattr("voicelab.sim.turns.sim_turns", fake_sim_turns)
    from voicelab.cli import main

    assert main(["call", "--agent", "pipeline", "--net", "sim", "--turns", "1", "--asr-adapt", "off", "--json"]) == 0
    assert seen["asr_adapt"] is False


def test_cli_pipeline_call_in_sim_mode_prints_turn_statistics(capsys):
    from voicelab.cli import main

    assert main(["call", "--agent", "pipeline", "--net", "sim", "--turns", "1", "--json"]) == 0
    import json

    res = json.loads(capsys.readouterr().out)
    assert res["turn.count"] == 1 and res["network_model"] is True and res["llm_modelled"] is True
