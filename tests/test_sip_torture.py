"""RFC 4475 and RFC 5118 torture messages: every file, with the expected verdict from the RFC text.

``valid`` means well-formed per the RFC 3261 grammar (numeric ranges included);
``reply`` is what a UAS answers (see :mod:`voicelab.sip.inspect` for the order of
checks), None for a request it accepts and always None for responses (a broken response
is dropped, never answered). Where the RFC allows two outcomes, the note says which one
we chose.
"""

from __future__ import annotations


import pytest

from voicelab.errors import RemoteProtocolError
from voicelab.sip import describe, parse_message
from voicelab.sip.inspect import STANDARD_METHODS

from .conftest import REPO, need

CONFORMANCE = REPO.parent / "shared" / "conformance"

# file -> (valid, reply_status, RFC section, note)
RFC4475 = {
    # 3.1.1 valid messages: must parse
    "wsinv.dat": (True, None, "4475 3.1.1.1", "short tortuous INVITE"),
    "intmeth.dat": (True, 501, "4475 3.1.1.2", "valid characters; a UAS that lacks the method answers 501"),
    "esc01.dat": (True, None, "4475 3.1.1.3", "valid % escaping"),
    "escnull.dat": (True, None, "4475 3.1.1.4", "escaped NULs"),
    "esc02.dat": (True, 501, "4475 3.1.1.5", "RE%47IST%45R is not REGISTER: unknown method -> 501"),
    "lwsdisp.dat": (True, None, "4475 3.1.1.6", "no LWS before <: accepted (RFC 3261 bug)"),
    "longreq.dat": (True, None, "4475 3.1.1.7", "long values"),
    "dblreq.dat": (True, None, "4475 3.1.1.8", "octets after Content-Length in a datagram ignored"),
    "semiuri.dat": (True, None, "4475 3.1.1.9", "; in user part"),
    "transports.dat": (True, None, "4475 3.1.1.10", "unknown transports"),
    "mpart01.dat": (True, None, "4475 3.1.1.11", "multipart MIME"),
    "unreason.dat": (True, None, "4475 3.1.1.12", "UTF-8 reason phrase"),
    "noreason.dat": (True, None, "4475 3.1.1.13", "empty reason phrase"),
    # 3.1.2 invalid messages
    "badinv01.dat": (False, 400, "4475 3.1.2.1", "extraneous ; and , in Via/Contact"),
    "clerr.dat": (False, 400, "4475 3.1.2.2", "Content-Length larger than the datagram body"),
    "ncl.dat": (False, 400, "4475 3.1.2.3", "negative Content-Length"),
    "scalar02.dat": (False, 400, "4475 3.1.2.4", "CSeq >= 2**31"),
    "scalarlg.dat": (False, None, "4475 3.1.2.5", "response: dropped"),
    "quotbal.dat": (False, 400, "4475 3.1.2.6", "unterminated quote"),
    "ltgtruri.dat": (False, 400, "4475 3.1.2.7", "<> around Request-URI"),
    "lwsruri.dat": (False, 400, "4475 3.1.2.8", "LWS inside Request-URI"),
    "lwsstart.dat": (False, 400, "4475 3.1.2.9", "RFC allows liberal acceptance; we are strict"),
    "trws.dat": (False, 400, "4475 3.1.2.10", "RFC allows liberal acceptance; we are strict"),
    "escruri.dat": (True, 400, "4475 3.1.2.11", "grammar allows URI headers; 19.1.1 forbids them in a Request-URI"),
    "baddate.dat": (False, 400, "4475 3.1.2.12", "Date must be GMT"),
    "regbadct.dat": (False, 400, "4475 3.1.2.13", "URI with ? outside <>"),
    "badaspec.dat": (False, 400, "4475 3.1.2.14", "spaces inside <>"),
    "baddn.dat": (False, 400, "4475 3.1.2.15", "comma in unquoted display name"),
    "badvers.dat": (True, 505, "4475 3.1.2.16", "SIP/7.0 is grammatical; unsupported -> 505"),
    "mismatch01.dat": (True, 400, "4475 3.1.2.17", "CSeq method != request method"),
    "mismatch02.dat": (True, 501, "4475 3.1.2.18", "501 preferred by the RFC (400 also acceptable)"),
    "bigcode.dat": (False, None, "4475 3.1.2.19", "response: status code > 699, dropped"),
    # 3.2 transaction layer
    "badbranch.dat": (True, None, "4475 3.2.1", "branch=z9hG4bK alone: transaction layer's call (400 or 2543 matching)"),
    # 3.3 application layer
    "insuf.dat": (True, 400, "4475 3.3.1", "missing To, From, Call-ID"),
    "unkscm.dat": (True, 416, "4475 3.3.2", "unknown Request-URI scheme"),
    "novelsc.dat": (True, 416, "4475 3.3.3", "soap.beep Request-URI"),
    "unksm2.dat": (True, 400, "4475 3.3.4", "REGISTER with a non-SIP To"),
    "bext01.dat": (True, 420, "4475 3.3.5", "unknown Require"),
    "invut.dat": (True, 415, "4475 3.3.6", "unknown Content-Type"),
    "regaut01.dat": (True, None, "4475 3.3.7", "unknown auth scheme: a registrar may ignore or 401"),
    "multi01.dat": (True, 400, "4475 3.3.8", "duplicated single-valued headers"),
    "mcl01.dat": (True, 400, "4475 3.3.9", "two Content-Length"),
    "bcast.dat": (True, None, "4475 3.3.10", "response; Via check is the transaction layer's"),
    "zeromf.dat": (True, None, "4475 3.3.11", "Max-Forwards 0 at a UAS: process"),
    "cparam01.dat": (True, None, "4475 3.3.12", "Contact header param"),
    "cparam02.dat": (True, None, "4475 3.3.13", "Contact URI param"),
    "regescrt.dat": (True, None, "4475 3.3.14", "escaped header in <> Contact"),
    "sdp01.dat": (True, 406, "4475 3.3.15", "Accept without application/sdp"),
    # 3.4 backward compatibility
    "inv2543.dat": (True, None, "4475 3.4.1", "RFC 2543 INVITE: no Max-Forwards, no branch cookie"),
}

RFC5118 = {
    "ipv6-good": (True, None, "5118 4.1", ""),
    "ipv6-bad": (False, 400, "5118 4.2", "IPv6 without brackets"),
    "port-ambiguous": (True, None, "5118 4.3", "[2001:db8::10:5070] is one address, no port"),
    "port-unambiguous": (True, None, "5118 4.4", ""),
    "via-received-param-with-delim": (True, None, "5118 4.5", "liberal: received with []"),
    "via-received-param-no-delim": (True, None, "5118 4.5", ""),
    "ipv6-in-sdp": (True, None, "5118 4.6", ""),
    "mult-ip-in-header": (True, None, "5118 4.7", ""),
    "mult-ip-in-sdp": (True, None, "5118 4.8", ""),
    "ipv4-mapped-ipv6": (True, None, "5118 4.9", ""),
    "ipv6-bug-abnf-3-colons": (False, 400, "5118 4.10", "invalid under the RFC 5954 corrected ABNF"),
    "ipv6-correct-abnf-2-colons": (True, None, "5118 4.10", ""),
}

CASES = [("rfc4475/" + k, v) for k, v in RFC4475.items()] + [("rfc5118/" + k, v) for k, v in RFC5118.items()]


def _read(rel: str) -> bytes:
    need(CONFORMANCE.is_dir(), f"SIP conformance messages not found at {CONFORMANCE}")
    path = CONFORMANCE / rel
    need(path.is_file(), f"conformance file missing: {path}")
    return path.read_bytes()


def test_table_covers_every_file():
    need(CONFORMANCE.is_dir(), f"SIP conformance messages not found at {CONFORMANCE}")
    on_disk = {f"rfc4475/{p.name}" for p in (CONFORMANCE / "rfc4475").glob("*.dat")}
    on_disk |= {f"rfc5118/{p.name}" for p in (CONFORMANCE / "rfc5118").iterdir() if p.is_file()}
    assert on_disk == {rel for rel, _ in CASES}


@pytest.mark.parametrize("rel, expected", CASES, ids=[rel for rel, _ in CASES])
def test_verdict(rel, expected):
    valid, reply, section, note = expected
    d = describe(_read(rel))
    assert d["valid"] is valid, (section, note, d["error"])
    assert d["reply_status"] == reply, (section, note, d["error"])
    assert d["kind"] in ("request", "response")
    assert (d["error"] is None) == (reply is None and valid), d["error"]
    if d["error"] is not None:
        assert "\n" not in d["error"]


@pytest.mark.parametrize("rel, expected", [c for c in CASES if c[1][0]], ids=[r for r, e in CASES if e[0]])
def test_valid_round_trip(rel, expected):
    data = _read(rel)
    m = parse_message(data, validate=False)
    again = parse_message(bytes(m), validate=False)
    assert again == m
    assert bytes(again) == bytes(m)
    # lossless: what we write is the datagram, minus octets beyond Content-Length
    assert data.startswith(bytes(m))
    # every header we understand reads back the same after the round trip
    for attr in ("via", "from_", "to", "cseq", "call_id", "contact", "route", "record_route"):
        try:
            first = getattr(m, attr)
        except RemoteProtocolError:
            continue
        assert getattr(again, attr) == first


@pytest.mark.parametrize("rel, expected", [c for c in CASES if not c[1][0]], ids=[r for r, e in CASES if not e[0]])
def test_invalid_rejected_by_parse_message(rel, expected):
    with pytest.raises(RemoteProtocolError) as exc:
        parse_message(_read(rel))
    assert exc.value.status_code == 400


def test_uas_profile_choices():
    """mismatch02: 400 when method support is not judged (RFC 4475 3.1.2.18 allows both)."""
    data = _read("rfc4475/mismatch02.dat")
    assert describe(data, methods=None)["reply_status"] == 400
    assert describe(data, methods=STANDARD_METHODS | {"NEWMETHOD"})["reply_status"] == 400
    intmeth = _read("rfc4475/intmeth.dat")
    assert describe(intmeth, methods=None)["reply_status"] is None
    assert describe(_read("rfc4475/bext01.dat"), extensions={"nothingSupportsThis", "nothingSupportsThisEither"})[
        "reply_status"
    ] is None
    assert describe(_read("rfc4475/invut.dat"), content_types=None)["reply_status"] is None


def test_dblreq_stream_gives_both_messages():
    from voicelab.sip import StreamParser

    msgs = StreamParser(validate=False).feed(_read("rfc4475/dblreq.dat"))
    assert [m.method for m in msgs] == ["REGISTER", "INVITE"]
    assert len(msgs[1].body) == 150


def test_selected_fields():
    m = parse_message(_read("rfc4475/wsinv.dat"))
    assert [v.transport for v in m.via] == ["UDP", "TCP", "UDP"]
    assert m.via[2].branch == "z9hG4bK30239"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.to.tag == "1918181833n"
    assert (m.cseq.number, m.cseq.method, m.max_forwards) == (9, "INVITE", 68)
    assert m.contact[0].display_name == 'Quoted string ""' and m.contact[0].param("q") == "0.33"
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    esc = parse_message(_read("rfc4475/esc01.dat"))
    assert esc.contact[0].uri.param("name") == "value%41"
    v6 = parse_message(_read("rfc5118/via-received-param-with-delim"))
    assert v6.via[0].received == "2001:db8::9:255"
    amb = parse_message(_read("rfc5118/port-ambiguous"))
    assert (amb.uri.host, amb.uri.port) == ("[2001:db8::10:5070]", None)
    auth = parse_message(_read("rfc4475/regaut01.dat")).auth("Authorization")[0]
    assert (auth.scheme, auth.param("opaque-data")) == ("NoOneKnowsThisScheme", "here")
