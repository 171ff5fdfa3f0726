"""RFC 4733 telephone events (voicelab.rtp.dtmf): payload, sender plan, receiver."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.errors import ParameterError, RemoteProtocolError
from voicelab.rtp import RtpPacket
from voicelab.rtp.dtmf import DtmfReceiver, DtmfSender, TelephoneEvent, event_code, event_name

# RFC 4733 2.3: event 5, E=1, R=0, volume 10, duration 800 -> 05 8a 03 20
GOLDEN = bytes.fromhex("058a0320")


def test_payload_golden():
    e = TelephoneEvent.parse(GOLDEN)
    assert (e.event, e.end, e.volume, e.duration) == (5, True, 10, 800)
    assert bytes(e) == GOLDEN
    # R bit set by a sloppy sender is ignored
    assert TelephoneEvent.parse(bytes.fromhex("05ca0320")) == e
    assert bytes(TelephoneEvent(11, False, 63, 0xFFFF)) == bytes.fromhex("0b3fffff")


@pytest.mark.parametrize("bad", [b"", b"\x05", GOLDEN[:3], GOLDEN + b"\x00"])
def test_payload_wrong_size(bad):
    with pytest.raises(RemoteProtocolError):
        TelephoneEvent.parse(bad)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=8))
def test_payload_fuzz(data):
    try:
        e = TelephoneEvent.parse(data)
    except RemoteProtocolError:
        return
    assert bytes(e) == bytes([data[0], data[1] & 0xBF]) + data[2:]


def test_codes():
    assert [event_code(c) for c in "09*#AD"] == [0, 9, 10, 11, 12, 15]
    assert event_name(16) == "flash" and event_name(3) == "3"
    with pytest.raises(ParameterError):
        event_code("x")
    with pytest.raises(ParameterError):
        DtmfSender().plan("12x")


def test_sender_plan_rules():
    tx = DtmfSender(clock_rate=8000, packet_ms=20, duration_ms=100, gap_ms=60, volume=7)
    plan = tx.plan("1", start_timestamp=1000)
    assert all(p.timestamp == 1000 for p in plan)
    assert [p.marker for p in plan] == [True] + [False] * (len(plan) - 1)
    assert [p.payload.duration for p in plan] == [160, 320, 480, 640, 800, 800, 800]
    assert [p.payload.end for p in plan] == [False] * 4 + [True] * 3
    assert [round(p.send_offset, 6) for p in plan] == [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12]
    assert all(p.payload.volume == 7 and p.payload.event == 1 for p in plan)
    # second digit starts after duration + gap on the same clock
    plan2 = tx.plan("12", start_timestamp=1000)
    second = [p for p in plan2 if p.payload.event == 2]
    assert second[0].marker and second[0].timestamp == 1000 + round(0.160 * 8000)
    assert second[0].send_offset == pytest.approx(0.16)


def test_sender_long_event_segments():
    # 10 s at 8 kHz = 80000 units > 65535: one segment of 0xFFFF then 14465 units
    tx = DtmfSender(duration_ms=10_000)
    plan = tx.plan("0", start_timestamp=0xFFFFFF00)  # also crosses the 32-bit wrap
    seg_ts = sorted({p.timestamp for p in plan}, key=lambda t: (t - 0xFFFFFF00) % 2**32)
    assert seg_ts == [0xFFFFFF00, (0xFFFFFF00 + 0xFFFF) % 2**32]
    first = [p for p in plan if p.timestamp == seg_ts[0]]
    second = [p for p in plan if p.timestamp == seg_ts[1]]
    assert [p.payload.duration for p in first[-3:]] == [0xFFFF] * 3
    assert not any(p.payload.end for p in first)
    assert not any(p.marker for p in second)
    assert [p.payload.duration for p in second if p.payload.end] == [80000 - 0xFFFF] * 3
    assert max(p.payload.duration for p in plan) <= 0xFFFF
    rx = DtmfReceiver()
    events = []
    for p in tx.packets("0", ssrc=1, start_timestamp=0xFFFFFF00):
        events += rx.receive(p[1], p[0])
    assert len(events) == 1 and events[0].duration_ms == pytest.approx(10_000.0)
    assert events[0].start_timestamp == 0xFFFFFF00


def _run(tx_packets, rx, *, drop=lambda i, p: False, dup=lambda i, p: False):
    events = []
    for i, (t, p) in enumerate(tx_packets):
        if drop(i, p):
            continue
        events += rx.receive(p, t)
        if dup(i, p):
            events += rx.receive(p, t + 0.001)
    return events


def test_receiver_once_per_event_with_loss_and_duplicates():
    rng = np.random.default_rng(11)
    digits = "0123456789*#ABCD"
    tx = DtmfSender(duration_ms=120, packet_ms=20, gap_ms=50)
    pkts = tx.packets(digits, ssrc=5, start_sequence=65530, start_timestamp=123456)
    rx = DtmfReceiver()
    lost = rng.random(len(pkts)) < 0.4

    def drop(i, p):  # lose 40 % of the non-end packets (never all three ends here)
        return bool(lost[i]) and not TelephoneEvent.parse(p.payload).end

    events = _run(pkts, rx, drop=drop, dup=lambda i, p: i % 3 == 0)
    assert [e.digit for e in events] == list(digits)
    assert all(e.duration_ms == pytest.approx(120.0) and e.end_seen for e in events)
    # sorted start timestamps, 120 + 50 ms apart -> (120+50)*8 = 1360 units...
    starts = [e.start_timestamp for e in events]
    assert starts[0] == 123456
    assert np.all(np.diff(starts) == round(0.17 * 8000))
    # late retransmission of an old end packet yields nothing
    assert rx.receive(pkts[6][1], 99.0) == []


def test_receiver_two_ends_lost_still_once():
    tx = DtmfSender(duration_ms=100)
    pkts = tx.packets("7", ssrc=1)
    ends = [i for i, (_, p) in enumerate(pkts) if TelephoneEvent.parse(p.payload).end]
    events = _run(pkts, DtmfReceiver(), drop=lambda i, p: i in ends[:2])
    assert len(events) == 1 and events[0].duration_ms == 100.0 and events[0].end_seen


def test_receiver_all_ends_lost_closes_on_next_event_or_timeout():
    tx = DtmfSender(duration_ms=100)
    pkts = tx.packets("78", ssrc=1)
    rx = DtmfReceiver(timeout_ms=200)

    def drop(i, p):
        e = TelephoneEvent.parse(p.payload)
        return e.end  # every end packet lost

    events = _run(pkts, rx, drop=drop)
    # "7" closed by the first packet of "8" with the last duration seen (80 ms)
    assert [e.digit for e in events] == ["7"]
    assert events[0].duration_ms == 80.0 and not events[0].end_seen
    last = pkts[-1][0]
    assert rx.next_timer() is not None
    assert rx.expire(last + 0.1) == []  # not yet
    (ev,) = rx.expire(last + 0.5)
    assert ev.digit == "8" and ev.duration_ms == 80.0 and not ev.end_seen
    assert rx.expire(last + 1.0) == [] and rx.next_timer() is None


def test_receiver_reordered_update_after_end_ignored():
    tx = DtmfSender(duration_ms=100)
    pkts = tx.packets("9", ssrc=1)
    rx = DtmfReceiver()
    order = [0, 1, 2, 4, 3, 5, 6]  # an update arrives after the first end
    events = []
    for i in order:
        events += rx.receive(pkts[i][1], pkts[i][0])
    assert len(events) == 1 and events[0].duration_ms == 100.0


def test_receiver_malformed_counted():
    rx = DtmfReceiver()
    assert rx.receive(RtpPacket(payload_type=101, payload=b"\x01\x02"), 0.0) == []
    assert rx.malformed == 1
