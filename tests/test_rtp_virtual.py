"""RTP/RTCP back to back on a virtual clock: reports against the ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from voicelab.errors import ParameterError
from voicelab.net import ChannelConfig
from voicelab.rtp.virtual import run_rtp_call


@pytest.fixture(scope="module")
def call():
    up = ChannelConfig(delay_ms=40.0, jitter_ms=5.0, loss_rate=0.05)
    down = ChannelConfig(delay_ms=25.0, jitter_ms=5.0, loss_rate=0.05)
    return run_rtp_call(codec="pcmu", seconds=30.0, uplink=up, downlink=down, seed=4)


def test_reports_track_the_ground_truth(call):
    r = call.reports
    assert len(r) >= 8 and set(r["about"]) == {"a->b", "b->a"}
    # cumulative loss: the reporter cannot yet know of losses at the very end of its window
    assert ((r["true_cumulative_lost"] - r["cumulative_lost"]).between(0, 3)).all()
    assert (abs(r["jitter_ms"] - r["true_jitter_ms"]) < 0.5).all()  # same formula, 1/8000 s units
    rtt = r["rtt_ms"].dropna()
    assert len(rtt) >= 6 and abs(rtt.mean() - 65.0) < 10.0  # 40 + 25 ms, +-5 ms jitter each way


def test_packets_and_wire_bitrate(call):
    p = call.packets
    a = p[p["direction"] == "a->b"].sort_values("send_time_s")
    assert (np.diff(a["rtp_timestamp"].to_numpy()) % (1 << 32) == 160).all()
    assert call.bitrate_kbps("a->b") == pytest.approx(80.0)  # 200 B every 20 ms
    assert 0 < call.bitrate_kbps("a->b", what="rtcp") < 0.05 * 80.0  # RTCP stays under 5 %


def test_srtp_adds_ten_bytes_per_packet_and_is_deterministic():
    plain = run_rtp_call(codec="pcmu", seconds=3.0, seed=1)
    srtp = run_rtp_call(codec="pcmu", seconds=3.0, seed=1, srtp=True)
    assert (srtp.packets["wire_bytes"] - plain.packets["wire_bytes"] == 10).all()
    again = run_rtp_call(codec="pcmu", seconds=3.0, seed=1, srtp=True)
    assert srtp.packets.equals(again.packets)
    with pytest.raises(ParameterError):
        run_rtp_call(seconds=0.1)
