"""RTCP packets (voicelab.rtp.rtcp): golden bytes, compound checks, NTP/RTT, interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.errors import ParameterError, RemoteProtocolError
from voicelab.metrics import ReceiverStats
from voicelab.rtp.rtcp import (
    NTP_UNIX_OFFSET,
    SDES_CNAME,
    SDES_TOOL,
    App,
    Bye,
    ReceiverReport,
    ReportBlock,
    Sdes,
    SdesChunk,
    SenderReport,
    UnknownRtcp,
    is_rtcp,
    ntp_from_seconds,
    ntp_middle32,
    parse_compound,
    round_trip_time,
    rtcp_interval,
    seconds_from_ntp,
    serialize_compound,
)

# Built by hand from RFC 3550 6.4.1 (words of 32 bits):
#   81 c8 00 0c  V=2 P=0 RC=1, PT=200, length 12 (13 words = 52 bytes)
#   SSRC 0x11223344, NTP 0xe1a2b3c4.80000000, RTP ts 16000, 100 packets, 16000 octets
#   block: SSRC 0x55667788, fraction 0x40 (1/4), cumulative -3 (0xfffffd),
#          ext. highest seq 0x0001ffff, jitter 42, LSR 0x12345678, DLSR 0x00010000 (1 s)
SR = bytes.fromhex(
    "81c8000c 11223344 e1a2b3c4 80000000 00003e80 00000064 00003e80"
    "55667788 40fffffd 0001ffff 0000002a 12345678 00010000"
)
# RR, RC=0 (6.4.2): 80 c9 00 01, SSRC
RR_EMPTY = bytes.fromhex("80c90001 55667788")
# RR with one block about 0x11223344: fraction 0, cumulative 5, seq 1000, jitter 3, no SR yet
RR = bytes.fromhex("81c90007 55667788 11223344 00000005 000003e8 00000003 00000000 00000000")
# SDES (6.5), SC=1: SSRC, CNAME (type 1, len 5) "alice", END, no further padding (12-byte chunk)
SDES = bytes.fromhex("81ca0003 11223344 0105616c 69636500")
# SDES with CNAME "ab" and TOOL "x": 01 02 'a' 'b' 06 01 'x' 00 -> already aligned? 4+7+1 = 12
SDES2 = bytes.fromhex("81ca0003 11223344 01026162 06017800")
# BYE (6.6), SC=1, reason "bye" (length 3): 81 cb 00 02, SSRC, 03 'b' 'y' 'e'
BYE = bytes.fromhex("81cb0002 11223344 03627965")
# APP (6.7), subtype 3, SSRC, name "TEST", 4 data bytes
APP = bytes.fromhex("83cc0003 11223344 54455354 01020304")
COMPOUND = SR + SDES + BYE


def test_sr_golden_fields():
    sr = SenderReport.parse(SR)
    assert sr.ssrc == 0x11223344
    assert sr.ntp_timestamp == 0xE1A2B3C4_80000000
    assert sr.rtp_timestamp == 16000
    assert sr.packet_count == 100
    assert sr.octet_count == 16000
    assert sr.extension == b""
    (b,) = sr.reports
    assert b.ssrc == 0x55667788
    assert b.fraction_lost == 64 and b.fraction == 0.25
    assert b.cumulative_lost == -3
    assert b.highest_sequence == 0x0001FFFF
    assert b.jitter == 42
    assert b.lsr == 0x12345678
    assert b.dlsr == 0x10000 and b.dlsr_s == 1.0
    assert bytes(sr) == SR
    assert seconds_from_ntp(sr.ntp_timestamp) == 0xE1A2B3C4 + 0.5


def test_rr_golden():
    rr = ReceiverReport.parse(RR_EMPTY)
    assert rr.ssrc == 0x55667788 and rr.reports == ()
    assert bytes(rr) == RR_EMPTY
    rr = ReceiverReport.parse(RR)
    (b,) = rr.reports
    assert (b.ssrc, b.fraction_lost, b.cumulative_lost, b.highest_sequence, b.jitter, b.lsr, b.dlsr) == (
        0x11223344, 0, 5, 1000, 3, 0, 0,
    )
    assert bytes(rr) == RR


def test_sdes_golden():
    p = Sdes.parse(SDES)
    (c,) = p.chunks
    assert c.ssrc == 0x11223344 and c.items == ((SDES_CNAME, b"alice"),)
    assert c.cname == "alice"
    assert bytes(p) == SDES
    assert bytes(Sdes.with_cname(0x11223344, "alice")) == SDES
    p2 = Sdes.parse(SDES2)
    assert p2.chunks[0].items == ((SDES_CNAME, b"ab"), (SDES_TOOL, b"x"))
    assert bytes(p2) == SDES2


def test_sdes_chunk_needing_four_null_octets():
    # CNAME "abcdef": 4 + 2 + 6 = 12 bytes, aligned, so END takes a whole extra word.
    p = Sdes((SdesChunk(1, ((SDES_CNAME, b"abcdef"),)),))
    data = bytes(p)
    assert data == bytes.fromhex("81ca0004 00000001 0106616263646566 00000000")
    assert Sdes.parse(data) == p


def test_bye_and_app_golden():
    b = Bye.parse(BYE)
    assert b.ssrcs == (0x11223344,) and b.reason == b"bye"
    assert bytes(b) == BYE
    assert bytes(Bye((1, 2))) == bytes.fromhex("82cb0002 00000001 00000002")
    a = App.parse(APP)
    assert (a.ssrc, a.name, a.subtype, a.data) == (0x11223344, b"TEST", 3, bytes([1, 2, 3, 4]))
    assert bytes(a) == APP


def test_compound_golden_round_trip():
    packets = parse_compound(COMPOUND)
    assert [type(p) for p in packets] == [SenderReport, Sdes, Bye]
    assert packets[0] == SenderReport.parse(SR)
    assert packets[1].chunks[0].cname == "alice"
    assert packets[2].reason == b"bye"
    assert serialize_compound(packets) == COMPOUND
    assert b"".join(bytes(p) for p in packets) == COMPOUND


def test_unknown_type_kept_and_ignored():
    xr = bytes.fromhex("80cf0002 11223344 04000000")  # PT 207 (RFC 3611 XR), opaque here
    packets = parse_compound(RR_EMPTY + xr)
    assert isinstance(packets[1], UnknownRtcp) and packets[1].packet_type == 207
    assert bytes(packets[1]) == xr


BOUNDARIES = {len(SR), len(SR) + len(SDES)}


@pytest.mark.parametrize("cut", [c for c in range(1, len(COMPOUND)) if c not in BOUNDARIES])
def test_every_truncation_raises(cut):
    # Cuts at a packet boundary leave a shorter but valid compound packet (checked in
    # test_whole_input_byte_by_byte_...); every other cut must be rejected.
    with pytest.raises(RemoteProtocolError):
        parse_compound(COMPOUND[:cut])


@pytest.mark.parametrize("junk", [b"\x00", b"\x80\xc9", b"\x00\x00\x00\x00", RR_EMPTY[:4] + b"\x00"])
def test_trailing_junk_rejected(junk):
    with pytest.raises(RemoteProtocolError):
        parse_compound(COMPOUND + junk)


def test_a2_validity_checks():
    with pytest.raises(RemoteProtocolError, match="must start with SR"):
        parse_compound(SDES + SR)
    with pytest.raises(RemoteProtocolError, match="version"):
        parse_compound(bytes([0x40]) + SR[1:])
    with pytest.raises(RemoteProtocolError, match="version"):
        parse_compound(SR + bytes([0x41]) + SDES[1:])
    # padding bit on a packet that is not the last
    padded_sr = bytes([SR[0] | 0x20]) + SR[1:]
    with pytest.raises(RemoteProtocolError, match="padding"):
        parse_compound(padded_sr + SDES)
    # padding on the last packet is accepted and dropped: RR + 4 padding octets
    rr_padded = bytes.fromhex("a0c90002 55667788 00000004")
    assert parse_compound(rr_padded) == [ReceiverReport(0x55667788)]
    # length field too long / RC claims more blocks than present
    with pytest.raises(RemoteProtocolError):
        parse_compound(bytes.fromhex("80c90002 55667788"))
    with pytest.raises(RemoteProtocolError, match="report blocks"):
        parse_compound(bytes.fromhex("81c90001 55667788"))


def test_whole_input_byte_by_byte_prefixes_only_valid_at_packet_boundaries():
    valid_ends = {len(SR), len(SR) + len(SDES), len(COMPOUND)}
    for cut in range(1, len(COMPOUND) + 1):
        try:
            parse_compound(COMPOUND[:cut])
            ok = True
        except RemoteProtocolError:
            ok = False
        assert ok == (cut in valid_ends), cut


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_any_bytes(data):
    try:
        packets = parse_compound(data)
    except RemoteProtocolError:
        return
    # whatever parses re-serializes to a valid compound packet with the same packets
    assert parse_compound(b"".join(bytes(p) for p in packets)) == packets


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=4, max_size=120))
def test_fuzz_with_valid_header(body):
    # start with a plausible RR header so the fuzzer gets past the first checks
    words = (len(body) + 4) // 4
    data = bytes([0x80 | (body[0] & 0x1F), 201]) + (words - 1).to_bytes(2, "big") + body[: 4 * words - 4]
    try:
        parse_compound(data + body[4 * words - 4 :])
    except RemoteProtocolError:
        pass


def test_constructor_checks():
    with pytest.raises(ParameterError):
        ReportBlock(ssrc=1, cumulative_lost=1 << 23)
    with pytest.raises(ParameterError):
        ReportBlock(ssrc=1, fraction_lost=256)
    with pytest.raises(ParameterError):
        ReceiverReport(1, reports=[ReportBlock(i) for i in range(32)])
    with pytest.raises(ParameterError):
        App(1, name=b"TOOLONG")
    with pytest.raises(ParameterError):
        serialize_compound([Sdes.with_cname(1, "x")])
    with pytest.raises(ParameterError):
        serialize_compound([])


def test_report_block_from_stats():
    st_ = ReceiverStats(8000)
    for i in list(range(10)) + list(range(12, 50)):  # two lost
        st_.update(i, i * 160, i * 0.02)
    b = ReportBlock.from_stats(st_.report(1.0), ssrc=9, lsr=5, dlsr=6)
    assert (b.ssrc, b.cumulative_lost, b.highest_sequence, b.lsr, b.dlsr) == (9, 2, 49, 5, 6)
    assert b.fraction_lost == (2 << 8) // 49
    assert ReportBlock.parse(bytes(b)) == b


def test_demux_rfc5761():
    assert is_rtcp(SR) and is_rtcp(RR) and is_rtcp(SDES)
    assert not is_rtcp(bytes.fromhex("80000001 000000a0 deadbeef"))  # PCMU
    assert not is_rtcp(bytes.fromhex("80e50001 000000a0 deadbeef"))  # M=1, PT 101
    assert not is_rtcp(b"\x80")


# ----------------------------------------------------------------------------- NTP, RTT
def test_ntp_conversions():
    assert ntp_from_seconds(1.5) == (1 << 32) | (1 << 31)
    t = NTP_UNIX_OFFSET + 1_700_000_000.123456
    x = ntp_from_seconds(t)
    assert abs(seconds_from_ntp(x) - t) < 1e-6
    assert ntp_middle32(x) == (x >> 16) & 0xFFFFFFFF
    with pytest.raises(ParameterError):
        ntp_from_seconds(-1.0)
    with pytest.raises(ParameterError):
        ntp_from_seconds(float("nan"))


def test_round_trip_time_rfc_example():
    # RFC 3550 6.4.1 figure: A = 0xb710:8000 (46864.500 s), LSR = 0xb705:2000 (46853.125 s),
    # DLSR = 0x0005:4000 (5.250 s) -> delay 6.125 s.
    assert round_trip_time(0xB7108000, 0xB7052000, 0x00054000) == 6.125
    assert round_trip_time(0xB7108000, 0, 0) is None
    # wrap-around of the 16.16 clock
    assert round_trip_time(0x00001000, 0xFFFFF000, 0) == 0x2000 / 65536
    # would be negative: clamped to 0
    assert round_trip_time(0x10000, 0x20000, 0) == 0.0


def test_simulated_sr_rr_exchange_rtt():
    """A sends an SR; B holds it, answers with an RR; A computes A - LSR - DLSR."""
    rng = np.random.default_rng(7)
    epoch_a = NTP_UNIX_OFFSET + 1_700_000_000.0
    for _ in range(50):
        t_send = float(rng.uniform(0, 1000))
        d_ab, hold, d_ba = (float(v) for v in rng.uniform([0.001, 0.0, 0.001], [0.3, 5.0, 0.3]))
        sr = SenderReport(ssrc=1, ntp_timestamp=ntp_from_seconds(epoch_a + t_send))
        sr_rx = SenderReport.parse(bytes(sr))
        # B's clock is unrelated; it only measures its holding time
        lsr = ntp_middle32(sr_rx.ntp_timestamp)
        dlsr = round(hold * 65536)
        rr = ReceiverReport.parse(bytes(ReceiverReport(2, (ReportBlock(1, lsr=lsr, dlsr=dlsr),))))
        arrival = t_send + d_ab + hold + d_ba
        a = ntp_middle32(ntp_from_seconds(epoch_a + arrival))
        rtt = round_trip_time(a, rr.reports[0].lsr, rr.reports[0].dlsr)
        # A and LSR are truncated to 1/65536 s and DLSR rounded: |error| < 1.5/65536
        assert abs(rtt - (d_ab + d_ba)) < 1.5 / 65536


# ----------------------------------------------------------------------------- interval
def test_rtcp_interval_deterministic_part_and_statistics():
    rng = np.random.default_rng(2024)
    comp = math.e - 1.5
    # 2 members both sending, 64 kbit/s session -> rtcp_bw = 400 B/s; 120 B -> 0.6 s < 5 s min
    ts = np.array([rtcp_interval(2, 2, 400.0, True, 120.0, False, rng) for _ in range(4000)])
    assert ts.min() >= 0.5 * 5.0 / comp and ts.max() < 1.5 * 5.0 / comp
    assert abs(ts.mean() - 5.0 / comp) < 0.03 * 5.0 / comp  # mean of U(0.5,1.5) is 1
    # uniform spread: std of U(0.5,1.5) x 5/comp is 5/comp/sqrt(12)
    assert abs(ts.std() - 5.0 / comp / math.sqrt(12)) < 0.05 * 5.0 / comp / math.sqrt(12)
    # initial: minimum halved
    t0 = np.array([rtcp_interval(2, 2, 400.0, True, 120.0, True, rng) for _ in range(2000)])
    assert abs(t0.mean() - 2.5 / comp) < 0.04 * 2.5 / comp


def test_rtcp_interval_large_session_bandwidth_shares():
    rng = np.random.default_rng(1)
    comp = math.e - 1.5
    # 100 members, 2 senders, 1000 B/s RTCP, 100 B packets:
    #   we are a sender: n = 2, bw = 250 -> 0.8 s -> floored at 5 s
    #   we are a receiver: n = 98, bw = 750 -> 13.07 s
    det = 100.0 * 98 / 750.0
    ts = np.array([rtcp_interval(100, 2, 1000.0, False, 100.0, False, rng) for _ in range(4000)])
    assert 0.5 * det / comp <= ts.min() and ts.max() < 1.5 * det / comp
    assert abs(ts.mean() - det / comp) < 0.03 * det / comp
    # senders above a quarter: everybody shares the whole bandwidth
    det2 = 100.0 * 100 / 1000.0
    ts2 = np.array([rtcp_interval(100, 60, 1000.0, True, 100.0, False, rng) for _ in range(4000)])
    assert abs(ts2.mean() - det2 / comp) < 0.03 * det2 / comp


def test_rtcp_interval_reduced_minimum_and_checks():
    rng = np.random.default_rng(3)
    comp = math.e - 1.5
    # 1 Mbit/s session -> rtcp_bw 6250 B/s; reduced minimum 360 / 1000 = 0.36 s
    ts = np.array([rtcp_interval(2, 2, 6250.0, True, 100.0, False, rng, reduced_minimum=True) for _ in range(3000)])
    assert abs(ts.mean() - 0.36 / comp) < 0.03 * 0.36 / comp
    with pytest.raises(ParameterError):
        rtcp_interval(2, 3, 400.0, True, 100.0, False, rng)
    with pytest.raises(ParameterError):
        rtcp_interval(2, 1, 0.0, True, 100.0, False, rng)
    with pytest.raises(ParameterError):
        rtcp_interval(2, 1, 400.0, True, 100.0, False, 42)
    # same seed -> same intervals
    a = [rtcp_interval(2, 2, 400.0, True, 100.0, False, np.random.default_rng(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


u32 = st.integers(0, 2**32 - 1)
blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(-(2**23), 2**23 - 1),
    highest_sequence=u32,
    jitter=u32,
    lsr=u32,
    dlsr=u32,
)
reports_st = st.lists(blocks, max_size=3).map(tuple)
words = st.binary(max_size=12).map(lambda b: b[: len(b) - len(b) % 4])
first = st.one_of(
    st.builds(SenderReport, ssrc=u32, ntp_timestamp=st.integers(0, 2**64 - 1), rtp_timestamp=u32,
              packet_count=u32, octet_count=u32, reports=reports_st, extension=words),
    st.builds(ReceiverReport, ssrc=u32, reports=reports_st, extension=words),
)
items = st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=20)), max_size=3).map(tuple)
others = st.one_of(
    st.builds(Sdes, chunks=st.lists(st.builds(SdesChunk, ssrc=u32, items=items), max_size=3).map(tuple)),
    st.builds(Bye, ssrcs=st.lists(u32, max_size=3).map(tuple), reason=st.one_of(st.none(), st.binary(max_size=30))),
    st.builds(App, ssrc=u32, name=st.binary(min_size=4, max_size=4), subtype=st.integers(0, 31), data=words),
)


@settings(max_examples=300, deadline=None)
@given(first, st.lists(others, max_size=4))
def test_any_built_compound_round_trips(head, tail):
    packets = [head, *tail]
    data = serialize_compound(packets)
    assert parse_compound(data) == packets
    assert serialize_compound(parse_compound(data)) == data
    for cut in range(1, len(data)):
        try:
            parse_compound(data[:cut])
        except RemoteProtocolError:
            pass
