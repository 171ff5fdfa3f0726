"""SIP/SIPS/TEL URIs: parsing (RFC 3261 19.1, 25; RFC 5118; RFC 3966) and comparison (19.1.4)."""

from __future__ import annotations

import pytest

from voicelab.errors import RemoteProtocolError
from voicelab.sip import AbsoluteUri, SipUri, TelUri, parse_uri, uri_equal


def test_full_sip_uri_fields():
    u = parse_uri("sips:alice:secret@Atlanta.example.com:5061;transport=tcp;lr?subject=project%20x&priority=urgent")
    assert isinstance(u, SipUri)
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sips", "alice", "secret", "Atlanta.example.com", 5061)
    assert u.params == (("transport", "tcp"), ("lr", None))
    assert u.param("LR") == "" and u.param("maddr") is None
    assert u.headers == (("subject", "project%20x"), ("priority", "urgent"))
    assert str(u) == "sips:alice:secret@Atlanta.example.com:5061;transport=tcp;lr?subject=project%20x&priority=urgent"


@pytest.mark.parametrize(
    "text, host, port, kind",
    [
        ("sip:[2001:db8::10]:5070", "[2001:db8::10]", 5070, "ipv6"),
        ("sip:[2001:db8::10:5070]", "[2001:db8::10:5070]", None, "ipv6"),
        ("sip:u@[::ffff:192.0.2.2]", "[::ffff:192.0.2.2]", None, "ipv6"),
        ("sip:192.0.2.1:5060", "192.0.2.1", 5060, "ipv4"),
        ("sip:example.com.", "example.com.", None, "hostname"),
    ],
)
def test_hosts(text, host, port, kind):
    u = parse_uri(text)
    assert (u.host, u.port, u.host_kind) == (host, port, kind)


@pytest.mark.parametrize(
    "text",
    [
        "sip:2001:db8::10",  # RFC 5118 4.2: IPv6 needs brackets
        "sip:user@[2001:db8:::192.0.2.1]",  # RFC 5118 4.10 / RFC 5954
        "sip:user@[fe80::1%eth0]",
        "sip:user@example.com:99999",
        "sip:user@example.com:",
        "sip:user@-bad-.com",
        "sip:user@1.2.3.256",
        "sip:us er@example.com",
        "sip:user@example.com;;lr",
        "sip:user@example.com?noequals",
        "sip:%zzuser@example.com",
        "sip:",
        "sip:@example.com",
        "tel:5551234",  # local number without phone-context
        "tel:+",
        "nocolon",
        "1abc:opaque",
        "http:",
    ],
)
def test_rejects(text):
    with pytest.raises(RemoteProtocolError) as exc:
        parse_uri(text)
    assert exc.value.status_code == 400


def test_tel_and_absolute():
    t = parse_uri("tel:+1-201-555-0123;ext=1234")
    assert isinstance(t, TelUri) and t.is_global and t.params == (("ext", "1234"),)
    local = parse_uri("tel:7042;phone-context=example.com")
    assert isinstance(local, TelUri) and not local.is_global
    a = parse_uri("soap.beep://192.0.2.103:3002")
    assert isinstance(a, AbsoluteUri) and a.scheme == "soap.beep" and str(a) == "soap.beep://192.0.2.103:3002"


# RFC 3261 19.1.4: equivalent pairs and non-equivalent pairs (the RFC's own examples first)
EQUAL = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    ("sip:[2001:db8::9:1]", "sip:[2001:DB8:0::9:1]"),  # RFC 5954: compare as addresses
    ("tel:+1-201-555-0123", "tel:+1.201.555.0123"),
]
NOT_EQUAL = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # user case
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # default port
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # name vs IP
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ("sip:a@b.com;maddr=x.com", "sip:a@b.com"),
]


@pytest.mark.parametrize("a, b", EQUAL)
def test_equal(a, b):
    ua, ub = parse_uri(a), parse_uri(b)
    assert uri_equal(ua, ub) and uri_equal(ub, ua)
    assert ua == ub


@pytest.mark.parametrize("a, b", NOT_EQUAL)
def test_not_equal(a, b):
    ua, ub = parse_uri(a), parse_uri(b)
    assert not uri_equal(ua, ub) and not uri_equal(ub, ua)


def test_escaped_user_compares_unescaped_but_keeps_text():
    u = parse_uri("sip:%75se%72@example.com")
    assert u.user == "%75se%72" and str(u) == "sip:%75se%72@example.com"
    assert u == parse_uri("sip:user@example.com")
    assert parse_uri("sip:null-%00-null@example.com") != parse_uri("sip:null--null@example.com")


def test_built_uri_serializes():
    u = SipUri("sip", "bob", None, "example.com", 5070, (("transport", "tcp"),))
    assert str(u) == "sip:bob@example.com:5070;transport=tcp"
    assert parse_uri(str(u)) == u
