"""RtpSession (voicelab.rtp.session): two sessions back to back over voicelab.net.Channel.

Everything runs on a fake clock: a small event loop delivers each datagram at the
arrival time the channel model gives it and fires each session's timer when due.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.errors import ParameterError
from voicelab.net import Channel, ChannelConfig
from voicelab.rtp import RtpPacket
from voicelab.rtp.dtmf import DtmfSender
from voicelab.rtp.rtcp import NTP_UNIX_OFFSET, SenderReport, ntp_middle32, parse_compound
from voicelab.rtp.session import (
    ByeReceived,
    DtmfReceived,
    RemoteAddressLatched,
    RemoteReportReceived,
    RtcpReceived,
    RtpReceived,
    RtpSession,
    SsrcChanged,
)
from voicelab.rtp.srtp import SrtpContext

EPOCH = NTP_UNIX_OFFSET + 1_700_000_000.0
ADDR_A = ("10.0.0.1", 4000)
ADDR_B = ("10.0.0.2", 5000)
PTIME = 0.020


def make(name, seed, remote, **kw):
    kw.setdefault("epoch_offset", EPOCH)
    kw.setdefault("cname", f"{name}@lab")
    return RtpSession(payload_type=0, clock_rate=8000, timestamp_increment=160, rng=seed, remote_addr=remote, **kw)


class Call:
    """Two sessions, two one-way channels, one fake clock."""

    def __init__(self, cfg_ab, cfg_ba, *, seed=0, a_kw=None, b_kw=None):
        self.a = make("a", seed + 1, ADDR_B, **(a_kw or {}))
        # B's NTP clock is offset from A's: RTT must not depend on synchronised clocks.
        self.b = make("b", seed + 2, ADDR_A, **{"epoch_offset": EPOCH + 12.345, **(b_kw or {})})
        self.ch = {"ab": Channel(cfg_ab, seed=seed + 10), "ba": Channel(cfg_ba, seed=seed + 20)}
        self.heap = []
        self.n = 0
        self.events = {"a": [], "b": []}
        self.rtp_fates = {"ab": [], "ba": []}  # (send time, arrival or None) per RTP packet
        self.sr_transit = {"ab": {}, "ba": {}}  # SR middle32 -> one-way transit
        self.rtt_checks = []  # (measured, expected)

    def send(self, direction, data, now, kind):
        arrivals = self.ch[direction].transmit(now, len(data) + 28)
        if kind == "rtp":
            self.rtp_fates[direction].append((now, arrivals[0] if arrivals else None))
        else:
            for p in parse_compound(data):
                if isinstance(p, SenderReport) and arrivals:
                    self.sr_transit[direction][ntp_middle32(p.ntp_timestamp)] = arrivals[0] - now
        for t in arrivals:
            self.n += 1
            heapq.heappush(self.heap, (t, self.n, direction, data, now, kind))

    def run(self, duration, *, frame=lambda who, i: bytes(160), extra=None):
        a, b = self.a, self.b
        a.start(0.0)
        b.start(0.0)
        i = 0
        now = 0.0
        while True:
            t_frame = i * PTIME
            candidates = [t_frame, a.next_timer(), b.next_timer(), self.heap[0][0] if self.heap else math.inf]
            now = min(c for c in candidates if c is not None)
            if now > duration:
                break
            if now == t_frame:
                self.send("ab", a.send_frame(frame("a", i), now), now, "rtp")
                self.send("ba", b.send_frame(frame("b", i), now), now, "rtp")
                if extra:
                    extra(self, i, now)
                i += 1
            if self.heap and self.heap[0][0] <= now:
                t, _, direction, data, sent, kind = heapq.heappop(self.heap)
                dst, who, src = (b, "b", ADDR_A) if direction == "ab" else (a, "a", ADDR_B)
                evs = dst.receive(data, t, src)
                self.events[who] += evs
                back = "ba" if direction == "ab" else "ab"
                for ev in evs:
                    if isinstance(ev, RemoteReportReceived) and ev.rtt_s is not None:
                        lsr = next(
                            blk.lsr
                            for p in parse_compound(data)
                            if hasattr(p, "reports")
                            for blk in p.reports
                            if blk.ssrc == dst.ssrc
                        )
                        if lsr in self.sr_transit[back]:
                            self.rtt_checks.append((ev.rtt_s, self.sr_transit[back][lsr] + (t - sent)))
            for s, d in ((a, "ab"), (b, "ba")):
                nt = s.next_timer()
                if nt is not None and nt <= now:
                    for data in s.handle_timer(now):
                        self.send(d, data, now, "rtcp")
                    self.events["a" if s is a else "b"] += s.pop_events()


def fire(session, not_before):
    """Run the session's timer until it sends a report; return (time, datagram)."""
    while True:
        t = max(session.next_timer(), not_before)
        out = session.handle_timer(t)
        if out:
            return t, out[0]


def reports(events):
    return [e for e in events if isinstance(e, RemoteReportReceived)]


def test_back_to_back_loss_jitter_rtt():
    sigma = 5.0
    cfg = ChannelConfig(delay_ms=40.0, jitter_ms=sigma, loss_rate=0.05)
    cfg_back = ChannelConfig(delay_ms=25.0, jitter_ms=sigma, loss_rate=0.05)
    call = Call(cfg, cfg_back, seed=4)
    call.run(30.0)
    for who, direction, session in (("a", "ab", call.a), ("b", "ba", call.b)):
        reps = reports(call.events[who])
        assert len(reps) >= 4  # ~30 s / 4.1 s mean interval
        last = reps[-1]
        fates = call.rtp_fates[direction]
        # exact: what the peer counts as lost is what the channel dropped (up to the
        # first packet, which RFC 3550 probation does not count)
        n_expected = last.highest_sequence - (session.packetizer.initial_sequence + 1) + 1
        lost_exact = sum(1 for _, arr in fates[1 : 1 + n_expected] if arr is None)
        assert abs(last.cumulative_lost - lost_exact) <= 1
        # statistical: 5 % within 3 sigma of the binomial sampling error
        rate = last.cumulative_lost / n_expected
        assert abs(rate - 0.05) < 3 * math.sqrt(0.05 * 0.95 / n_expected)
        mean_fraction = np.mean([r.fraction for r in reps])
        assert abs(mean_fraction - 0.05) < 0.025
        # jitter: the RFC estimator tracks E|D|, D = transit difference of consecutive
        # arrivals; for normal jitter that is 2 sigma / sqrt(pi)
        transits = [arr - t for t, arr in fates if arr is not None]
        ref_ms = 1000 * float(np.mean(np.abs(np.diff(transits))))
        assert abs(ref_ms - 2 * sigma / math.sqrt(math.pi)) < 0.1 * ref_ms
        jit = np.mean([r.jitter_ms for r in reps])
        assert abs(jit - ref_ms) < 0.2 * ref_ms, (jit, ref_ms)
    # RTT: measured equals the actual SR transit + report transit within 1/65536 s
    assert len(call.rtt_checks) >= 6
    for measured, expected in call.rtt_checks:
        assert abs(measured - expected) <= 1 / 65536
    mean_rtt = np.mean([m for m, _ in call.rtt_checks])
    assert abs(mean_rtt - 0.065) < 0.01
    assert call.a.stats.rtt_s is not None and call.b.stats.rtt_s is not None


def test_reports_are_sr_with_counts_and_cname():
    call = Call(ChannelConfig(delay_ms=10.0), ChannelConfig(delay_ms=10.0), seed=1)
    call.run(12.0)
    rtcp = [e for e in call.events["b"] if isinstance(e, RtcpReceived)]
    assert rtcp
    for ev in rtcp:
        sr, sdes = ev.packets
        assert isinstance(sr, SenderReport) and sr.ssrc == call.a.ssrc
        assert sdes.chunks[0].cname == "a@lab"
        # all A's packets were sent every 20 ms from t=0; the SR left 10 ms before arrival
        sent_at = ev.arrival - 0.010
        assert sr.packet_count == math.floor(sent_at / PTIME + 1e-9) + 1
        assert sr.octet_count == 160 * sr.packet_count
        assert ntp_middle32(sr.ntp_timestamp) == ntp_middle32(int((EPOCH + sent_at) * 2**32))
        # the RTP timestamp corresponds to the NTP instant
        ts0 = call.a.packetizer.initial_timestamp
        assert (sr.rtp_timestamp - ts0) % 2**32 == round(sent_at * 8000)
    # first report after the randomised half minimum: [1.25, 3.75) / (e - 1.5) s
    first = rtcp[0].arrival - 0.010
    assert 1.25 / (math.e - 1.5) <= first < 3.75 / (math.e - 1.5)
    gaps = np.diff([e.arrival for e in rtcp])
    assert np.all(gaps >= 2.5 / (math.e - 1.5) - 1e-9) and np.all(gaps < 7.5 / (math.e - 1.5))


def test_receiver_only_sends_rr_and_close_sends_bye():
    a = make("a", 1, ADDR_B)
    b = make("b", 2, ADDR_A)
    a.start(0.0)
    for i in range(100):
        b.receive(a.send_frame(bytes(160), i * PTIME), i * PTIME + 0.01, ADDR_A)
    t = b.next_timer()
    (data,) = b.handle_timer(t)
    rr = parse_compound(data)[0]
    assert type(rr).__name__ == "ReceiverReport" and rr.reports[0].ssrc == a.ssrc
    assert rr.reports[0].lsr == 0  # B never got an SR
    evs = a.receive(b.close(t + 1, reason="done"), t + 1.01, ADDR_B)
    assert [type(e) for e in evs] == [RtcpReceived, RemoteReportReceived, ByeReceived]
    assert evs[1].rtt_s is None and evs[2].reason == "done" and evs[2].ssrcs == (b.ssrc,)
    assert b.next_timer() is None


def test_srtp_session_drops_and_counts_forgeries():
    ka, kb = bytes(range(30)), bytes(range(30, 60))
    a = make("a", 1, ADDR_B, srtp=SrtpContext.from_sdes(ka, kb))
    b = make("b", 2, ADDR_A, srtp=SrtpContext.from_sdes(kb, ka))
    got = []
    for i in range(10):
        data = a.send_frame(bytes([i]) * 160, i * PTIME)
        assert len(data) == 12 + 160 + 10
        if i == 5:
            # libsrtp checks replay before the tag, so forge a fresh index first
            tampered = data[:-1] + bytes([data[-1] ^ 0xFF])
            assert b.receive(tampered, i * PTIME + 0.009, ADDR_A) == []
        got += b.receive(data, i * PTIME + 0.01, ADDR_A)
        if i == 5:
            assert b.receive(data, i * PTIME + 0.012, ADDR_A) == []  # replay
    media = [e for e in got if isinstance(e, RtpReceived)]
    assert [e.packet.payload[0] for e in media] == list(range(10))
    assert b.stats.srtp_auth_failures == 1 and b.stats.srtp_replays == 1
    assert b.stats.packets_received == 10
    # SRTCP both ways: RTT from a protected SR / RR exchange
    t_sr, sr = fire(a, 0.2)
    assert (len(sr) - 14) % 4 == 0  # SRTCP: E+index (4) + tag (10) after the RTCP
    b.receive(sr, t_sr + 0.01, ADDR_A)
    t, rr = fire(b, t_sr + 0.01)
    evs = a.receive(rr, t + 0.02, ADDR_B)
    rep = [e for e in evs if isinstance(e, RemoteReportReceived)]
    assert rep and rep[0].rtt_s == pytest.approx(0.03, abs=1 / 65536)


def test_latching_comedia():
    sdp_addr = ("192.168.1.20", 4000)  # private address in the peer's SDP
    nat_addr = ("203.0.113.7", 61000)  # where its packets really come from
    pk = make("x", 9, None)
    # latching off: packets from another host are dropped
    strict = make("s", 1, sdp_addr, latching=False)
    assert strict.receive(pk.send_frame(b"x", 0.0), 0.01, nat_addr) == []
    assert strict.stats.foreign_source_drops == 1 and strict.remote_addr == sdp_addr
    # ... media from another port of the SDP host is received, but not followed:
    # a plain endpoint keeps sending where signalling told it to
    evs = strict.receive(pk.send_frame(b"x", 0.02), 0.03, ("192.168.1.20", 4002))
    assert any(isinstance(e, RtpReceived) for e in evs)
    assert strict.remote_addr == sdp_addr
    assert not any(isinstance(e, RemoteAddressLatched) for e in evs)
    # latching on: the first valid packet from anywhere wins, later others are dropped
    s = make("s", 1, sdp_addr, latching=True)
    assert s.receive(b"\x80\x00junk", 0.0, ("198.51.100.1", 1)) == []  # invalid: no latch
    assert s.remote_addr == sdp_addr
    evs = s.receive(pk.send_frame(b"y", 0.04), 0.05, nat_addr)
    latched = [e for e in evs if isinstance(e, RemoteAddressLatched)]
    assert {e.kind for e in latched} == {"rtp", "rtcp"} and s.remote_addr == nat_addr == s.remote_rtcp_addr
    attacker = make("e", 5, None)
    assert s.receive(attacker.send_frame(b"z", 0.06), 0.07, ("198.51.100.1", 1)) == []
    assert s.stats.foreign_source_drops == 1
    s.unlatch()
    assert any(isinstance(e, RtpReceived) for e in s.receive(pk.send_frame(b"w", 0.08), 0.09, nat_addr))


def test_ssrc_change_needs_two_sequential_packets():
    s = make("s", 1, ADDR_A)
    old = make("o", 2, None)
    new = make("n", 3, None)
    for i in range(5):
        s.receive(old.send_frame(b"a", i * PTIME), i * PTIME, ADDR_A)
    assert s.receive(new.send_frame(b"b", 0.1), 0.1, ADDR_A) == []  # one stray packet
    assert s.stats.foreign_ssrc_drops == 1 and s.remote_ssrc == old.ssrc
    evs = s.receive(new.send_frame(b"b", 0.12), 0.12, ADDR_A)
    assert isinstance(evs[0], SsrcChanged) and (evs[0].old_ssrc, evs[0].new_ssrc) == (old.ssrc, new.ssrc)
    assert s.remote_ssrc == new.ssrc and isinstance(evs[1], RtpReceived)


def test_dtmf_through_session_with_loss():
    s = make("s", 1, ADDR_A, dtmf_payload_type=101)
    tx = DtmfSender(duration_ms=100)
    pkts = tx.packets("15#", ssrc=777, payload_type=101, start_sequence=10, start_timestamp=5000)
    rng = np.random.default_rng(2)
    events = []
    for k, (t, p) in enumerate(pkts):
        end = p.payload[1] & 0x80
        if not end and k > 1 and rng.random() < 0.3:
            continue  # lose some non-end packets
        events += s.receive(bytes(p), t, ADDR_A)
    dtmf = [e for e in events if isinstance(e, DtmfReceived)]
    assert [(e.digit, e.duration_ms) for e in dtmf] == [("1", 100.0), ("5", 100.0), ("#", 100.0)]
    assert not any(isinstance(e, RtpReceived) for e in events)
    # an unexpected payload type is dropped and counted
    assert s.receive(bytes(RtpPacket(payload_type=8, ssrc=777, sequence_number=100)), 9.0, ADDR_A) == []
    assert s.stats.unexpected_payload_drops == 1


def test_demux_and_parameters():
    s = make("s", 1, ADDR_A, rtcp_mux=False)
    assert s.remote_rtcp_addr == ("10.0.0.1", 4001)
    with pytest.raises(ParameterError):
        s.receive(b"\x80\x00", 0.0, ADDR_A)
    with pytest.raises(ParameterError):
        s.receive(b"\x80\x00", 0.0, ADDR_A, kind="rtpx")
    assert s.receive(b"\x80\xc9\x00\x05", 0.0, ("10.0.0.1", 4001), kind="rtcp") == []
    assert s.stats.malformed == 1
    with pytest.raises(ParameterError):
        make("s", 1, ADDR_A, bitrate=0)
    with pytest.raises(ParameterError):
        make("s", 1, ADDR_A, cname="")
    # same seeds -> same SSRC and same RTCP schedule
    x, y = make("s", 7, ADDR_A), make("s", 7, ADDR_A)
    x.start(0.0)
    y.start(0.0)
    assert x.ssrc == y.ssrc and x.next_timer() == y.next_timer()


def test_send_dtmf_end_to_end_over_lossy_channel():
    cfg = ChannelConfig(delay_ms=30.0, jitter_ms=3.0, loss_rate=0.05)
    call = Call(cfg, cfg, seed=3, a_kw={"dtmf_payload_type": 101}, b_kw={"dtmf_payload_type": 101})

    def extra(c, i, now):
        if i == 10:
            c.a.send_dtmf("159#", duration_ms=100)

    call.run(3.0, extra=extra)
    dtmf = [e for e in call.events["b"] if isinstance(e, DtmfReceived)]
    assert [e.digit for e in dtmf] == list("159#")
    assert all(e.duration_ms == 100.0 for e in dtmf if e.end_seen)
    assert sum(e.end_seen for e in dtmf) >= 3
    # audio timestamps stay on the real-time grid around the tones
    ts0 = call.a.packetizer.initial_timestamp
    seq0 = call.a.packetizer.initial_sequence
    audio = [e.packet for e in call.events["b"] if isinstance(e, RtpReceived)]
    assert all((p.timestamp - ts0) % 2**32 == 160 * ((p.sequence_number - seq0) % 65536) for p in audio)
    # the tone of digit k starts at frame 11 + k * (160 ms / 20 ms)
    starts = [(e.start_timestamp - ts0) % 2**32 for e in dtmf]
    assert starts == [160 * (11 + 8 * k) for k in range(4)]
    assert not call.a.dtmf_pending
    with pytest.raises(ParameterError):
        make("z", 1, ADDR_A).send_dtmf("1")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=6))
def test_fuzz_receive_never_raises(datagrams):
    s = make("s", 1, ADDR_A, dtmf_payload_type=101)
    for k, d in enumerate(datagrams):
        s.receive(d, 0.01 * k, ADDR_A)
    st_ = s.stats
    accepted = st_.packets_received + st_.rtcp_received
    dropped = st_.malformed + st_.foreign_ssrc_drops + st_.unexpected_payload_drops
    assert accepted + dropped == len(datagrams)


def test_a_frame_prepared_ahead_is_the_datagram_send_frame_gives_and_counts_once_sent():
    a, b = make("a", 7, ("127.0.0.1", 2)), make("a", 7, ("127.0.0.1", 2))  # twins: same seed
    a.start(0.0)
    b.start(0.0)
    for k in range(5):
        payload = bytes([k]) * 160
        data, ts, octets = a.prepare_frame(payload, marker=k == 0)
        assert a.stats.packets_sent == k  # built, not sent: RTCP does not count it yet
        a.frame_sent(0.02 * (k + 1), ts, octets)
        assert data == b.send_frame(payload, 0.02 * (k + 1), marker=k == 0)
        assert (a.stats.packets_sent, a.stats.octets_sent) == (k + 1, 160 * (k + 1))
    # the sender reports of both map RTP time to NTP time from the real send times alike
    reports = a.handle_timer(10.0)
    assert reports and reports == b.handle_timer(10.0)
