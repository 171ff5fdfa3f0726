"""A whole SIP call between two sans-IO agents on a virtual clock (chapter 3's engine)."""

from __future__ import annotations

import math

import pytest

from voicelab.net import ChannelConfig
from voicelab.sip.virtual import run_sip_call


def _labels(r, src=None):
    return [d["label"].split(" ")[0] if not d["label"].startswith("SIP/") else d["label"].split(" ")[1]
            for d in r.datagrams if src is None or d["src"] == src]  # fmt: skip


def test_lossless_call_ladder_and_setup_time_equals_the_link_delays():
    r = run_sip_call(uplink=ChannelConfig(delay_ms=30.0), downlink=ChannelConfig(delay_ms=45.0), ring_s=0.5, seed=1)
    s = r.summary()
    assert s["established"] and s["lost"] == 0 and s["retransmissions"] == 0
    assert _labels(r) == ["INVITE", "100", "180", "200", "ACK", "BYE", "200"]
    assert s["post_dial_delay_ms"] == pytest.approx(30.0 + 45.0)  # INVITE up, 180 down
    assert s["setup_ms"] == pytest.approx(500.0 + 30.0 + 45.0)  # ringing time + one round trip
    assert r.call.media.codec == "pcmu"


def test_lossy_signalling_recovers_by_retransmission_and_is_deterministic():
    cfg = ChannelConfig(delay_ms=20.0, loss_rate=0.2)
    runs = [run_sip_call(uplink=cfg, downlink=cfg, ring_s=1.0, seed=s) for s in range(6)]
    assert all(r.established for r in runs)
    assert sum(r.summary()["retransmissions"] for r in runs) > 0
    for r in runs:
        for d in r.datagrams:
            if d["retransmission"]:
                assert any(e["label"] == d["label"] and e["src"] == d["src"] and e["send_time_s"] < d["send_time_s"] for e in r.datagrams)
    a, b = (run_sip_call(uplink=cfg, downlink=cfg, seed=1) for _ in range(2))
    assert [(d["send_time_s"], d["label"]) for d in a.datagrams] == [(d["send_time_s"], d["label"]) for d in b.datagrams]


def test_digest_challenge_then_success_and_wrong_password_fails():
    ok = run_sip_call(agent_credentials={"caller": "s3cret"}, caller_credentials=("caller", "s3cret"), seed=3)
    assert ok.established
    assert _labels(ok)[:5] == ["INVITE", "100", "401", "ACK", "INVITE"]
    bad = run_sip_call(agent_credentials={"caller": "s3cret"}, caller_credentials=("caller", "guess"), seed=3)
    assert not bad.established and bad.summary()["final_status"] in (401, 407)


def test_lost_invites_time_out_at_64_t1():
    r = run_sip_call(uplink=ChannelConfig(loss_rate=0.999999), seed=2)
    invites = [d for d in r.datagrams if d["label"].startswith("INVITE")]
    assert [round(d["send_time_s"], 3) for d in invites] == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert not r.established and r.summary()["final_status"] == 408
    assert all(math.isnan(d["arrival_time_s"]) for d in invites)
