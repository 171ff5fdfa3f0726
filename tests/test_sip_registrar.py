"""RFC 3261 10.3 registrar on a fake clock: register, refresh, expire, unregister, auth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicelab.errors import ParameterError, RemoteProtocolError
from voicelab.sip import Request, parse_message
from voicelab.sip.auth import DigestAuthenticator, DigestClient, DigestCredentials
from voicelab.sip.registrar import Binding, Registrar, canonical_aor

SECRET = b"registrar-test-secret-0123456789"
AOR = "sip:alice@example.com"


def register(
    *contacts: str,
    expires: int | None = None,
    cseq: int = 1,
    call_id: str = "reg-1@192.0.2.10",
    user: str = "alice",
    domain: str = "example.com",
    ruri: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> Request:
    h = [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKreg" + str(cseq)),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{user}@{domain}>;tag=ft1"),
        ("To", f"<sip:{user}@{domain}>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
    ]
    h += [("Contact", c) for c in contacts]
    if expires is not None:
        h.append(("Expires", str(expires)))
    h += list(extra)
    h.append(("Content-Length", "0"))
    return Request("REGISTER", ruri or f"sip:{domain}", h)


def contacts_of(resp) -> dict[str, int]:
    """Contact URI -> expires param of a 200, after a trip over the wire."""
    resp = parse_message(bytes(resp))
    return {str(c.uri): int(c.param("expires")) for c in resp.contact}


@pytest.fixture
def reg() -> Registrar:
    return Registrar(domains=["example.com", "192.0.2.1"], min_expires=60, max_expires=3600, default_expires=600)


def test_register_lookup_and_response_lists_bindings(reg):
    resp = reg.handle(register("<sip:alice@192.0.2.10:5060>;q=0.5", expires=300), now=1000.0, source=("203.0.113.7", 40000))
    assert resp.status_code == 200 and resp.to.tag
    assert contacts_of(resp) == {"sip:alice@192.0.2.10:5060": 300}
    assert parse_message(bytes(resp)).contact[0].param("q") == "0.5"
    (b,) = reg.lookup(AOR, now=1000.0)
    assert isinstance(b, Binding) and b.aor == AOR and b.source == ("203.0.113.7", 40000)
    assert b.expires_at == 1300.0 and b.q == 0.5 and b.call_id == "reg-1@192.0.2.10" and b.cseq == 1
    # any spelling of the AOR finds it (RFC 3261 10.3 step 5 canonical form)
    assert reg.lookup("sips:alice@EXAMPLE.com;transport=tls", now=1000.0) == [b]
    # remaining time shrinks with the clock
    assert contacts_of(reg.handle(register(cseq=2), now=1100.0)) == {"sip:alice@192.0.2.10:5060": 200}


def test_expires_sources_default_and_clamping(reg):
    resp = reg.handle(register("<sip:a@192.0.2.10>;expires=120", "<sip:b@192.0.2.10>", "<sip:c@192.0.2.10>;expires=99999",
                               expires=900), now=0.0)
    assert contacts_of(resp) == {"sip:a@192.0.2.10": 120, "sip:b@192.0.2.10": 900, "sip:c@192.0.2.10": 3600}
    resp = reg.handle(register("<sip:alice@198.51.100.1>", call_id="other", user="alice"), now=0.0)
    assert contacts_of(resp)["sip:alice@198.51.100.1"] == 600  # registrar default


def test_refresh_extends_and_expiry_drops(reg):
    reg.handle(register("<sip:alice@192.0.2.10>", expires=120), now=0.0)
    assert reg.next_expiry() == 120.0
    reg.handle(register("<sip:alice@192.0.2.10>", expires=120, cseq=2), now=100.0)
    assert reg.next_expiry() == 220.0 and len(reg) == 1
    assert reg.lookup(AOR, now=219.0)
    assert reg.lookup(AOR, now=220.0) == []  # expired: skipped by lookup ...
    assert len(reg) == 1  # ... but still stored until expire()
    dropped = reg.expire(now=220.0)
    assert [str(b.uri) for b in dropped] == ["sip:alice@192.0.2.10"] and len(reg) == 0
    assert reg.next_expiry() is None and reg.aors() == []
    # an expired binding is not listed in a later 200 (a query: no Contact)
    reg.handle(register("<sip:alice@192.0.2.10>", expires=60, cseq=3), now=300.0)
    assert contacts_of(reg.handle(register(cseq=4), now=361.0)) == {}


def test_unregister_one_contact_and_wildcard(reg):
    reg.handle(register("<sip:a@192.0.2.10>", "<sip:b@192.0.2.10>", expires=300), now=0.0)
    resp = reg.handle(register("<sip:a@192.0.2.10>;expires=0", cseq=2), now=1.0)
    assert contacts_of(resp) == {"sip:b@192.0.2.10": 299}
    # another UA (other Call-ID) adds its own binding, then everything goes with "*"
    reg.handle(register("<sip:c@192.0.2.20>", expires=300, call_id="ua2"), now=2.0)
    assert len(reg.lookup(AOR, now=2.0)) == 2
    resp = reg.handle(register("*", expires=0, cseq=3), now=3.0)
    assert resp.status_code == 200 and contacts_of(resp) == {} and reg.lookup(AOR, now=3.0) == []


@pytest.mark.parametrize(
    "request_",
    [
        register("*", expires=5),  # wildcard with non-zero expires
        register("*"),  # wildcard without Expires
        register("*", "<sip:a@192.0.2.10>", expires=0),  # wildcard with other contacts
    ],
)
def test_wildcard_misuse_is_400(reg, request_):
    reg.handle(register("<sip:a@192.0.2.10>", expires=300), now=0.0)
    assert reg.handle(request_, now=1.0).status_code == 400
    assert len(reg.lookup(AOR, now=1.0)) == 1  # nothing removed


def test_interval_too_brief_is_423_with_min_expires(reg):
    resp = reg.handle(register("<sip:a@192.0.2.10>", expires=30), now=0.0)
    assert resp.status_code == 423 and resp.headers["Min-Expires"] == "60"
    resp = reg.handle(register("<sip:a@192.0.2.10>;expires=59", "<sip:b@192.0.2.10>", expires=300), now=0.0)
    assert resp.status_code == 423 and reg.lookup(AOR, now=0.0) == []  # atomic: nothing stored
    # exactly the minimum and zero are fine
    assert reg.handle(register("<sip:a@192.0.2.10>", expires=60), now=0.0).status_code == 200
    # the UA retries with Min-Expires and succeeds
    assert reg.handle(register("<sip:b@192.0.2.10>;expires=0", cseq=2), now=0.0).status_code == 200


def test_out_of_order_cseq_for_same_call_id_is_ignored(reg):
    reg.handle(register("<sip:a@192.0.2.10>", expires=300, cseq=5), now=0.0)
    # an older (delayed) REGISTER of the same Call-ID must not undo the newer one
    late = reg.handle(register("<sip:a@192.0.2.10>", expires=0, cseq=4), now=1.0)
    assert late.status_code == 500
    assert len(reg.lookup(AOR, now=1.0)) == 1
    same = reg.handle(register("<sip:a@192.0.2.10>", expires=0, cseq=5), now=1.0)
    assert same.status_code == 500
    late_star = reg.handle(register("*", expires=0, cseq=3), now=1.0)
    assert late_star.status_code == 500 and len(reg.lookup(AOR, now=1.0)) == 1
    # a different Call-ID (UA rebooted) may replace it whatever its CSeq
    resp = reg.handle(register("<sip:a@192.0.2.10>", expires=200, cseq=1, call_id="reboot"), now=2.0)
    assert resp.status_code == 200
    (b,) = reg.lookup(AOR, now=2.0)
    assert b.call_id == "reboot" and b.expires_at == 202.0


def test_domain_and_aor_checks(reg):
    assert reg.handle(register("<sip:a@192.0.2.10>", domain="elsewhere.org"), now=0.0).status_code == 404
    assert reg.handle(register("<sip:a@192.0.2.10>", ruri="sip:elsewhere.org"), now=0.0).status_code == 404
    # the registrar's IP address is one of its domains
    assert reg.handle(register("<sip:a@192.0.2.10>", ruri="sip:192.0.2.1"), now=0.0).status_code == 200
    r = register("<sip:a@192.0.2.10>")
    r.headers.set("To", "<tel:+15551234567>")
    assert reg.handle(r, now=0.0).status_code == 400
    r = register("<sip:a@192.0.2.10>", extra=(("Require", "gruu"),))
    resp = reg.handle(r, now=0.0)
    assert resp.status_code == 420 and resp.headers["Unsupported"] == "gruu"
    bye = Request("BYE", "sip:example.com", register().headers.copy())
    bye.headers.set("CSeq", "1 BYE")
    resp = reg.handle(bye, now=0.0)
    assert resp.status_code == 405 and resp.headers["Allow"] == "REGISTER"
    bad = register("<sip:a@192.0.2.10>;expires=abc")
    assert reg.handle(bad, now=0.0).status_code == 400


def test_request_too_broken_to_answer_raises_protocol_error(reg):
    r = Request("REGISTER", "sip:example.com", [("Contact", "<sip:a@192.0.2.10>")])
    with pytest.raises(RemoteProtocolError):
        reg.handle(r, now=0.0)


def test_auth_required_flow_401_then_success():
    auth = DigestAuthenticator("example.com", {"alice": "wonderland", "bob": "builder"}, secret=SECRET, nonce_ttl_s=300)
    reg = Registrar(domains="example.com", authenticator=auth)
    client = DigestClient(DigestCredentials("alice", "wonderland"), rng=np.random.default_rng(0))
    first = register("<sip:alice@192.0.2.10>", expires=600)
    resp = reg.handle(first, now=0.0)
    assert resp.status_code == 401 and len(resp.auth("WWW-Authenticate")) == 2
    assert reg.lookup(AOR, now=0.0) == []
    retry = client.authorize(first, parse_message(bytes(resp)), branch="z9hG4bKretry")
    assert retry.cseq.number == 2
    ok = reg.handle(parse_message(bytes(retry)), now=0.5, source=("198.51.100.9", 5062))
    assert ok.status_code == 200 and contacts_of(ok) == {"sip:alice@192.0.2.10": 600}
    assert reg.lookup(AOR, now=1.0)[0].source == ("198.51.100.9", 5062)
    # refresh 10 minutes later: pre-emptive credentials carry an expired nonce -> stale 401,
    # the client retries silently and the refresh goes through
    refresh = client.preauthorize(register("<sip:alice@192.0.2.10>", expires=600, cseq=3))
    resp = reg.handle(refresh, now=590.0)
    assert resp.status_code == 401 and resp.auth("WWW-Authenticate")[0].param("stale") == "true"
    retry = client.authorize(refresh, resp)
    assert retry is not None and reg.handle(retry, now=590.5).status_code == 200
    assert reg.lookup(AOR, now=1000.0)[0].expires_at == 1190.5
    # bob's valid credentials do not let him register alice's AOR
    bob = DigestClient(DigestCredentials("bob", "builder"), rng=np.random.default_rng(1))
    hijack = register("<sip:bob@203.0.113.66>", expires=600, call_id="evil")
    retry = bob.authorize(hijack, reg.handle(hijack, now=600.0))
    assert reg.handle(retry, now=600.0).status_code == 403
    assert [str(b.uri) for b in reg.lookup(AOR, now=600.0)] == ["sip:alice@192.0.2.10"]
    # wrong password: 401 again, and the client gives up
    eve = DigestClient(DigestCredentials("alice", "guess"), rng=np.random.default_rng(2))
    attempt = register("<sip:alice@203.0.113.66>", expires=600, call_id="eve")
    retry = eve.authorize(attempt, reg.handle(attempt, now=700.0))
    resp = reg.handle(retry, now=700.0)
    assert resp.status_code == 401 and eve.authorize(retry, resp) is None


def test_lookup_orders_by_q_then_recency(reg):
    reg.handle(register("<sip:a@192.0.2.10>;q=0.1", expires=300, call_id="x"), now=0.0)
    reg.handle(register("<sip:b@192.0.2.10>;q=0.9", expires=300, call_id="y"), now=1.0)
    reg.handle(register("<sip:c@192.0.2.10>", expires=300, call_id="z"), now=2.0)
    reg.handle(register("<sip:d@192.0.2.10>", expires=300, call_id="w"), now=3.0)
    assert [b.uri.user for b in reg.lookup(AOR, now=4.0)] == ["d", "c", "b", "a"]


def test_canonical_aor_and_parameter_errors():
    assert canonical_aor("sips:Al%69ce@Example.COM:5061;transport=tls") == "sip:Alice@example.com"
    with pytest.raises(ParameterError):
        canonical_aor("sip:example.com")
    with pytest.raises(ParameterError):
        canonical_aor("not a uri")
    for kw in ({"domains": []}, {"domains": "x", "min_expires": 0}, {"domains": "x", "min_expires": 100, "max_expires": 50},
               {"domains": "x", "default_expires": 10}, {"domains": "x", "authorize": 3},
               {"domains": "x", "authenticator": DigestAuthenticator("x", {}, secret=SECRET, proxy=True)}):
        with pytest.raises(ParameterError):
            Registrar(**kw)
    with pytest.raises(ParameterError):
        Registrar(domains="x").handle(register(), now=float("inf"))


def test_auth_username_may_be_user_at_domain():
    auth = DigestAuthenticator("example.com", {"alice@example.com": "pw"}, secret=SECRET)
    reg = Registrar(domains="example.com", authenticator=auth)
    client = DigestClient(DigestCredentials("alice@example.com", "pw"), rng=np.random.default_rng(5))
    first = register("<sip:alice@192.0.2.10>", expires=600)
    retry = client.authorize(first, reg.handle(first, now=0.0))
    assert reg.handle(retry, now=0.0).status_code == 200


_HEADER_NAMES = st.sampled_from(["Contact", "Expires", "To", "CSeq", "Call-ID", "Require", "Authorization", "From"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_HEADER_NAMES, st.one_of(
    st.text(max_size=40),
    st.sampled_from(["*", "0", "3600", "<sip:a@192.0.2.10>;expires=7", "<sip:alice@example.com>", "2 REGISTER",
                     "<sip:x@h>;q=2", "<sip:x@h>;expires=99999999999999999999"]),
)), max_size=6))
def test_random_register_headers_give_a_response_or_a_protocol_error(edits):
    reg = Registrar(domains="example.com")
    reg.handle(register("<sip:a@192.0.2.10>", expires=300), now=0.0)
    r = register("<sip:b@192.0.2.10>", cseq=2)
    for name, value in edits:
        r.headers.set(name, value)
    try:
        resp = reg.handle(r, now=1.0, source=("192.0.2.10", 5060))
    except RemoteProtocolError:
        return
    assert 200 <= resp.status_code < 700
    if resp.status_code == 200:
        for b in reg.lookup(AOR, now=1.0):
            assert 0 < b.expires_at - 1.0 <= reg.max_expires
