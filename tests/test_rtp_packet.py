"""RTP packets (golden bytes, round trip, truncation, junk, fuzzing) and the packetizer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.errors import ParameterError, RemoteProtocolError
from voicelab.rtp import RTP_HEADER_BYTES, Packetizer, RtpPacket, overhead_bytes

# PCMU (PT 0), sequence 1, timestamp 160, SSRC 0xdeadbeef, 4 payload bytes.
SIMPLE = bytes.fromhex("80 00 00 01 00 00 00 a0 de ad be ef" "ff fe 7f 00")

# Everything set, built by hand from RFC 3550 5.1 / 5.3.1:
#   b0 = V=2 (10) P=1 X=1 CC=2 (0010)  -> 1011 0010 = 0xb2
#   b1 = M=1 PT=111                    -> 1110 1111 = 0xef
#   seq 0xffff, ts 0xffffffff, SSRC 0x12345678, CSRC 1 and 2,
#   extension: profile 0xbede, length 1 word, data 10 aa 00 00,
#   payload "abc", padding 3 octets (00 00 03).
FULL = bytes.fromhex(
    "b2 ef ff ff ff ff ff ff 12 34 56 78"
    "00 00 00 01 00 00 00 02"
    "be de 00 01 10 aa 00 00"
    "61 62 63"
    "00 00 03"
)
FULL_HEADER = 12 + 8 + 8


def test_simple_golden_fields():
    p = RtpPacket.parse(SIMPLE)
    assert p.version == 2
    assert not p.padding and not p.extension and not p.marker
    assert p.payload_type == 0
    assert p.sequence_number == 1
    assert p.timestamp == 160
    assert p.ssrc == 0xDEADBEEF
    assert p.csrc == ()
    assert p.extension_profile is None and p.extension_data == b""
    assert p.payload == bytes.fromhex("ff fe 7f 00")
    assert p.padding_size == 0
    assert p.header_bytes == RTP_HEADER_BYTES
    assert bytes(p) == SIMPLE


def test_full_golden_fields():
    p = RtpPacket.parse(FULL)
    assert p.version == 2
    assert p.padding and p.extension and p.marker
    assert p.payload_type == 111
    assert p.sequence_number == 0xFFFF
    assert p.timestamp == 0xFFFFFFFF
    assert p.ssrc == 0x12345678
    assert p.csrc == (1, 2)
    assert p.extension_profile == 0xBEDE
    assert p.extension_data == bytes.fromhex("10 aa 00 00")
    assert p.payload == b"abc"
    assert p.padding_size == 3
    assert p.header_bytes == FULL_HEADER
    assert bytes(p) == FULL


def test_build_then_serialize_matches_golden():
    p = RtpPacket(
        marker=True,
        payload_type=111,
        sequence_number=0xFFFF,
        timestamp=0xFFFFFFFF,
        ssrc=0x12345678,
        csrc=(1, 2),
        extension_profile=0xBEDE,
        extension_data=bytes.fromhex("10 aa 00 00"),
        payload=b"abc",
        padding_size=3,
    )
    assert bytes(p) == FULL
    assert RtpPacket.parse(bytes(p)) == p


def test_empty_extension_and_empty_payload():
    p = RtpPacket(extension_profile=0x1000)
    data = bytes(p)
    assert len(data) == 16
    assert RtpPacket.parse(data) == p


@pytest.mark.parametrize("golden", [SIMPLE, FULL], ids=["simple", "full"])
def test_truncated_header_at_every_position_is_rejected(golden):
    header = RtpPacket.parse(golden).header_bytes
    for n in range(header):
        with pytest.raises(RemoteProtocolError) as info:
            RtpPacket.parse(golden[:n])
        assert info.value.status_code == 400


def test_truncated_payload_without_padding_is_a_shorter_payload():
    for n in range(RTP_HEADER_BYTES, len(SIMPLE) + 1):
        assert RtpPacket.parse(SIMPLE[:n]).payload == SIMPLE[RTP_HEADER_BYTES:n]


def test_truncated_padded_packet_never_crashes():
    # Cutting a padded packet moves the padding count: parse or reject, nothing else.
    for n in range(len(FULL) + 1):
        try:
            p = RtpPacket.parse(FULL[:n])
        except RemoteProtocolError:
            continue
        assert p.padding_size == FULL[n - 1]


def test_fed_one_byte_at_a_time_only_the_whole_packet_parses_to_the_golden():
    parsed = []
    for n in range(1, len(FULL) + 1):
        try:
            parsed.append(RtpPacket.parse(FULL[:n]))
        except RemoteProtocolError:
            pass
    assert parsed[-1] == RtpPacket.parse(FULL)
    assert all(p != parsed[-1] for p in parsed[:-1])


def test_trailing_junk_is_payload():
    junk = b"\x01\x02\x03junk"
    p = RtpPacket.parse(SIMPLE + junk)
    assert p.payload == SIMPLE[12:] + junk
    assert bytes(p) == SIMPLE + junk


def test_trailing_junk_after_padding_changes_the_count():
    # With P set, the last octet is the padding count: junk ending in 0 is invalid ...
    with pytest.raises(RemoteProtocolError, match="padding count is 0"):
        RtpPacket.parse(FULL + b"\x07\x00")
    # ... junk ending in a count larger than what follows the header is invalid ...
    with pytest.raises(RemoteProtocolError, match="padding count 200"):
        RtpPacket.parse(FULL + bytes([200]))
    # ... and a plausible count just re-splits payload and padding.
    p = RtpPacket.parse(FULL + b"\x02")
    assert p.padding_size == 2 and p.payload == b"abc\x00\x00"


def test_padding_bit_without_room_for_the_count():
    header_only = bytes([0xA0]) + SIMPLE[1:12]  # P=1, nothing after the header
    with pytest.raises(RemoteProtocolError, match="no padding count"):
        RtpPacket.parse(header_only)


@pytest.mark.parametrize("version", [0, 1, 3])
def test_wrong_version_is_rejected(version):
    data = bytes([(version << 6) | (SIMPLE[0] & 0x3F)]) + SIMPLE[1:]
    with pytest.raises(RemoteProtocolError, match=f"version is {version}"):
        RtpPacket.parse(data)


def test_extension_length_beyond_the_packet():
    data = bytes([0x90]) + SIMPLE[1:12] + bytes.fromhex("be de 00 05") + b"\x00" * 8
    with pytest.raises(RemoteProtocolError, match="announces 5 words"):
        RtpPacket.parse(data)


def test_csrc_count_beyond_the_packet():
    data = bytes([0x8F]) + SIMPLE[1:12] + b"\x00" * 20
    with pytest.raises(RemoteProtocolError, match="15 CSRC"):
        RtpPacket.parse(data)


@pytest.mark.parametrize("bad", ["80000001", None, 12345, [0x80] * 12])
def test_non_bytes_input_is_a_protocol_error(bad):
    with pytest.raises(RemoteProtocolError):
        RtpPacket.parse(bad)


def test_bytearray_and_memoryview_accepted():
    assert RtpPacket.parse(bytearray(SIMPLE)) == RtpPacket.parse(memoryview(SIMPLE))


@given(st.binary(max_size=120))
@settings(max_examples=600, deadline=None)
def test_fuzz_any_bytes_parse_or_raise_remote_protocol_error(data):
    try:
        p = RtpPacket.parse(data)
    except RemoteProtocolError as exc:
        assert exc.status_code == 400
        assert "\n" not in str(exc)
        return
    # A parsed packet re-serializes to something that parses to the same packet, and
    # to exactly the input when its padding octets (free content) are zero.
    again = bytes(p)
    assert RtpPacket.parse(again) == p
    pad_content = data[len(data) - p.padding_size : len(data) - 1] if p.padding_size else b""
    if not any(pad_content):
        assert again == data


@given(
    marker=st.booleans(),
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    ext=st.one_of(st.none(), st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12))),
    payload=st.binary(max_size=64),
    padding_size=st.integers(0, 255),
)
@settings(max_examples=300, deadline=None)
def test_fuzz_any_valid_packet_round_trips(marker, payload_type, sequence_number, timestamp, ssrc, csrc, ext, payload, padding_size):
    profile, ext_data = (None, b"") if ext is None else (ext[0], ext[1][: len(ext[1]) // 4 * 4])
    p = RtpPacket(
        marker=marker,
        payload_type=payload_type,
        sequence_number=sequence_number,
        timestamp=timestamp,
        ssrc=ssrc,
        csrc=csrc,
        extension_profile=profile,
        extension_data=ext_data,
        payload=payload,
        padding_size=padding_size,
    )
    data = bytes(p)
    assert len(data) == p.header_bytes + len(payload) + padding_size
    assert RtpPacket.parse(data) == p


@pytest.mark.parametrize(
    "kwargs",
    [
        {"payload_type": 128},
        {"sequence_number": 65536},
        {"sequence_number": -1},
        {"timestamp": 2**32},
        {"ssrc": 1.5},
        {"csrc": tuple(range(16))},
        {"extension_profile": 0x10000},
        {"extension_profile": 1, "extension_data": b"abc"},
        {"extension_data": b"abcd"},
        {"padding_size": 256},
        {"payload": "text"},
        {"version": 1},
    ],
)
def test_building_an_invalid_packet_is_a_parameter_error(kwargs):
    with pytest.raises(ParameterError):
        RtpPacket(**kwargs)


# --- overhead -------------------------------------------------------------------------


def test_overhead_bytes():
    assert overhead_bytes() == 40
    assert overhead_bytes(ip_version=4) == 20 + 8 + RTP_HEADER_BYTES
    assert overhead_bytes(ip_version=6) == 60
    assert overhead_bytes(ip_version=4, srtp=True) == 50
    assert overhead_bytes(ip_version=6, srtp=True) == 70
    with pytest.raises(ParameterError):
        overhead_bytes(ip_version=5)


# --- packetizer -------------------------------------------------------------------------


def _pk(**kw):
    base = {"payload_type": 0, "clock_rate": 8000, "timestamp_increment": 160}
    base.update(kw)
    return Packetizer(**base)


def test_packetizer_sequence_wraps_at_65535():
    pk = _pk(ssrc=7, initial_sequence=65534, initial_timestamp=0)
    seqs = [pk.packetize(b"x").sequence_number for _ in range(4)]
    assert seqs == [65534, 65535, 0, 1]


def test_packetizer_timestamp_wraps_at_2_32():
    pk = _pk(ssrc=7, initial_sequence=0, initial_timestamp=2**32 - 320)
    ts = [pk.packetize(b"x").timestamp for _ in range(4)]
    assert ts == [2**32 - 320, 2**32 - 160, 0, 160]


def test_packetizer_dtx_skips_timestamps_not_sequence_numbers():
    pk = _pk(ssrc=1, initial_sequence=100, initial_timestamp=1000)
    a = pk.packetize(b"a")
    b = pk.packetize(b"b", frames_skipped=5, marker=True)
    c = pk.packetize(b"c")
    assert [p.sequence_number for p in (a, b, c)] == [100, 101, 102]
    assert [p.timestamp for p in (a, b, c)] == [1000, 1000 + 6 * 160, 1000 + 7 * 160]
    assert [p.marker for p in (a, b, c)] == [False, True, False]
    assert pk.packets_sent == 3 and pk.octets_sent == 3


def test_packetizer_fields():
    pk = _pk(payload_type=111, clock_rate=48000, timestamp_increment=960, ssrc=0xABCDEF01)
    p = pk.packetize(b"opus!")
    assert (p.payload_type, p.ssrc, p.payload) == (111, 0xABCDEF01, b"opus!")
    assert RtpPacket.parse(bytes(p)) == p


def test_packetizer_random_initial_values_are_seeded():
    def firsts(seed):
        p = _pk(rng=np.random.default_rng(seed)).packetize(b"")
        return p.ssrc, p.sequence_number, p.timestamp

    assert firsts(1) == firsts(1)
    assert firsts(1) != firsts(2)
    assert _pk(rng=5).packetize(b"").ssrc == _pk(rng=5).packetize(b"").ssrc


def test_packetizer_fixing_one_value_keeps_the_other_draws():
    free = _pk(rng=3).packetize(b"")
    fixed = _pk(rng=3, ssrc=1).packetize(b"")
    assert (free.sequence_number, free.timestamp) == (fixed.sequence_number, fixed.timestamp)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"payload_type": 200},
        {"payload_type": None},
        {"clock_rate": 0},
        {"timestamp_increment": -160},
        {"ssrc": 2**32},
        {"initial_sequence": 70000},
        {"rng": "seed"},
    ],
)
def test_packetizer_parameter_errors(kwargs):
    with pytest.raises(ParameterError):
        _pk(**kwargs)


def test_packetize_argument_errors():
    pk = _pk(rng=0)
    with pytest.raises(ParameterError):
        pk.packetize("text")
    with pytest.raises(ParameterError):
        pk.packetize(b"x", frames_skipped=-1)


def test_trusted_constructor_and_wire_size_match_checked_path():
    from voicelab.rtp import Packetizer

    pk = Packetizer(payload_type=0, clock_rate=8000, timestamp_increment=160, rng=np.random.default_rng(1))
    p = pk.packetize(b"\x55" * 160, marker=True)
    q = RtpPacket(marker=True, payload_type=0, sequence_number=p.sequence_number, timestamp=p.timestamp,
                  ssrc=p.ssrc, payload=b"\x55" * 160)
    assert p == q and bytes(p) == bytes(q)
    assert p.wire_size == len(bytes(p)) == 172
    r = RtpPacket(payload=b"ab", csrc=(1, 2), extension_profile=0xBEDE, extension_data=b"\0" * 8, padding_size=3)
    assert r.wire_size == len(bytes(r))
