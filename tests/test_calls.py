"""A live SIP call on loopback sockets: the lab's caller calls the lab's agent.

Real time (3 s of speech each way) on 127.0.0.1; it waits on futures, never sleeps.
Timing-sensitive numbers (setup time, pacing) are benchmarks; here they are only sanity
checked.
"""

from __future__ import annotations

import asyncio

import pytest

from voicelab.calls import sip_call
from voicelab.net import ChannelConfig


@pytest.mark.slow
def test_lossless_pcmu_call_both_directions(natural_env):
    r = asyncio.run(sip_call(codec="pcmu", seconds=3.0, seed=1))
    assert r["codec"] == "pcmu" and r["payload_type"] == 0 and not r["synthetic_speech"]
    assert 0 < r["setup_ms"] < 1000
    parts = 20.0 + 60.0  # packetization + fixed jitter buffer; loopback and G.711 add ~0
    for d in ("caller_to_agent", "agent_to_caller"):
        assert r[f"{d}.pesq_nb"] >= 4.2, r  # acceptance: 4.3 on an idle machine
        assert parts - 0.5 <= r[f"{d}.mouth_to_ear_ms"] <= parts + 10.0, r
        assert r[f"{d}.loss_rate"] == 0.0 and r[f"{d}.late_loss_rate"] == 0.0
        assert r[f"{d}.bitrate_kbps_wire"] == pytest.approx(80.0)


@pytest.mark.slow
def test_call_through_the_impairment_relay_reports_the_loss():
    cfg = ChannelConfig(delay_ms=20.0, loss_rate=0.1)
    r = asyncio.run(sip_call(codec="pcmu", seconds=3.0, net=cfg, speech="harvard", seed=2, quality=False))
    for d in ("caller_to_agent", "agent_to_caller"):
        assert 0.02 < r[f"{d}.loss_rate"] < 0.25, r
        assert r[f"{d}.relay_transit_ms_median"] >= 19.0
    # RTT needs an SR answered by an RR within the call (RTCP every few seconds, 10 % lost)
    rtts = [r[f"{d}.rtt_ms"] for d in ("caller_to_agent", "agent_to_caller") if r[f"{d}.rtt_ms"] is not None]
    assert all(v >= 35.0 for v in rtts)  # 20 ms each way
