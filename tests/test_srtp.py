"""SRTP/SRTCP wrapper (voicelab.rtp.srtp) over pylibsrtp."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from voicelab.errors import LocalProtocolError, ParameterError, RemoteProtocolError
from voicelab.rtp import Packetizer, RtpPacket
from voicelab.rtp.rtcp import ReceiverReport, Sdes, parse_compound
from voicelab.rtp.srtp import (
    SrtpAuthError,
    SrtpContext,
    SrtpError,
    SrtpReplayError,
    srtp_overhead_bytes,
)

KEY_A = bytes(range(30))
KEY_B = bytes(range(100, 130))
SUITES = ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]


def pair(suite="AES_CM_128_HMAC_SHA1_80"):
    return SrtpContext.from_sdes(KEY_A, KEY_B, suite), SrtpContext.from_sdes(KEY_B, KEY_A, suite)


def stream(n, payload_bytes=160):
    pk = Packetizer(payload_type=0, clock_rate=8000, timestamp_increment=160, rng=3)
    rng = np.random.default_rng(0)
    return [bytes(pk.packetize(rng.bytes(payload_bytes))) for _ in range(n)]


@pytest.mark.parametrize("suite,tag", [(SUITES[0], 10), (SUITES[1], 4)])
def test_round_trip_and_overhead(suite, tag):
    a, b = pair(suite)
    assert a.rtp_overhead == tag == srtp_overhead_bytes(suite)
    for rtp in stream(50):
        s = a.protect(rtp)
        assert len(s) == len(rtp) + tag
        assert s[:12] == rtp[:12]  # header in clear
        assert s[12:-tag] != rtp[12:]  # payload encrypted
        out = b.unprotect(s)
        assert out == rtp and RtpPacket.parse(out) == RtpPacket.parse(rtp)


def test_rtcp_round_trip():
    a, b = pair()
    rtcp = bytes(ReceiverReport(0x1234)) + bytes(Sdes.with_cname(0x1234, "a@b"))
    s = a.protect_rtcp(rtcp)
    assert len(s) == len(rtcp) + srtp_overhead_bytes(rtcp=True)  # E+index 4 + tag 10
    out = b.unprotect_rtcp(s)
    assert out == rtcp and parse_compound(out)[1].chunks[0].cname == "a@b"


@pytest.mark.parametrize("suite", SUITES)
def test_tampered_tag_and_payload_rejected(suite):
    a, b = pair(suite)
    rtp = stream(1)[0]
    s = a.protect(rtp)
    bad_tag = s[:-1] + bytes([s[-1] ^ 1])
    with pytest.raises(SrtpAuthError):
        b.unprotect(bad_tag)
    bad_payload = s[:20] + bytes([s[20] ^ 0x80]) + s[21:]
    with pytest.raises(SrtpAuthError) as info:
        b.unprotect(bad_payload)
    assert isinstance(info.value, SrtpError) and isinstance(info.value, RemoteProtocolError)
    # the genuine packet still verifies after the forgeries
    assert b.unprotect(s) == rtp


def test_wrong_key_rejected():
    a, _ = pair()
    eve = SrtpContext.from_sdes(KEY_B, bytes(30))
    with pytest.raises(SrtpAuthError):
        eve.unprotect(a.protect(stream(1)[0]))


def test_replay_rejected():
    a, b = pair()
    pkts = [a.protect(p) for p in stream(3)]
    for p in pkts:
        b.unprotect(p)
    with pytest.raises(SrtpReplayError):
        b.unprotect(pkts[1])
    rtcp = a.protect_rtcp(bytes(ReceiverReport(1)))
    b.unprotect_rtcp(rtcp)
    with pytest.raises(SrtpReplayError):
        b.unprotect_rtcp(rtcp)


def test_garbage_is_srtp_error():
    _, b = pair()
    for junk in (b"", b"\x80", bytes(11), b"\x00" * 40, bytes([0x80]) + bytes(39)):
        with pytest.raises(SrtpError):
            b.unprotect(junk)
    with pytest.raises(SrtpError):
        b.unprotect_rtcp(b"\x80\xc9\x00\x01")


def test_protect_same_packet_twice_is_local_error():
    a, _ = pair()
    rtp = stream(1)[0]
    a.protect(rtp)
    with pytest.raises(LocalProtocolError):
        a.protect(rtp)


def test_keys_and_suites_checked():
    with pytest.raises(ParameterError):
        SrtpContext.from_sdes(bytes(29), KEY_B)
    with pytest.raises(ParameterError):
        SrtpContext.from_sdes(KEY_A, KEY_B, "AES_256_CM_HMAC_SHA1_80")
    with pytest.raises(ParameterError):
        SrtpContext.from_sdes("inline:!!!", KEY_B)


def test_sdes_crypto_attribute_keys_a_context():
    """The SDP layer's a=crypto parser (voicelab.sdp.crypto) feeds SrtpContext directly."""
    from voicelab.sdp.crypto import CryptoAttribute

    b64 = base64.b64encode(KEY_A).decode()
    c = CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64}|2^20|1:4")
    assert (c.tag, c.suite, c.key_salt) == (1, "AES_CM_128_HMAC_SHA1_80", KEY_A)
    a = SrtpContext.from_sdes(c.key_salt, KEY_B, c.suite)
    # inline text works as a key directly
    a2 = SrtpContext.from_sdes(f"inline:{b64}", KEY_B)
    b = SrtpContext.from_sdes(KEY_B, KEY_A)
    rtp = stream(2)
    assert b.unprotect(a.protect(rtp[0])) == rtp[0]
    assert b.unprotect(a2.protect(rtp[1])) == rtp[1]
    for bad in ("1 AES_CM_128_HMAC_SHA1_80", "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA"):
        with pytest.raises(RemoteProtocolError):
            CryptoAttribute.parse(bad).validate()

