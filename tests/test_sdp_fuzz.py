"""Hypothesis: any input gives a SessionDescription or RemoteProtocolError (nothing else),
parsed descriptions re-serialize to themselves, generated valid descriptions round-trip
exactly, and negotiation on parsed junk fails only with RemoteProtocolError."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicelab.errors import RemoteProtocolError
from voicelab.sdp import (
    Bandwidth,
    Connection,
    CryptoAttribute,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
    apply_answer,
    create_answer,
    create_offer,
    make_crypto,
)

from .test_sdp_model import BARESIP, PHONE, WEBRTC

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# lines that look like SDP, to get past the first checks often
_LINE_TYPES = st.sampled_from(list("vosiuepcbtrzkam") + ["x", "A", ""])
_VALUE = st.one_of(
    st.text(max_size=30),
    st.sampled_from([
        "0", "- 1 1 IN IP4 1.2.3.4", "IN IP4 1.2.3.4", "0 0", "audio 4000 RTP/AVP 0 96",
        "audio 0 RTP/SAVP", "rtpmap:96 opus/48000/2", "fmtp:96 useinbandfec=1", "ptime:20",
        "rtcp:4001 IN IP4 1.2.3.4", "sendonly", "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
        "AS:64", "rtpmap:0 PCMU/8000", "rtpmap:1000 X/1", "ptime:2.5",
    ]),
)
_SDP_LIKE = st.lists(st.tuples(_LINE_TYPES, _VALUE), max_size=14).map(
    lambda ls: "\r\n".join(f"{t}={v}" for t, v in ls)
)


def _parse_or_error(data):
    try:
        s = SessionDescription.parse(data)
    except RemoteProtocolError as e:
        assert e.status_code == 400
        assert "\n" not in str(e)
        return None
    # whatever parses re-serializes to something that parses to the same thing
    again = SessionDescription.parse(bytes(s))
    assert again == s
    assert bytes(again) == bytes(s)
    return s


@FAST
@given(st.text(max_size=300))
def test_any_text(text):
    _parse_or_error(text)


@FAST
@given(st.binary(max_size=300))
def test_any_bytes(data):
    _parse_or_error(data)


@FAST
@given(_SDP_LIKE)
def test_sdp_like_text(text):
    _parse_or_error("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nc=IN IP4 1.2.3.4\r\n" + text)


@FAST
@given(st.sampled_from([PHONE, BARESIP, WEBRTC]), st.integers(0, 2000), st.binary(min_size=1, max_size=8))
def test_golden_with_bytes_spliced_in(raw, pos, junk):
    pos = pos % (len(raw) + 1)
    _parse_or_error(raw[:pos] + junk + raw[pos:])


@FAST
@given(st.sampled_from([PHONE, BARESIP]), st.integers(0, 2000), st.binary(min_size=1, max_size=6))
def test_negotiation_on_damaged_offers_raises_only_remote_errors(raw, pos, junk):
    pos = pos % (len(raw) + 1)
    data = raw[:pos] + junk + raw[pos:]
    try:
        offer = SessionDescription.parse(data)
    except RemoteProtocolError:
        return
    try:
        answer, nm = create_answer(offer, ["pcmu", "opus", "g722", "amr-nb"], address="192.0.2.1", port=5000,
                                   session_id=1, rng=np.random.default_rng(0))
    except RemoteProtocolError as e:
        assert e.status_code in (400, 488)
        return
    assert len(answer.media) == len(offer.media)
    # the offerer side accepts what we produced
    back = apply_answer(offer, answer)
    assert back.codec == nm.codec and back.payload_type == nm.payload_type


# ----------------------------------------------------------------- generated valid SDP
_TOK = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._+", min_size=1, max_size=10)
_FREE = st.text(alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=20)
_ADDR = st.sampled_from(["192.0.2.1", "2001:db8::1", "example.com", "224.2.1.1/127"])
_ATTR_VALUE = st.one_of(st.none(), _FREE)


@st.composite
def _attributes(draw):
    out = []
    for name, value in draw(st.lists(st.tuples(_TOK, _ATTR_VALUE), max_size=5)):
        if name in ("rtpmap", "fmtp", "ptime", "maxptime", "rtcp", "crypto"):
            continue  # typed ones are generated below with valid values
        out.append((name, value))
    return out


@st.composite
def _media(draw):
    rtp = draw(st.booleans())
    pts = draw(st.lists(st.integers(0, 127), min_size=1, max_size=5, unique=True))
    m = MediaDescription(
        media=draw(st.sampled_from(["audio", "video", "application"])),
        port=draw(st.integers(1, 65535)),
        proto=draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF"])) if rtp else "UDP/DTLS/SCTP",
        formats=[str(p) for p in pts] if rtp else [draw(_TOK)],
        port_count=draw(st.one_of(st.none(), st.integers(1, 4))),
        title=draw(st.one_of(st.none(), _FREE)),
        connections=draw(st.lists(st.builds(Connection, st.just("IN"), st.sampled_from(["IP4", "IP6"]), _ADDR),
                                  min_size=1, max_size=2)),
        bandwidths=draw(st.lists(st.builds(Bandwidth, st.sampled_from(["AS", "TIAS", "CT"]),
                                           st.integers(0, 10**6)), max_size=2)),
        key=draw(st.one_of(st.none(), _FREE)),
        attributes=draw(_attributes()),
    )
    if rtp:
        for p in pts:
            if draw(st.booleans()):
                enc = draw(st.sampled_from(["PCMU", "opus", "telephone-event", "AMR"]))
                ch = draw(st.one_of(st.none(), st.integers(1, 2)))
                rate = draw(st.sampled_from([8000, 16000, 48000]))
                m.add("rtpmap", f"{p} {enc}/{rate}" + (f"/{ch}" if ch else ""))
            if draw(st.booleans()):
                m.add("fmtp", f"{p} " + draw(st.sampled_from(["0-16", "octet-align=1", "minptime=10;useinbandfec=1"])))
    if draw(st.booleans()):
        m.add("ptime", str(draw(st.sampled_from([10, 20, 2.5, 60]))))
    if draw(st.booleans()):
        m.add("rtcp", str(draw(st.integers(0, 65535))))
    if draw(st.booleans()):
        m.add("crypto", str(make_crypto(draw(st.integers(1, 99)), rng=np.random.default_rng(draw(st.integers(0, 9))))))
    if draw(st.booleans()):
        m.add(draw(st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"])))
    return m


@st.composite
def _sessions(draw):
    return SessionDescription(
        origin=Origin(draw(_TOK), draw(st.integers(0, 2**64)), draw(st.integers(0, 2**64)), "IN",
                      draw(st.sampled_from(["IP4", "IP6"])), draw(_ADDR)),
        session_name=draw(_FREE),
        information=draw(st.one_of(st.none(), _FREE)),
        uri=draw(st.one_of(st.none(), _FREE)),
        emails=draw(st.lists(_FREE, max_size=2)),
        phones=draw(st.lists(_FREE, max_size=2)),
        connection=draw(st.one_of(st.none(), st.builds(Connection, st.just("IN"), st.just("IP4"), _ADDR))),
        bandwidths=draw(st.lists(st.builds(Bandwidth, st.just("CT"), st.integers(0, 9999)), max_size=1)),
        timings=draw(st.lists(st.builds(Timing, st.integers(0, 2**32), st.integers(0, 2**32),
                                        st.lists(_FREE, max_size=2)), min_size=1, max_size=2)),
        zone=draw(st.one_of(st.none(), _FREE)),
        key=draw(st.one_of(st.none(), _FREE)),
        attributes=draw(_attributes()),
        media=draw(st.lists(_media(), max_size=3)),
    )


@FAST
@given(_sessions())
def test_generated_descriptions_round_trip(s):
    raw = bytes(s)
    parsed = SessionDescription.parse(raw)
    assert parsed == s
    assert bytes(parsed) == raw
    assert SessionDescription.parse(raw.replace(b"\r\n", b"\n")) == s
    for m in parsed.media:
        for c in m.crypto:
            assert isinstance(c, CryptoAttribute)
        if m.is_rtp:
            assert set(m.rtpmaps) <= set(range(128))


@FAST
@given(
    st.lists(st.sampled_from(["pcmu", "pcma", "g722", "g729", "opus", "amr-nb", "g726-32", "g723"]),
             min_size=1, max_size=5, unique=True),
    st.lists(st.sampled_from(["pcmu", "pcma", "g722", "g729", "opus", "amr-nb", "g726", "g723"]),
             min_size=1, max_size=4, unique=True),
    st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]),
    st.booleans(),
)
def test_offer_answer_agree(offered, supported, direction, srtp):
    offer = create_offer(offered, address="192.0.2.1", port=4000, session_id=1, direction=direction,
                         crypto=srtp or None, rng=np.random.default_rng(1))
    common = {"g726-32": "g726"}
    expect = [common.get(c, c) for c in offered if common.get(c, c) in supported]
    try:
        answer, mine = create_answer(offer, supported, address="192.0.2.2", port=6000, session_id=2,
                                     rng=np.random.default_rng(2))
    except RemoteProtocolError as e:
        assert e.status_code == 488 and not expect
        return
    theirs = apply_answer(offer, answer)
    assert mine.codec == theirs.codec == expect[0]
    assert mine.payload_type == theirs.payload_type
    assert (mine.sends, mine.receives) == (theirs.receives, theirs.sends)
    if srtp:
        assert mine.srtp.local_key == theirs.srtp.remote_key and mine.srtp.remote_key == theirs.srtp.local_key
    assert SessionDescription.parse(bytes(answer)) == answer
