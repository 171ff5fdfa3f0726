"""SDP model (RFC 8866): golden bodies field by field, exact round trips, typed helpers,
malformed input -> RemoteProtocolError(400), and SDES attribute parsing (RFC 4568)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from voicelab.errors import ParameterError, RemoteProtocolError
from voicelab.sdp import (
    CryptoAttribute,
    MediaDescription,
    RtpMap,
    Rtcp,
    SessionDescription,
    generate_key_salt,
    make_crypto,
    parse_fmtp_params,
)


def crlf(*lines: str) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode()


# A typical desk phone (Yealink/Polycom-like) INVITE offer.
PHONE = crlf(
    "v=0",
    "o=- 20518 0 IN IP4 192.168.1.34",
    "s=SDP data",
    "c=IN IP4 192.168.1.34",
    "t=0 0",
    "m=audio 11780 RTP/AVP 9 0 8 18 101",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no",
    "a=ptime:20",
    "a=sendrecv",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
)

# baresip 3.x offer shape: session-level direction, per-media c=, a=rtcp, SDES crypto.
BARESIP = crlf(
    "v=0",
    "o=- 1617463282 3153624826 IN IP4 10.0.0.5",
    "s=-",
    "c=IN IP4 10.0.0.5",
    "t=0 0",
    "a=tool:baresip 3.10.1",
    "m=audio 10002 RTP/SAVP 96 9 0 8 101",
    "b=AS:117",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 stereo=1;sprop-stereo=1;useinbandfec=1",
    "a=rtpmap:9 G722/8000/1",
    "a=rtpmap:0 PCMU/8000/1",
    "a=rtpmap:8 PCMA/8000/1",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=rtcp:10003",
    "a=sendrecv",
    "a=label:1",
    "a=ssrc:2953211136 cname:8a6e1a0e-3e2f-4f6a-9a0f-2d8c1a3b4c5d",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj",
    "a=ptime:20",
)

# Opus-only WebRTC-ish offer (Chromium shape, trimmed): ICE, DTLS, mid, rtcp-mux.
WEBRTC = crlf(
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1467250027 1 udp 2122260223 192.168.0.196 46243 typ host generation 0",
    "a=candidate:1467250027 2 udp 2122260222 192.168.0.196 56280 typ host generation 0",
    "a=ice-ufrag:6sFv",
    "a=ice-pwd:cOTZKZNVlO9RSGsEGM63JXT2",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08",
    "a=setup:actpass",
    "a=mid:0",
    "a=sendrecv",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:126 telephone-event/48000",
)

GOLDEN = {"phone": PHONE, "baresip": BARESIP, "webrtc": WEBRTC}


# ----------------------------------------------------------------- golden, field by field
def test_phone_offer_fields():
    s = SessionDescription.parse(PHONE)
    assert s.version == 0
    o = s.origin
    assert (o.username, o.sess_id, o.sess_version, o.nettype, o.addrtype, o.address) == (
        "-", 20518, 0, "IN", "IP4", "192.168.1.34")
    assert s.session_name == "SDP data"
    assert str(s.connection) == "IN IP4 192.168.1.34"
    assert [(t.start, t.stop) for t in s.timings] == [(0, 0)]
    assert len(s.media) == 1
    m = s.media[0]
    assert (m.media, m.port, m.port_count, m.proto) == ("audio", 11780, None, "RTP/AVP")
    assert m.payload_types == [9, 0, 8, 18, 101]
    assert m.rtpmap(9) == RtpMap(9, "G722", 8000)
    assert m.rtpmap(18).encoding_name == "G729"
    assert m.rtpmap(101) == RtpMap(101, "telephone-event", 8000)
    assert m.fmtp(18) == [("annexb", "no")]
    assert m.fmtp(101) == [("0-15", None)]
    assert m.fmtp(0) == []
    assert m.ptime == 20.0 and m.maxptime is None
    assert m.direction == "sendrecv" and s.direction is None
    assert s.effective_direction(0) == "sendrecv"
    assert m.rtcp is None and m.crypto == [] and m.candidates == [] and m.mid is None
    # attributes stay in their order, including the rtpmap after a=sendrecv
    assert [n for n, _ in m.attributes][-3:] == ["sendrecv", "rtpmap", "fmtp"]


def test_baresip_offer_fields():
    s = SessionDescription.parse(BARESIP)
    assert s.origin.sess_version == 3153624826
    assert s.attributes == [("tool", "baresip 3.10.1")]
    m = s.media[0]
    assert m.proto == "RTP/SAVP"
    assert [(b.bwtype, b.bandwidth) for b in m.bandwidths] == [("AS", 117)]
    assert m.rtpmap(96) == RtpMap(96, "opus", 48000, 2)
    assert m.rtpmap(9) == RtpMap(9, "G722", 8000, 1)
    assert m.fmtp(96) == [("stereo", "1"), ("sprop-stereo", "1"), ("useinbandfec", "1")]
    assert m.rtcp == Rtcp(10003)
    c1, c2 = m.crypto
    assert (c1.tag, c1.suite, c2.tag, c2.suite) == (1, "AES_CM_128_HMAC_SHA1_80", 2, "AES_CM_128_HMAC_SHA1_32")
    assert len(c1.key_salt) == 30
    assert c1.keys[0].lifetime == "2^20" and c1.keys[0].lifetime_packets == 2**20
    assert (c1.keys[0].mki, c1.keys[0].mki_length) == (1, 4)
    assert c1.keys[0].key_salt == base64.b64decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
    assert m.get("ssrc") == "2953211136 cname:8a6e1a0e-3e2f-4f6a-9a0f-2d8c1a3b4c5d"
    assert m.ptime == 20.0


def test_webrtc_offer_fields():
    s = SessionDescription.parse(WEBRTC)
    assert s.origin.sess_id == 4611731400430051336
    assert s.connection is None
    assert s.get("group") == "BUNDLE 0"
    assert s.has("extmap-allow-mixed") and s.get("extmap-allow-mixed") is None
    assert s.get("msid-semantic") == " WMS"  # value kept exactly, leading space included
    m = s.media[0]
    assert (m.port, m.proto, m.formats) == (9, "UDP/TLS/RTP/SAVPF", ["111", "126"])
    assert m.is_rtp
    assert s.connection_for(m).host == "0.0.0.0" and s.connection_for(m).is_hold
    assert m.rtcp == Rtcp(9, "IN", "IP4", "0.0.0.0")
    assert len(m.candidates) == 2 and m.candidates[0].endswith("typ host generation 0")
    assert m.mid == "0" and m.setup == "actpass"
    assert s.fingerprint_for(m).startswith("sha-256 7B:8B")
    assert m.rtcp_mux
    assert m.rtpmap(126) == RtpMap(126, "telephone-event", 48000)
    assert m.get_all("rtcp-fb") == ["111 transport-cc"]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_round_trip_exact(name):
    raw = GOLDEN[name]
    s = SessionDescription.parse(raw)
    assert bytes(s) == raw
    assert str(s) == raw.decode()
    assert SessionDescription.parse(raw.decode()) == s


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_lf_endings_and_missing_final_newline(name):
    raw = GOLDEN[name]
    lf = raw.replace(b"\r\n", b"\n")
    assert bytes(SessionDescription.parse(lf)) == raw
    assert bytes(SessionDescription.parse(raw[:-2])) == raw


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_trailing_junk_is_rejected(name):
    with pytest.raises(RemoteProtocolError) as e:
        SessionDescription.parse(GOLDEN[name] + b"x=1\r\n")
    assert e.value.status_code == 400
    with pytest.raises(RemoteProtocolError):
        SessionDescription.parse(GOLDEN[name] + b"garbage\r\n")


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_every_truncation_parses_or_raises_remote_error(name):
    raw = GOLDEN[name]
    for n in range(len(raw)):
        try:
            s = SessionDescription.parse(raw[:n])
        except RemoteProtocolError as e:
            assert e.status_code == 400
        else:
            assert SessionDescription.parse(bytes(s)) == s


def test_out_of_order_session_lines_normalize():
    text = "v=0\no=- 1 2 IN IP4 1.2.3.4\na=recvonly\nt=0 0\ns=x\nc=IN IP4 1.2.3.4\n"
    s = SessionDescription.parse(text)
    assert s.direction == "recvonly"
    assert str(s) == "v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\ns=x\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\na=recvonly\r\n"


def test_non_utf8_bytes_survive():
    raw = crlf("v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=caf\xe9", "t=0 0").replace(b"caf\xc3\xa9", b"caf\xe9")
    assert b"caf\xe9\r\n" in raw
    assert bytes(SessionDescription.parse(raw)) == raw


def test_optional_session_lines_round_trip():
    raw = crlf(
        "v=0", "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5", "s=SDP Seminar",
        "i=A Seminar on the session description protocol", "u=http://www.example.com/seminars/sdp.pdf",
        "e=j.doe@example.com (Jane Doe)", "p=+1 617 555-6011", "c=IN IP4 224.2.17.12/127",
        "b=CT:128", "t=2873397496 2873404696", "r=604800 3600 0 90000", "z=2882844526 -1h 2898848070 0",
        "k=prompt", "a=recvonly", "m=audio 49170/2 RTP/AVP 0", "i=main audio", "b=AS:64", "k=prompt",
        "m=video 51372 RTP/AVP 99", "a=rtpmap:99 h263-1998/90000",
    )
    s = SessionDescription.parse(raw)
    assert s.connection.host == "224.2.17.12" and s.connection.address == "224.2.17.12/127"
    assert s.timings[0].repeats == ["604800 3600 0 90000"]
    assert s.media[0].port_count == 2 and s.media[0].title == "main audio"
    assert s.effective_direction(1) == "recvonly"
    assert bytes(s) == raw


# ----------------------------------------------------------------- malformed input
BASE = ["v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4 1.2.3.4", "t=0 0", "m=audio 4000 RTP/AVP 0"]


@pytest.mark.parametrize(
    "lines",
    [
        [],
        ["o=- 1 1 IN IP4 1.2.3.4", "v=0", "s=-", "t=0 0"],  # v= not first
        ["v=1", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "t=0 0"],  # version
        ["v=0", "s=-", "t=0 0"],  # no o=
        ["v=0", "o=- 1 1 IN IP4 1.2.3.4", "t=0 0"],  # no s=
        ["v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-"],  # no t=
        ["v=0", "o=- x 1 IN IP4 1.2.3.4", "s=-", "t=0 0"],  # sess-id not numeric
        ["v=0", "o=- 1 1 IN IP4", "s=-", "t=0 0"],  # o= short
        ["v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "s=-", "t=0 0"],  # s= twice
        ["v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "x=1", "t=0 0"],  # unknown type letter
        ["v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "r=1 2 3", "t=0 0"],  # r= before t=
        ["v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "t=0"],
        ["v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "b=AS", "t=0 0"],
        ["v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4", "t=0 0"],
        ["v = 0"],
        BASE[:-1] + ["m=audio 70000 RTP/AVP 0"],  # port range
        BASE[:-1] + ["m=audio 4000 RTP/AVP"],  # no formats on an active stream
        BASE[:-1] + ["m=audio 4000 RTP/AVP 128"],  # PT range
        BASE[:-1] + ["m=audio 4000 RTP/AVP PCMU"],  # PT not numeric
        BASE[:-1] + ["m=audio 4000/0 RTP/AVP 0"],  # port count 0
        BASE[:3] + ["t=0 0", "m=audio 4000 RTP/AVP 0"],  # no c= anywhere
        BASE + ["a=rtpmap:0 PCMU"],
        BASE + ["a=rtpmap:0 PCMU/0"],
        BASE + ["a=rtpmap:200 PCMU/8000"],
        BASE + ["a=rtpmap"],
        BASE + ["a=fmtp"],
        BASE + ["a=ptime:abc"],
        BASE + ["a=maxptime"],
        BASE + ["a=rtcp:abc"],
        BASE + ["a=rtcp:5000 IN IP4"],
        BASE + ["a=:x"],
        BASE + ["o=- 1 1 IN IP4 1.2.3.4"],  # o= inside a media section
        BASE + ["i=a", "i=b"],
    ],
)
def test_malformed_raises_400(lines):
    with pytest.raises(RemoteProtocolError) as e:
        SessionDescription.parse(crlf(*lines))
    assert e.value.status_code == 400
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("data", [b"v=0\x00\r\n", "v=0\rfoo\r\n", 42, None, "\ud800", b"\xff\xfe"])
def test_odd_input_raises_400(data):
    with pytest.raises(RemoteProtocolError):
        SessionDescription.parse(data)


def test_rejected_stream_without_formats_is_accepted():
    s = SessionDescription.parse(crlf(*BASE[:-1], "m=video 0 RTP/AVP"))
    assert s.media[0].formats == [] and s.media[0].port == 0
    assert SessionDescription.parse(bytes(s)) == s


def test_unicode_digits_are_not_numbers():
    with pytest.raises(RemoteProtocolError):
        SessionDescription.parse(crlf("v=0", "o=- \u0661 1 IN IP4 1.2.3.4", "s=-", "t=0 0"))


# ----------------------------------------------------------------- building and helpers
def test_build_and_edit_attributes():
    m = MediaDescription("audio", 4000, "RTP/AVP", ["0", "101"])
    m.add("rtpmap", "101 telephone-event/8000")
    m.add("fmtp", "101 0-16")
    m.add("sendrecv")
    m.set_direction("sendonly")
    assert m.direction == "sendonly" and not m.has("sendrecv")
    m.set("ptime", "20")
    m.set("ptime", "30")
    assert m.get_all("ptime") == ["30"]
    m.remove("ptime")
    assert m.ptime is None
    assert m.rtpmap(0) == RtpMap(0, "PCMU", 8000)
    assert m.rtpmap(0, static=False) is None
    assert m.rtpmap(101).value == "telephone-event/8000"
    s = SessionDescription(media=[m])  # no c= at either level
    with pytest.raises(RemoteProtocolError):  # an active stream needs a c= somewhere
        SessionDescription.parse(bytes(s))
    with pytest.raises(ParameterError):
        m.add("bad name")
    with pytest.raises(ParameterError):
        m.add("x", "two\r\nlines")
    with pytest.raises(ParameterError):
        m.set_direction("both")


def test_fmtp_params_split():
    assert parse_fmtp_params(" minptime=10 ; useinbandfec=1;;") == [("minptime", "10"), ("useinbandfec", "1")]
    assert parse_fmtp_params("0-15,16") == [("0-15,16", None)]
    assert parse_fmtp_params("") == []


# ----------------------------------------------------------------- a=crypto (RFC 4568)
def test_crypto_round_trip_and_fields():
    v = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4 UNENCRYPTED_SRTCP"
    c = CryptoAttribute.parse(v)
    assert str(c) == v
    assert c.session_params == ("UNENCRYPTED_SRTCP",)
    c.validate()


def test_crypto_decimal_lifetime_and_multiple_keys():
    k = base64.b64encode(bytes(range(30))).decode()
    c = CryptoAttribute.parse(f"7 AES_CM_128_HMAC_SHA1_32 inline:{k}|1048576|1:1;inline:{k}|1048576|2:1")
    assert c.tag == 7 and len(c.keys) == 2
    assert c.keys[0].lifetime_packets == 1048576 and c.keys[1].mki == 2


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1 AES_CM_128_HMAC_SHA1_80",
        "x AES_CM_128_HMAC_SHA1_80 inline:AAAA",
        "1234567890 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
        "1 AES-CM inline:AAAA",
        "1 AES_CM_128_HMAC_SHA1_80 uri:http://x",
        "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
        "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|2^99",
        "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|1:0",
        "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|1:4|2^20",
        "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|a|b|c",
    ],
)
def test_crypto_malformed(value):
    with pytest.raises(RemoteProtocolError) as e:
        CryptoAttribute.parse(value)
    assert e.value.status_code == 400


def test_crypto_key_length_checked_per_suite():
    short = CryptoAttribute.parse("1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(29)).decode())
    with pytest.raises(RemoteProtocolError, match="30 bytes"):
        short.validate()
    aes256 = make_crypto(3, "AES_256_CM_HMAC_SHA1_80", rng=np.random.default_rng(0))
    assert len(aes256.key_salt) == 46
    assert CryptoAttribute.parse(str(aes256)) == aes256
    CryptoAttribute.parse("1 FUTURE_SUITE inline:AAAA").validate()  # unknown suites are not checked


def test_key_generation_rng_and_secrets():
    a = generate_key_salt(rng=np.random.default_rng(5))
    b = generate_key_salt(rng=np.random.default_rng(5))
    assert a == b and len(a) == 30
    c, d = generate_key_salt(), generate_key_salt()
    assert len(c) == 30 and c != d  # secrets: 2**-240 chance of a false failure
    with pytest.raises(ParameterError):
        generate_key_salt("NOPE")
    with pytest.raises(ParameterError):
        generate_key_salt(rng=42)  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        make_crypto(1, key_salt=b"short")
