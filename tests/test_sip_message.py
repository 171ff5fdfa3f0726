"""Golden SIP messages checked field by field; datagram and stream framing; limits."""

from __future__ import annotations

import pytest

from voicelab.errors import ParameterError, RemoteProtocolError
from voicelab.sip import Headers, Limits, Request, Response, StreamParser, describe, parse_message, split_multipart

SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def _msg(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


INVITE = _msg(
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport",
    "Max-Forwards: 70",
    'To: "Bob" <sip:bob@biloxi.example.com>',
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
    "Content-Type: application/sdp",
    f"Content-Length: {len(SDP)}",
    body=SDP,
)
OK = _msg(
    "SIP/2.0 200 OK",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.101",
    'To: "Bob" <sip:bob@biloxi.example.com>;tag=a6c85cf',
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:bob@192.0.2.4>",
    "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
    "Content-Type: application/sdp",
    f"Content-Length: {len(SDP)}",
    body=SDP,
)
ACK = _msg(
    "ACK sip:bob@192.0.2.4 SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bKnashds9",
    "Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>",
    "Max-Forwards: 70",
    "To: <sip:bob@biloxi.example.com>;tag=a6c85cf",
    "From: <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 ACK",
    "Content-Length: 0",
)
BYE = _msg(
    "BYE sip:alice@pc33.atlanta.example.com SIP/2.0",
    "Via: SIP/2.0/TCP [2001:db8::4]:5062;branch=z9hG4bKnashds10;ttl=16;maddr=239.255.255.1",
    "Max-Forwards: 69",
    "From: <sip:bob@biloxi.example.com>;tag=a6c85cf",
    "To: <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 231 BYE",
    "Content-Length: 0",
)
REGISTER = _msg(
    "REGISTER sip:registrar.biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKnashds7",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.example.com>",
    "From: Bob <sip:bob@biloxi.example.com>;tag=456248",
    "Call-ID: 843817637684230@998sdasdh09",
    "CSeq: 1826 REGISTER",
    "Contact: <sip:bob@192.0.2.4>;expires=7200, <sip:bob@198.51.100.1>;q=0.5",
    'Authorization: Digest username="bob", realm="biloxi.example.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",'
    ' uri="sip:biloxi.example.com", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1",'
    ' opaque="5ccc069c403ebaf9f0171e9517f40e41"',
    "Expires: 7200",
    "Content-Length: 0",
)
OPTIONS = _msg(
    "OPTIONS sip:carol@chicago.example.com SIP/2.0",
    "v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKhjhs8ass877",
    "Max-Forwards: 70",
    "t: <sip:carol@chicago.example.com>",
    "f: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "i: a84b4c76e66710",
    "CSeq: 63104 OPTIONS",
    "m: <sip:alice@pc33.atlanta.example.com>",
    "k: timer,",
    " 100rel",
    "Accept: application/sdp",
    "l: 0",
)
CHALLENGE = _msg(
    "SIP/2.0 401 Unauthorized",
    "Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7;received=192.0.2.4",
    "To: Bob <sip:bob@biloxi.example.com>;tag=2493k59kd",
    "From: Bob <sip:bob@biloxi.example.com>;tag=456248",
    "Call-ID: 843817637684230@998sdasdh09",
    "CSeq: 1826 REGISTER",
    'WWW-Authenticate: Digest realm="biloxi.example.com", qop="auth,auth-int",',
    '  nonce="ea9c8e88df84f1cec4341ae6cbe5a359", opaque="", algorithm=MD5, domain="sip:a \\"q\\""',
    "Content-Length: 0",
)
GOLDEN = {"INVITE": INVITE, "200": OK, "ACK": ACK, "BYE": BYE, "REGISTER": REGISTER, "OPTIONS": OPTIONS, "401": CHALLENGE}


def test_invite_fields():
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    assert (m.method, str(m.uri), m.version) == ("INVITE", "sip:bob@biloxi.example.com", "SIP/2.0")
    (via,) = m.via
    assert (via.protocol, via.transport, via.host, via.port) == ("SIP/2.0", "UDP", "pc33.atlanta.example.com", 5060)
    assert via.branch == "z9hG4bK776asdhds" and via.rport is True and via.received is None
    assert m.max_forwards == 70
    assert m.to.display_name == "Bob" and m.to.tag is None
    assert m.from_.tag == "1928301774" and m.from_.uri.user == "alice"
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert (m.cseq.number, m.cseq.method) == (314159, "INVITE")
    assert m.contact[0].uri.host == "pc33.atlanta.example.com"
    assert m.content_type.mime == "application/sdp"
    assert m.content_length == len(SDP) and m.body == SDP


def test_response_fields():
    m = parse_message(OK)
    assert isinstance(m, Response)
    assert (m.status_code, m.reason) == (200, "OK")
    assert m.via[0].rport == 5060 and m.via[0].received == "192.0.2.101"
    assert m.to.tag == "a6c85cf"
    assert [str(r.uri) for r in m.record_route] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    c = parse_message(CHALLENGE)
    (ch,) = c.auth("WWW-Authenticate")
    assert ch.scheme == "Digest"
    assert [k for k, _ in ch.params] == ["realm", "qop", "nonce", "opaque", "algorithm", "domain"]
    assert ch.param("qop") == "auth,auth-int" and ch.param("opaque") == "" and ch.param("domain") == 'sip:a "q"'


def test_ack_bye_register_options_fields():
    ack = parse_message(ACK)
    assert ack.cseq.method == "ACK" and [str(r.uri) for r in ack.route] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    bye = parse_message(BYE)
    v = bye.via[0]
    assert (v.transport, v.host, v.port, v.ttl, v.maddr) == ("TCP", "[2001:db8::4]", 5062, 16, "239.255.255.1")
    reg = parse_message(REGISTER)
    c1, c2 = reg.contact
    assert (c1.param("expires"), c2.param("q")) == ("7200", "0.5")
    assert reg.expires == 7200 and reg.to.display_name == "Bob"
    (cred,) = reg.auth("Authorization")
    assert cred.param("response") == "6629fae49393a05397450978507c4ef1" and cred.param("nc") == "00000001"
    opt = parse_message(OPTIONS)  # compact forms and folding
    assert opt.headers["Via"].startswith("SIP/2.0/UDP") and opt.headers["Call-ID"] == "a84b4c76e66710"
    assert opt.headers["Supported"] == "timer, 100rel"
    assert opt.headers.get_all("Supported") == ["timer", "100rel"]
    assert opt.content_length == 0 and opt.from_.display_name == "Alice"
    assert [f.name for f in opt.headers][:2] == ["v", "Max-Forwards"]


@pytest.mark.parametrize("name", GOLDEN)
def test_round_trip_is_exact(name):
    data = GOLDEN[name]
    m = parse_message(data)
    assert bytes(m) == data
    assert parse_message(bytes(m)) == m
    d = describe(data)
    assert d["valid"] and d["reply_status"] is None and d["error"] is None


@pytest.mark.parametrize("name", GOLDEN)
def test_stream_whole_bytewise_and_back_to_back(name):
    data = GOLDEN[name]
    expected = parse_message(data)
    assert StreamParser().feed(data) == [expected]
    p = StreamParser()
    got = []
    for i in range(len(data)):
        got += p.feed(data[i : i + 1])
        if i < len(data) - 1:
            assert got == []
    assert got == [expected] and p.buffered == 0
    # keep-alives (RFC 5626) before, between and after; three messages in one chunk
    p = StreamParser()
    assert p.feed(b"\r\n\r\n" + data + b"\r\n" + data + data + b"\r\n\r\n") == [expected] * 3
    assert p.buffered == 0


@pytest.mark.parametrize("name", GOLDEN)
def test_trailing_junk(name):
    data = GOLDEN[name]
    expected = parse_message(data)
    # datagram: octets beyond Content-Length are ignored (RFC 3261 18.3)
    assert parse_message(data + b"garbage\x00\xff") == expected
    # stream: junk is the start of the next message -> pending ...
    p = StreamParser()
    assert p.feed(data + b"garbage") == [expected]
    assert p.buffered == len(b"garbage")
    # ... and an error once it is complete; the stream stays failed
    with pytest.raises(RemoteProtocolError) as exc:
        p.feed(b"\r\n\r\n")
    assert exc.value.status_code == 400
    with pytest.raises(RemoteProtocolError):
        p.feed(data)


def test_error_after_good_message_in_same_chunk_is_raised_next():
    p = StreamParser()
    assert p.feed(ACK + b"NOT A SIP LINE\r\n\r\n") == [parse_message(ACK)]
    with pytest.raises(RemoteProtocolError):
        p.feed(b"")


def test_validation_error_on_stream_is_not_fatal():
    bad = ACK.replace(b"CSeq: 314159 ACK", b"CSeq: 314159 BYE")
    p = StreamParser()
    with pytest.raises(RemoteProtocolError, match="CSeq method"):
        p.feed(bad)
    assert p.feed(ACK) == [parse_message(ACK)]


def test_folding_keeps_raw_and_unfolds_value():
    data = _msg(
        "OPTIONS sip:a@example.com SIP/2.0",
        "Via: SIP/2.0/UDP h.example.com",
        "\t;branch=z9hG4bK1",
        "To:",
        "   <sip:a@example.com>",
        "From: <sip:b@example.com>;tag=1",
        "Call-ID: x",
        "CSeq: 1 OPTIONS",
        "Subject: one",
        "  two\t",
        "   three",
    )
    m = parse_message(data)
    assert m.headers["Subject"] == "one two three"
    assert m.via[0].branch == "z9hG4bK1" and str(m.to.uri) == "sip:a@example.com"
    assert bytes(m) == data


def test_datagram_without_content_length_takes_rest_and_stream_takes_none():
    data = INVITE.replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    assert parse_message(data).body == SDP
    msgs = StreamParser(validate=False).feed(data)
    assert msgs[0].body == b""


def test_content_length_errors():
    with pytest.raises(RemoteProtocolError, match="only"):
        parse_message(INVITE[:-5])  # body shorter than Content-Length
    for bad in (b"-1", b"abc", b"1 2", b"0x10"):
        with pytest.raises(RemoteProtocolError) as exc:
            parse_message(ACK.replace(b"Content-Length: 0", b"Content-Length: " + bad))
        assert exc.value.status_code == 400


def test_multipart_mixed_keeps_sdp_intact():
    boundary = "unique-boundary-1"
    body = (
        f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n".encode()
        + SDP
        + f"\r\n--{boundary}\r\nContent-Type: application/isup;version=itu-t92+\r\n\r\n".encode()
        + b"\x01\x00\x49\x00\x00\x03\x02\x00\x07\r\n"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    data = INVITE.replace(b"Content-Type: application/sdp", f"Content-Type: multipart/mixed;boundary={boundary}".encode())
    data = data.replace(f"Content-Length: {len(SDP)}".encode(), f"Content-Length: {len(body)}".encode())
    data = data[: data.index(b"\r\n\r\n") + 4] + body
    m = parse_message(data)
    assert m.content_type.mime == "multipart/mixed" and m.content_type.param("boundary") == boundary
    parts = split_multipart(m.body, boundary)
    assert [p[0]["Content-Type"] for p in parts] == ["application/sdp", "application/isup;version=itu-t92+"]
    assert parts[0][1] == SDP
    assert parts[1][1] == b"\x01\x00\x49\x00\x00\x03\x02\x00\x07\r\n"
    assert bytes(m) == data
    assert describe(data)["reply_status"] is None
    no_boundary = data.replace(f";boundary={boundary}".encode(), b"")
    assert describe(no_boundary)["reply_status"] == 415


def test_limits():
    small = Limits(max_message_bytes=300, max_headers=5, max_header_line=64)
    with pytest.raises(RemoteProtocolError) as exc:
        parse_message(INVITE, limits=small)
    assert exc.value.status_code == 513
    with pytest.raises(RemoteProtocolError, match="more than 5 header"):
        parse_message(ACK, limits=Limits(max_headers=5))
    with pytest.raises(RemoteProtocolError, match="limit is 64"):
        parse_message(REGISTER, limits=Limits(max_header_line=64))
    p = StreamParser(limits=Limits(max_message_bytes=400))
    with pytest.raises(RemoteProtocolError) as exc:
        p.feed(ACK.replace(b"Content-Length: 0", b"Content-Length: 100000"))
    assert exc.value.status_code == 413
    p = StreamParser(limits=Limits(max_message_bytes=400))
    with pytest.raises(RemoteProtocolError) as exc:
        p.feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * 500)
    assert exc.value.status_code == 513
    assert StreamParser.limits == Limits()


def test_version_and_start_line_errors():
    with pytest.raises(RemoteProtocolError) as exc:
        parse_message(ACK.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1))
    assert exc.value.status_code == 505
    for bad in (b"ACK  sip:bob@192.0.2.4 SIP/2.0", b"ACK sip:bob@192.0.2.4", b"ACK <sip:bob@192.0.2.4> SIP/2.0",
                b"A\x01CK sip:bob@192.0.2.4 SIP/2.0", b"SIP/2.0 2000 OK", b"SIP/2.0 099 Low"):
        with pytest.raises(RemoteProtocolError) as exc:
            parse_message(bad + ACK[ACK.index(b"\r\n"):], validate=False)
        assert exc.value.status_code == 400


def test_semantic_errors():
    cases = {
        b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n": "missing required",
        b"CSeq: 314159 ACK": "does not match",
    }
    for old, msg in cases.items():
        with pytest.raises(RemoteProtocolError, match=msg):
            parse_message(ACK.replace(old, b"" if old.endswith(b"\n") else b"CSeq: 1 BYE"))
    dup = ACK.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nMax-Forwards: 69\r\n")
    with pytest.raises(RemoteProtocolError, match="appears 2 times"):
        parse_message(dup)
    star = ACK.replace(b"CSeq: 314159 ACK", b"CSeq: 314159 ACK\r\nContact: *")
    with pytest.raises(RemoteProtocolError, match="only allowed in REGISTER"):
        parse_message(star)


def test_build_and_serialize():
    h = Headers([("Via", "SIP/2.0/UDP h.example.com;branch=z9hG4bKx"), ("From", "<sip:a@b.example>;tag=1"),
                 ("To", "<sip:c@d.example>"), ("Call-ID", "q@w"), ("CSeq", "1 MESSAGE"),
                 ("Content-Type", "text/plain"), ("Content-Length", "2")])
    r = Request("MESSAGE", "sip:c@d.example", h, b"hi")
    again = parse_message(bytes(r))
    assert again == r and again.body == b"hi"
    h.set("CSeq", "2 MESSAGE")
    assert h.count("cseq") == 1 and h["CSeq"] == "2 MESSAGE"
    h.remove("content-type")
    assert "c" not in h
    resp = Response(180, "Ringing", [("Via", "SIP/2.0/UDP h;branch=z9hG4bKx")])
    assert bytes(resp).startswith(b"SIP/2.0 180 Ringing\r\nVia: ")
    with pytest.raises(ParameterError):
        Request("IN VITE", "sip:a@b")
    with pytest.raises(ParameterError):
        Response(1000, "x")
    with pytest.raises(ParameterError):
        parse_message("text")  # type: ignore[arg-type]


def test_accessor_errors_are_remote_protocol_errors():
    m = parse_message(ACK.replace(b"To: <sip:bob@biloxi.example.com>;tag=a6c85cf", b"To: <sip:bob@biloxi"), validate=False)
    with pytest.raises(RemoteProtocolError):
        m.to
    m = parse_message(ACK.replace(b"Via: SIP/2.0/UDP", b"Via: SIP/2.0/UDP;"), validate=False)
    with pytest.raises(RemoteProtocolError):
        m.via
    assert describe(b"\xff\xfe")["valid"] is False
