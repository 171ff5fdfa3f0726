"""voicelab.viz.turns: the turn waterfall and its table, drawn from a real virtual-time call."""

from __future__ import annotations

import copy

import pytest

from voicelab.errors import ParameterError
from voicelab.net.vclock import run_virtual
from voicelab.turns import BREAKDOWN, barge_in_bounds, pipeline_call
from voicelab.viz import turns as vt


@pytest.fixture(scope="module")
def sip():
    # two turns over SIP on the virtual network, virtual clock: a few seconds (recognition)
    return run_virtual(pipeline_call(transport="sip", turns=2, network="virtual"), stall_timeout=30.0)


def test_breakdown_table_means_add_up_to_the_measured_total(sip):
    tab = vt.breakdown_table({"sip": sip})
    answered = [r for r in sip["turns"] if "total_ms" in r]
    assert int(tab.loc["sip", "n"]) == len(answered) > 0
    for p in BREAKDOWN:
        want = sum(r[f"{p}_ms"] for r in answered) / len(answered)
        assert tab.loc["sip", f"{p}_ms"] == pytest.approx(want)
    # nothing lost on the clean path: no shift
    assert tab.loc["sip", "lost_reply_frames_ms"] == pytest.approx(0.0, abs=1e-6)
    # every turn reconciles within 2 ms, so the mean residual does too
    assert abs(tab.loc["sip", "residual_ms"]) <= 2.0


def test_waterfall_has_one_segment_per_part_and_the_total(sip):
    fig = vt.turn_waterfall({"clean": sip, "again": copy.deepcopy(sip)})
    bars = [t for t in fig.data if t.type == "bar"]
    names = {t.name for t in bars}
    assert "endpointing wait" in names and "llm first token" in names
    n = sum(1 for r in sip["turns"] if "total_ms" in r)
    for t in fig.data:
        assert list(t.y) == [f"clean (n={n})", f"again (n={n})"]
    (total,) = [t for t in fig.data if t.type == "scatter"]
    stacked = sum(t.x[0] for t in bars)
    assert stacked == pytest.approx(total.x[0], abs=2.0)
    assert fig.layout.barmode == "stack"


def test_webrtc_lumped_parts_are_shown():
    rec = {"total_ms": 1000.0, "uplink_and_endpointing_ms": 500.0, "asr_final_ms": 10.0, "llm_first_token_ms": 400.0,
           "tts_first_audio_ms": 10.0, "agent_send_queue_ms": 10.0, "downlink_ms": 70.0, "utterance": "a0001"}
    tab = vt.breakdown_table({"webrtc": {"turns": [rec, {"outcome": "no_reply"}]}})
    assert list(tab.columns[:2]) == ["uplink_and_endpointing_ms", "asr_final_ms"]
    assert tab.loc["webrtc", "residual_ms"] == pytest.approx(0.0)
    assert int(tab.loc["webrtc", "n"]) == 1
    # a turn with a total but no breakdown is counted as answered, not averaged
    partial = {"total_ms": 5000.0, "utterance": "a0002"}
    tab2 = vt.breakdown_table({"webrtc": {"turns": [rec, partial]}})
    assert int(tab2.loc["webrtc", "n"]) == 1 and int(tab2.loc["webrtc", "answered"]) == 2
    assert tab2.loc["webrtc", "total_ms"] == 1000.0
    assert vt.turn_records({"w": {"turns": [{**rec, "agent_turns": 1}]}})["false_cutoffs"].tolist() == [0]
    names = [t.name for t in vt.turn_waterfall({"webrtc": {"turns": [rec]}}).data]
    assert names[0] == "uplink and endpointing" and "downlink" in names


def test_lost_reply_frames_close_the_gap():
    parts = {f"{p}_ms": 10.0 for p in BREAKDOWN}
    rec = {**parts, "total_ms": 20.0 * len(BREAKDOWN) / 2 + 40.0, "breakdown_sum_ms": 10.0 * len(BREAKDOWN) + 40.0}
    tab = vt.breakdown_table({"lossy": {"turns": [rec]}})
    assert tab.loc["lossy", "lost_reply_frames_ms"] == pytest.approx(40.0)
    assert tab.loc["lossy", "residual_ms"] == pytest.approx(0.0)


def test_bad_input_is_a_parameter_error():
    with pytest.raises(ParameterError):
        vt.breakdown_table({"x": {"turn.count": 0}})
    with pytest.raises(ParameterError):
        vt.breakdown_table({"x": {"turns": [{"outcome": "no_reply"}]}})
    with pytest.raises(ParameterError):
        barge_in_bounds({"network_up_ms": 1.0})


def test_barge_in_bounds_follow_the_path():
    rec = {"network_up_ms": 21.0, "agent_jitter_buffer_ms": 0.0, "network_down_ms": 21.0, "caller_jitter_buffer_ms": 60.0}
    b = barge_in_bounds(rec)  # no measured decision: detection's own bound (min_speech + 2 frames + uplink)
    assert b["detect_ms"] == 100 + 20 + 20 + 21
    assert b["issue_ms"] == b["detect_ms"] + 60 + 40 and b["nominal_ms"] == 100 + 20 + 60 + 40
    assert b["path_ms"] == b["detect_ms"] + 20 + 21 + 60
    assert b["path_extra_ms"] == b["path_ms"] - b["issue_ms"] == 20 + 21 - 40
    measured = barge_in_bounds({**rec, "barge_in_detect_ms": 90.0})
    assert measured["issue_ms"] == 90 + 60 + 40 and measured["path_ms"] == 90 + 20 + 21 + 60
    slower = barge_in_bounds({**rec, "network_down_ms": 121.0})
    assert slower["path_ms"] - b["path_ms"] == 100 and slower["issue_ms"] == b["issue_ms"]
