"""Fuzzing: any bytes parse or raise RemoteProtocolError, nothing else; valid messages round-trip.

Same rule as h11's fuzzers: the parser never raises a bare ValueError/IndexError/...,
never hangs, and stays linear on long inputs (no catastrophic regex backtracking).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicelab.errors import RemoteProtocolError
from voicelab.sip import Request, Response, StreamParser, describe, parse_message, parse_uri
from voicelab.sip.headers import HEADER_PARSERS

SEED = (
    b"INVITE sip:bob@biloxi.example.com;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK776;rport;received=192.0.2.1\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob \\"B\\"" <sip:bob@biloxi.example.com>\r\n'
    b"f: Alice <sip:alice@atlanta.example.com>;tag=1928\r\n"
    b"Call-ID: a84b4c76e66710@pc33\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.example.com>;q=0.7, sip:x@y.example.com;expires=60\r\n"
    b'Authorization: Digest username="a", realm="r", nonce="n", uri="sip:b", response="0"\r\n'
    b"Subject: folded\r\n  value\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 15\r\n\r\n"
    b"v=0\r\ns=-\r\nt=0 0"
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_reject(data: bytes) -> None:
    for datagram in (True, False):
        for validate in (True, False):
            try:
                m = parse_message(data, datagram=datagram, validate=validate)
            except RemoteProtocolError as exc:
                assert isinstance(exc.status_code, int) and "\n" not in str(exc)
                continue
            assert isinstance(m, (Request, Response))
            # a message that parsed round-trips
            assert parse_message(bytes(m), datagram=datagram, validate=False) == m
            if validate:
                # every typed accessor of a validated message works
                m.via, m.from_, m.to, m.cseq, m.call_id, m.contact, m.route  # noqa: B018
    d = describe(data)
    assert set(d) >= {"valid", "kind", "error", "reply_status", "headers", "body_length"}


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data):
    _parse_or_reject(data)


@FAST
@given(st.data())
def test_mutated_valid_message(data):
    buf = bytearray(SEED)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["replace", "insert", "delete", "dup"]))
        i = data.draw(st.integers(0, len(buf) - 1 if buf else 0))
        if op == "replace" and buf:
            buf[i] = data.draw(st.sampled_from(b' \t\r\n:;,<>"\\@[]%=/?0aZ\x00\xff'))
        elif op == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and buf:
            del buf[i : i + data.draw(st.integers(1, 10))]
        else:
            j = data.draw(st.integers(i, min(len(buf), i + 40)))
            buf[i:i] = buf[i:j]
    _parse_or_reject(bytes(buf))


@FAST
@given(st.lists(st.integers(1, 60), min_size=1, max_size=30))
def test_stream_split_anywhere(cuts):
    stream = SEED + b"\r\n\r\n" + SEED + SEED
    expected = [parse_message(SEED)] * 3
    p = StreamParser()
    got = []
    pos = 0
    for c in cuts:
        got += p.feed(stream[pos : pos + c])
        pos += c
    got += p.feed(stream[pos:])
    assert got == expected


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1, max_size=12)
_label = st.builds(
    lambda a, b: a + b, st.sampled_from("abcxyz"), st.text(alphabet="abc09", max_size=6)
)
_pname = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_.!~*'()", min_size=1, max_size=8)
_host = st.one_of(
    st.builds(lambda a, b: f"{a}.{b}", _label, _label),
    st.builds(lambda *o: ".".join(map(str, o)), *[st.integers(0, 255)] * 4),
    st.sampled_from(["[2001:db8::1]", "[::1]", "[::ffff:192.0.2.1]"]),
)
_user = st.lists(
    st.one_of(st.sampled_from(list("aZ09-_.!~*'()&=+$,;?/")), st.sampled_from(["%41", "%00", "%C3%A9", "%3A"])),
    min_size=1,
    max_size=12,
).map("".join)
_display = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=12)


@st.composite
def _valid_request(draw):
    method = draw(st.sampled_from(["INVITE", "OPTIONS", "BYE", "REGISTER", "X-CUSTOM"]))
    uri = f"sip:{draw(_user)}@{draw(_host)}"
    if draw(st.booleans()):
        uri += f":{draw(st.integers(1, 65535))}"
    uri += "".join(f";{draw(_pname)}" for _ in range(draw(st.integers(0, 2))))
    display = draw(_display).replace("\\", "\\\\").replace('"', '\\"')
    body = draw(st.binary(max_size=40))
    headers = [
        ("Via", f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS', 'WS']))} {draw(_host)};branch=z9hG4bK{draw(_token)}"),
        ("From", f'"{display}" <{uri}>;tag={draw(_token)}'),
        ("t", f"<sip:{draw(_user)}@{draw(_host)}>"),
        ("Call-ID", f"{draw(_token)}@{draw(_token)}"),
        ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
        ("Max-Forwards", str(draw(st.integers(0, 255)))),
        (draw(_token).replace("l", "L") + "X", draw(st.text(st.characters(min_codepoint=33, max_codepoint=0x3FF), max_size=20))),
        ("Content-Length", str(len(body))),
    ]
    return Request(method, uri, headers, body)


@FAST
@given(_valid_request())
def test_generated_valid_messages_round_trip(req):
    data = bytes(req)
    m = parse_message(data)
    assert m == req and bytes(m) == data
    assert m.from_.uri == req.from_.uri
    assert describe(data)["valid"] is True
    assert StreamParser().feed(data) == [req]


@pytest.mark.parametrize("n", [20_000, 60_000])
def test_long_inputs_stay_linear(n):
    """Pathological shapes for each sub-parser, at sizes where backtracking would show."""
    shapes = [
        "a" * n + "-",  # hostname-like run that fails at the end
        "a." * (n // 2) + "-",
        '"' + "\\a" * (n // 2),  # quoted-string never closed
        "x " * (n // 2) + "y",  # display-name tokens without <
        "%" + "4" * n,
        "sip:" + "u" * n + "@" + "h" * n + ";" * 50,
        "[" + "0:" * (n // 2) + "]",
        "SIP/2.0/UDP " + "1." * (n // 2),
        "<" * n,
        ", " * (n // 2),
    ]
    t0 = time.perf_counter()
    for s in shapes:
        for parser in HEADER_PARSERS.values():
            try:
                parser(s)
            except RemoteProtocolError:
                pass
        try:
            parse_uri(s)
        except RemoteProtocolError:
            pass
        data = b"OPTIONS sip:a@b SIP/2.0\r\nTo: " + s.encode() + b"\r\n\r\n"
        _parse_or_reject(data)
    assert time.perf_counter() - t0 < 5.0


def test_huge_inputs_hit_limits_quickly():
    t0 = time.perf_counter()
    with pytest.raises(RemoteProtocolError) as exc:
        parse_message(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 20000 + b"\r\n")
    assert exc.value.status_code == 513
    p = StreamParser()
    with pytest.raises(RemoteProtocolError):
        for _ in range(100):
            p.feed(b"a" * 1000)
    assert time.perf_counter() - t0 < 2.0
