"""RFC 3264 offer/answer with the lab's codec registry: the offer/answer matrix, hold and
resume, SDES, re-offers, and apply_answer rejecting answers that break the rules."""

from __future__ import annotations

import numpy as np
import pytest

from voicelab import codecs
from voicelab.errors import ParameterError, RemoteProtocolError
from voicelab.sdp import (
    CryptoAttribute,
    SessionDescription,
    apply_answer,
    create_answer,
    create_offer,
)

from .test_sdp_model import BARESIP, PHONE, WEBRTC, crlf

A = dict(address="192.0.2.10", port=4000, session_id=11)
B = dict(address="192.0.2.20", port=6000, session_id=22)


def offer_of(*names, **kw):
    return create_offer(list(names), **{**A, **kw})


def rtpmaps(m):
    return {pt: r.value for pt, r in m.rtpmaps.items()}


def sdp_with_media(*media_lines: str, session: tuple[str, ...] = ()) -> SessionDescription:
    return SessionDescription.parse(
        crlf("v=0", "o=- 5 5 IN IP4 198.51.100.1", "s=-", "c=IN IP4 198.51.100.1", "t=0 0", *session, *media_lines)
    )


# ----------------------------------------------------------------- offers
def test_offer_payload_types_and_fmtp():
    o = offer_of("pcmu", "pcma", "g722", "g729", "g723", ("opus", {"fec": True, "bitrate": 32000}),
                 "amr-nb", "g726-32")
    m = o.media[0]
    assert m.proto == "RTP/AVP" and m.port == 4000
    pts = m.payload_types
    assert pts[:5] == [0, 8, 9, 18, 4]  # RFC 3551 static
    maps = rtpmaps(m)
    assert maps[0] == "PCMU/8000" and maps[9] == "G722/8000" and maps[18] == "G729/8000"
    opus, amr, g726 = pts[5:8]
    assert (opus, amr, g726) == (96, 97, 98)
    assert maps[opus] == "opus/48000/2" and maps[amr] == "AMR/8000" and maps[g726] == "G726-32/8000"
    assert m.fmtp(opus) == [("minptime", "10"), ("useinbandfec", "1"), ("maxaveragebitrate", "32000")]
    assert m.fmtp(amr) == [("octet-align", "1")]
    # telephone-event once per clock rate in first-seen order: 8000 then 48000
    te = [pt for pt, v in maps.items() if v.startswith("telephone-event")]
    assert sorted(maps[pt] for pt in te) == ["telephone-event/48000", "telephone-event/8000"]
    assert all(m.fmtp(pt) == [("0-16", None)] for pt in te)
    assert m.ptime == 20 and m.direction == "sendrecv"
    assert o.origin.sess_id == 11 and o.origin.sess_version == 1
    assert str(o.connection) == "IN IP4 192.0.2.10"
    assert SessionDescription.parse(bytes(o)) == o


def test_offer_options():
    o = offer_of("pcmu", telephone_event=False, ptime=None, rtcp_port=4100, direction="sendonly",
                 address="2001:db8::5")
    m = o.media[0]
    assert m.formats == ["0"] and m.ptime is None
    assert m.rtcp.port == 4100 and m.direction == "sendonly"
    assert o.connection.addrtype == "IP6" and o.origin.addrtype == "IP6"


@pytest.mark.parametrize(
    "kw",
    [
        dict(address="a b"), dict(port=0), dict(port=70000), dict(direction="hold"),
        dict(ptime=0), dict(crypto=["NOPE"]), dict(crypto=[]), dict(session_id=None),
        dict(session_id=-1),
    ],
)
def test_offer_bad_arguments(kw):
    with pytest.raises(ParameterError):
        create_offer(["pcmu"], **{**A, **kw})


@pytest.mark.parametrize("codec_list", [[], "pcmu", ["pcmu", "g711u"], ["nope"], [("opus", {"bogus": 1})], [3]])
def test_offer_bad_codecs(codec_list):
    with pytest.raises(ParameterError):
        create_offer(codec_list, **A)


# ----------------------------------------------------------------- the matrix
@pytest.mark.parametrize(
    "offered, supported, codec, pt",
    [
        (["pcmu"], ["pcmu"], "pcmu", 0),
        (["pcmu", "opus"], ["opus", "pcmu"], "pcmu", 0),  # offerer's order wins by default
        (["opus", "pcmu"], ["pcmu", "opus"], "opus", 96),
        (["opus", "pcmu"], ["pcmu"], "pcmu", 0),
        (["g722", "pcma"], ["g722"], "g722", 9),
        (["amr-nb", "pcmu"], ["amr-nb"], "amr-nb", 96),
        (["g726-32"], ["g726"], "g726", 96),
        (["g729", "pcmu"], ["g729"], "g729", 18),
    ],
)
def test_offer_answer_matrix(offered, supported, codec, pt):
    o = offer_of(*offered)
    ans, mine = create_answer(o, supported, **B)
    theirs = apply_answer(o, ans)
    for nm in (mine, theirs):
        assert nm.codec == codec and nm.payload_type == pt
        assert nm.direction == "sendrecv" and nm.srtp is None
    assert (mine.remote_address, mine.remote_port, mine.rtcp_port) == ("192.0.2.10", 4000, 4001)
    assert (theirs.remote_address, theirs.remote_port, theirs.rtcp_port) == ("192.0.2.20", 6000, 6001)
    am = ans.media[0]
    assert len(ans.media) == 1 and am.proto == "RTP/AVP"
    assert am.payload_types[0] == pt
    # the registry can build the negotiated sending codec with exactly these parameters
    f = codecs.get(mine.codec, **mine.params) if codecs.is_available(mine.codec) else None
    if f is not None:
        assert f.payload_type in (None, pt) and f.clock_rate == mine.clock_rate


def test_answerer_preference():
    o = offer_of("pcmu", "opus")
    _, nm = create_answer(o, ["opus", "pcmu"], prefer="answerer", **B)
    assert nm.codec == "opus" and nm.payload_type == 96


def test_dynamic_payload_types_of_the_offer_are_kept():
    # a phone that puts opus on 107 and DTMF on 110
    o = sdp_with_media(
        "m=audio 7078 RTP/AVP 107 0 110",
        "a=rtpmap:107 OPUS/48000/2", "a=fmtp:107 useinbandfec=1;maxaveragebitrate=20000",
        "a=rtpmap:110 telephone-event/48000", "a=ptime:40",
    )
    ans, nm = create_answer(o, ["opus"], **B)
    assert nm.payload_type == 107 and nm.telephone_event_pt == 110 and nm.telephone_event_clock_rate == 48000
    assert ans.media[0].payload_types == [107, 110]
    assert rtpmaps(ans.media[0])[107] == "OPUS/48000/2"
    # declarative Opus parameters become our encoder settings
    assert nm.params["fec"] is True and nm.params["bitrate"] == 20000 and nm.ptime == 40.0
    assert nm.params["frame_ms"] == 40.0
    assert dict(nm.remote_fmtp) == {"useinbandfec": "1", "maxaveragebitrate": "20000"}


def test_opus_playback_rate_and_dtx_cbr():
    o = sdp_with_media(
        "m=audio 7078 RTP/AVP 111", "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 maxplaybackrate=16000;usedtx=1;cbr=1",
    )
    _, nm = create_answer(o, [("opus", {"bitrate": 16000})], **B)
    assert nm.params["sample_rate"] == 16000 and nm.params["dtx"] is True and nm.params["vbr"] is False
    assert nm.params["bitrate"] == 16000


def test_opus_must_be_two_channels():
    o = sdp_with_media("m=audio 7078 RTP/AVP 111 0", "a=rtpmap:111 opus/48000")
    _, nm = create_answer(o, ["opus", "pcmu"], **B)
    assert nm.codec == "pcmu"


def test_g722_clock_rate_quirk():
    # RFC 3551: G722 is written with clock 8000 although audio is 16 kHz
    o = sdp_with_media("m=audio 7078 RTP/AVP 9", "a=rtpmap:9 G722/8000")
    _, nm = create_answer(o, ["g722"], **B)
    assert nm.codec == "g722" and nm.clock_rate == 8000
    assert codecs.get("g722").sample_rate == 16000 if codecs.is_available("g722") else True
    # without rtpmap the static table applies
    _, nm = create_answer(sdp_with_media("m=audio 7078 RTP/AVP 9"), ["g722"], **B)
    assert nm.codec == "g722"
    # G722/16000 is wrong SDP: not our codec
    with pytest.raises(RemoteProtocolError) as e:
        create_answer(sdp_with_media("m=audio 7078 RTP/AVP 96", "a=rtpmap:96 G722/16000"), ["g722"], **B)
    assert e.value.status_code == 488


@pytest.mark.parametrize(
    "fmtp, ok",
    [
        ("octet-align=1", True),
        ("octet-align=0", False),
        (None, False),  # bandwidth-efficient is the default (RFC 4867 8.1)
        ("octet-align=1;crc=1", False),
        ("octet-align=1;mode-set=0,2,4", True),
        ("octet-align=1;mode-set=9", False),
    ],
)
def test_amr_octet_align_must_match(fmtp, ok):
    lines = ["m=audio 7078 RTP/AVP 97", "a=rtpmap:97 AMR/8000"]
    if fmtp:
        lines.append(f"a=fmtp:97 {fmtp}")
    o = sdp_with_media(*lines)
    if ok:
        ans, nm = create_answer(o, ["amr-nb"], **B)
        assert nm.codec == "amr-nb" and ans.media[0].fmtp(97) == [("octet-align", "1")]
        if fmtp and "mode-set" in fmtp:
            assert nm.params["bitrate"] == 7400  # highest mode in {0, 2, 4}
    else:
        with pytest.raises(RemoteProtocolError) as e:
            create_answer(o, ["amr-nb"], **B)
        assert e.value.status_code == 488 and "no common codec" in str(e.value)


def test_no_common_codec_is_488_or_all_ports_zero():
    o = offer_of("opus")
    with pytest.raises(RemoteProtocolError) as e:
        create_answer(o, ["pcmu"], **B)
    assert e.value.status_code == 488
    assert "opus/48000/2" in str(e.value) and "PCMU/8000" in str(e.value)
    ans, nm = create_answer(o, ["pcmu"], allow_all_rejected=True, **B)
    assert nm is None and [m.port for m in ans.media] == [0]
    assert ans.media[0].formats == o.media[0].formats
    with pytest.raises(RemoteProtocolError) as e:
        apply_answer(o, ans)
    assert e.value.status_code == 488


def test_mline_count_order_and_rejection():
    o = sdp_with_media(
        "m=video 9000 RTP/AVP 96", "a=rtpmap:96 H264/90000",
        "m=audio 0 RTP/AVP 0",
        "m=audio 7078 RTP/AVP 8 0",
        "m=audio 7080 RTP/AVP 0",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    )
    ans, nm = create_answer(o, ["pcmu", "pcma"], **B)
    assert [m.media for m in ans.media] == ["video", "audio", "audio", "audio", "application"]
    assert [m.port for m in ans.media] == [0, 0, 6000, 0, 0]
    assert nm.media_index == 2 and nm.codec == "pcma"
    assert ans.media[4].formats == ["webrtc-datachannel"]
    theirs = apply_answer(o, ans)
    assert theirs.media_index == 2 and theirs.codec == "pcma"


def test_telephone_event_negotiation():
    o = offer_of("opus", "pcmu")
    ans, nm = create_answer(o, ["pcmu"], **B)
    te8 = next(pt for pt, r in o.media[0].rtpmaps.items() if r.value == "telephone-event/8000")
    assert nm.telephone_event_pt == te8 and nm.telephone_event_clock_rate == 8000
    assert ans.media[0].fmtp(te8) == [("0-16", None)]
    assert apply_answer(o, ans).telephone_event_pt == te8
    _, nm = create_answer(o, ["pcmu"], telephone_event=False, **B)
    assert nm.telephone_event_pt is None
    # the phone offers 0-15 only: the answer narrows to it
    ans, nm = create_answer(SessionDescription.parse(PHONE), ["pcmu"], **B)
    assert nm.telephone_event_pt == 101 and ans.media[0].fmtp(101) == [("0-15", None)]
    # opus with only an 8000 Hz telephone-event offered: take it anyway
    o = sdp_with_media("m=audio 7078 RTP/AVP 96 101", "a=rtpmap:96 opus/48000/2", "a=rtpmap:101 telephone-event/8000")
    _, nm = create_answer(o, ["opus"], **B)
    assert nm.telephone_event_pt == 101 and nm.telephone_event_clock_rate == 8000


def test_golden_offers_answered():
    _, nm = create_answer(SessionDescription.parse(PHONE), ["g722", "pcmu"], **B)
    assert nm.codec == "g722" and nm.params["frame_ms"] == 20.0 and nm.remote_port == 11780
    ans, nm = create_answer(BARESIP, ["opus", "pcmu"], rng=np.random.default_rng(3), **B)
    assert nm.codec == "opus" and nm.params["fec"] is True and nm.rtcp_port == 10003
    assert nm.srtp.suite == "AES_CM_128_HMAC_SHA1_32"  # tag 1 carries an MKI, which we skip
    assert ans.media[0].crypto[0].tag == 2
    with pytest.raises(RemoteProtocolError) as e:  # DTLS-SRTP is for the WebRTC layer
        create_answer(WEBRTC, ["opus"], **B)
    assert e.value.status_code == 488 and "UDP/TLS/RTP/SAVPF" in str(e.value)


# ----------------------------------------------------------------- direction and hold
@pytest.mark.parametrize(
    "offer_dir, want, answer_dir, caller_dir",
    [
        ("sendrecv", "sendrecv", "sendrecv", "sendrecv"),
        ("sendonly", "sendrecv", "recvonly", "sendonly"),  # caller puts us on hold
        ("recvonly", "sendrecv", "sendonly", "recvonly"),
        ("inactive", "sendrecv", "inactive", "inactive"),
        ("sendrecv", "sendonly", "sendonly", "recvonly"),  # we put the caller on hold
        ("sendrecv", "inactive", "inactive", "inactive"),
        ("sendonly", "sendonly", "inactive", "inactive"),
    ],
)
def test_direction_pairs(offer_dir, want, answer_dir, caller_dir):
    o = offer_of("pcmu", direction=offer_dir)
    ans, nm = create_answer(o, ["pcmu"], direction=want, **B)
    assert ans.media[0].direction == answer_dir and nm.direction == answer_dir
    assert apply_answer(o, ans).direction == caller_dir


def test_hold_and_resume_by_reoffer():
    o1 = offer_of("pcmu", "opus")
    a1, _ = create_answer(o1, ["opus"], **B)
    held = create_offer(["pcmu", "opus"], address=A["address"], port=4000, direction="sendonly", previous=o1)
    assert held.origin.sess_id == o1.origin.sess_id and held.origin.sess_version == 2
    assert held.media[0].formats == o1.media[0].formats  # same PT numbers on re-offer
    a2, nm = create_answer(held, ["opus"], previous=a1, **{**B, "session_id": None})
    assert a2.origin.sess_version == a1.origin.sess_version + 1 and a2.origin.sess_id == 22
    assert nm.direction == "recvonly" and not nm.sends and nm.receives
    assert apply_answer(held, a2).direction == "sendonly"
    resumed = create_offer(["pcmu", "opus"], address=A["address"], port=4000, previous=held)
    assert resumed.origin.sess_version == 3 and resumed.media[0].direction == "sendrecv"
    a3, nm = create_answer(resumed, ["opus"], **B)
    assert nm.direction == "sendrecv"


def test_legacy_hold_connection_zero():
    o = SessionDescription.parse(crlf(
        "v=0", "o=- 5 6 IN IP4 198.51.100.1", "s=-", "c=IN IP4 0.0.0.0", "t=0 0",
        "m=audio 7078 RTP/AVP 0", "a=sendrecv",
    ))
    ans, nm = create_answer(o, ["pcmu"], **B)
    assert nm.remote_address == "0.0.0.0" and not nm.sends and nm.receives
    assert ans.media[0].direction == "recvonly"


def test_reoffer_keeps_mline_order_and_keys():
    rng = np.random.default_rng(9)
    o1 = offer_of("pcmu", crypto=True, rng=rng)
    # our previous description had an extra (rejected) video line first
    prev = SessionDescription.parse(bytes(o1))
    prev.media.insert(0, SessionDescription.parse(crlf(
        "v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4 1.2.3.4", "t=0 0", "m=video 0 RTP/AVP 31")).media[0])
    o2 = create_offer(["pcmu", "opus"], address=A["address"], port=4002, crypto=True, previous=prev)
    assert [m.media for m in o2.media] == ["video", "audio"] and o2.media[0].port == 0
    assert o2.media[1].get_all("crypto") == o1.media[0].get_all("crypto")  # no re-keying
    assert o2.media[1].port == 4002
    assert o2.media[1].rtpmap(0).encoding_name == "PCMU"


# ----------------------------------------------------------------- SDES
def test_sdes_accepted_both_sides():
    o = offer_of("pcmu", crypto=True, rng=np.random.default_rng(1))
    assert o.media[0].proto == "RTP/SAVP" and [c.tag for c in o.media[0].crypto] == [1, 2]
    ans, mine = create_answer(o, ["pcmu"], rng=np.random.default_rng(2), **B)
    theirs = apply_answer(o, ans)
    assert ans.media[0].proto == "RTP/SAVP"
    (ac,) = ans.media[0].crypto
    assert ac.tag == 1 and ac.suite == "AES_CM_128_HMAC_SHA1_80"
    offered = o.media[0].crypto[0].key_salt
    assert mine.srtp.remote_key == offered and theirs.srtp.local_key == offered
    assert mine.srtp.local_key == ac.key_salt == theirs.srtp.remote_key
    assert mine.srtp.local_key != mine.srtp.remote_key and len(mine.srtp.local_key) == 30
    assert "keys=<30+30 bytes>" in repr(mine.srtp)


def test_sdes_suite_preference_and_rejection():
    o = offer_of("pcmu", crypto=["AES_CM_128_HMAC_SHA1_32", "AES_CM_128_HMAC_SHA1_80"], rng=np.random.default_rng(1))
    _, nm = create_answer(o, ["pcmu"], crypto=["AES_CM_128_HMAC_SHA1_80"], **B)
    assert nm.srtp.suite == "AES_CM_128_HMAC_SHA1_80" and nm.srtp.tag == 2
    # only an unsupported suite offered -> 488
    o = offer_of("pcmu", crypto=["AES_256_CM_HMAC_SHA1_80"], rng=np.random.default_rng(1))
    with pytest.raises(RemoteProtocolError) as e:
        create_answer(o, ["pcmu"], **B)
    assert e.value.status_code == 488 and "AES_256_CM_HMAC_SHA1_80" in str(e.value)
    with pytest.raises(RemoteProtocolError):
        create_answer(offer_of("pcmu", crypto=True), ["pcmu"], crypto=None, **B)
    with pytest.raises(RemoteProtocolError):
        create_answer(offer_of("pcmu"), ["pcmu"], require_srtp=True, **B)


def test_sdes_bad_key_skipped():
    good = "2 AES_CM_128_HMAC_SHA1_80 inline:" + "QUFB" * 10
    o = sdp_with_media(
        "m=audio 7078 RTP/SAVP 0",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUFBQUFB",  # 6 bytes: ignored
        "a=crypto:x broken",
        f"a=crypto:{good}",
    )
    _, nm = create_answer(o, ["pcmu"], rng=np.random.default_rng(0), **B)
    assert nm.srtp.tag == 2 and nm.srtp.remote_key == b"AAA" * 10


# ----------------------------------------------------------------- apply_answer checks
def _good_pair():
    o = offer_of("opus", "pcmu", crypto=True, rng=np.random.default_rng(4))
    a, _ = create_answer(o, ["pcmu"], rng=np.random.default_rng(5), **B)
    return o, a


def _mutate(answer: SessionDescription, fn) -> SessionDescription:
    a = SessionDescription.parse(bytes(answer))
    fn(a)
    return a


def _replace_crypto(a: SessionDescription, value: str) -> None:
    a.media[0].remove("crypto")
    a.media[0].add("crypto", value)


@pytest.mark.parametrize(
    "name, fn",
    [
        ("extra m-line", lambda a: a.media.append(a.media[0])),
        ("no m-line", lambda a: a.media.clear()),
        ("media type", lambda a: setattr(a.media[0], "media", "video")),
        ("proto", lambda a: setattr(a.media[0], "proto", "RTP/AVP")),
        ("unoffered static PT", lambda a: a.media[0].formats.insert(0, "8")),
        ("unoffered dynamic PT", lambda a: (a.media[0].formats.insert(0, "120"),
                                            a.media[0].add("rtpmap", "120 G7221/16000"))),
        ("no crypto", lambda a: a.media[0].remove("crypto")),
        ("unknown tag", lambda a: _replace_crypto(a, "9 AES_CM_128_HMAC_SHA1_80 inline:" + "QUFB" * 10)),
        ("suite changed", lambda a: _replace_crypto(a, "1 AES_CM_128_HMAC_SHA1_32 inline:" + "QUFB" * 10)),
        ("short key", lambda a: _replace_crypto(a, "1 AES_CM_128_HMAC_SHA1_80 inline:QUFB")),
    ],
)
def test_apply_answer_rejects_invalid_answers(name, fn):
    o, a = _good_pair()
    apply_answer(o, a)  # the unmodified answer is fine
    with pytest.raises(RemoteProtocolError) as e:
        apply_answer(o, _mutate(a, fn))
    assert e.value.status_code == 400, name


def test_apply_answer_direction_must_fit_offer():
    o = offer_of("pcmu", direction="sendonly")
    a, _ = create_answer(o, ["pcmu"], **B)
    bad = _mutate(a, lambda x: x.media[0].set_direction("sendrecv"))
    with pytest.raises(RemoteProtocolError, match="section 6.1"):
        apply_answer(o, bad)


def test_apply_answer_port_zero_stays_zero():
    o = offer_of("pcmu")
    o.media.append(SessionDescription.parse(crlf(
        "v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4 1.2.3.4", "t=0 0", "m=video 0 RTP/AVP 31")).media[0])
    a, _ = create_answer(o, ["pcmu"], **B)
    assert a.media[1].port == 0
    with pytest.raises(RemoteProtocolError):
        apply_answer(o, _mutate(a, lambda x: setattr(x.media[1], "port", 7000)))


def test_apply_answer_tolerates_renumbered_dynamic_pt():
    o = offer_of("opus")
    a = sdp_with_media("m=audio 7000 RTP/AVP 111 101", "a=rtpmap:111 opus/48000/2",
                       "a=fmtp:111 useinbandfec=1;maxaveragebitrate=16000", "a=rtpmap:101 telephone-event/48000")
    nm = apply_answer(o, a)
    assert nm.payload_type == 111 and nm.local_payload_type == 96
    assert nm.codec == "opus" and nm.params["fec"] is True and nm.params["bitrate"] == 16000
    assert nm.telephone_event_pt == 101
    # with our own codec list the base parameters are ours, capped by the peer
    nm = apply_answer(o, a, codecs=[("opus", {"bitrate": 12000})])
    assert nm.params["bitrate"] == 12000


def test_apply_answer_rtcp_attribute_and_mux():
    o = offer_of("pcmu")
    a = sdp_with_media("m=audio 7000 RTP/AVP 0", "a=rtcp:7005 IN IP4 198.51.100.9")
    nm = apply_answer(o, a)
    assert (nm.rtcp_address, nm.rtcp_port) == ("198.51.100.9", 7005)


def test_apply_answer_accepts_text():
    o, a = _good_pair()
    assert apply_answer(bytes(o), str(a)).codec == "pcmu"
    with pytest.raises(RemoteProtocolError) as e:
        apply_answer(o, b"v=0\r\nnot sdp\r\n")
    assert e.value.status_code == 400
    with pytest.raises(ParameterError):
        apply_answer(o, 42)  # type: ignore[arg-type]


def test_ptime_negotiation_respects_codec_limits():
    # G.723.1 cannot do 20 ms: keep 30 ms
    o = sdp_with_media("m=audio 7078 RTP/AVP 4", "a=ptime:20")
    _, nm = create_answer(o, ["g723"], **B)
    assert nm.ptime == 30.0
    o = sdp_with_media("m=audio 7078 RTP/AVP 0", "a=ptime:60", "a=maxptime:40")
    _, nm = create_answer(o, ["pcmu"], **B)
    assert nm.ptime == 40.0


def test_crypto_attribute_helper_parses_offer():
    o = offer_of("pcmu", crypto=["AES_CM_128_HMAC_SHA1_80"], rng=np.random.default_rng(0))
    (c,) = o.media[0].crypto
    assert isinstance(c, CryptoAttribute) and len(c.key_salt) == 30
    # same rng, same key: reproducible SDP bytes for tests and recorded experiments
    o2 = offer_of("pcmu", crypto=["AES_CM_128_HMAC_SHA1_80"], rng=np.random.default_rng(0))
    assert bytes(o2) == bytes(o)


def test_negotiated_media_builds_the_sending_codec():
    o = sdp_with_media("m=audio 7078 RTP/AVP 0", "a=ptime:30")
    _, nm = create_answer(o, [("pcmu", {"plc": False})], **B)
    c = nm.make_codec()
    assert c.name == "pcmu" and c.frame_ms == 30.0 and c.params()["plc"] is False
    assert c.timestamp_increment == 240
