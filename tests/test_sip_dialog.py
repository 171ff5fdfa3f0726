"""RFC 3261 section 12 dialogs: creation (UAC/UAS), in-dialog requests, routing, CSeq checks."""

from __future__ import annotations

import copy

import pytest

from voicelab.errors import LocalProtocolError, RemoteProtocolError
from voicelab.sip import Request, Response, parse_message
from voicelab.sip.dialog import Dialog, DialogId, DialogState, format_name_addr, parse_route_set
from voicelab.sip.transaction import build_response
from voicelab.sip.uri import parse_uri

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds\r\n"
    b"Record-Route: <sip:p2.example.com;lr>\r\n"
    b"Record-Route: <sip:p1.example.com;lr>\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
VIA = "SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bKnew1"


def invite() -> Request:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    return msg


def response(status: int, *, tag: str | None = "a6c85cf", contact: str | None = "<sip:bob@192.0.2.4>",
             record_route: tuple[str, ...] = ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")) -> Response:  # fmt: skip
    r = build_response(invite(), status, "X", to_tag=tag)
    for rr in record_route:
        r.headers.add("Record-Route", rr)
    if contact:
        r.headers.add("Contact", contact)
    return parse_message(bytes(r))  # type: ignore[return-value]


def test_uac_dialog_from_2xx_reverses_record_route():
    d = Dialog.from_uac_response(invite(), response(200))
    assert d.state is DialogState.CONFIRMED and d.is_uac
    assert d.id == DialogId("a84b4c76e66710@pc33.atlanta.example.com", "1928301774", "a6c85cf")
    assert [str(na.uri) for na in d.route_set] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert str(d.remote_target) == "sip:bob@192.0.2.4"
    assert d.local_cseq == 314159 and d.remote_cseq is None
    assert str(d.local_uri) == "sip:alice@atlanta.example.com"
    assert str(d.remote_uri) == "sip:bob@biloxi.example.com"
    assert not d.secure


def test_uac_early_dialog_from_180_then_confirm_takes_2xx_route_and_target():
    d = Dialog.from_uac_response(invite(), response(180, contact=None, record_route=()))
    assert d.early and str(d.remote_target) == "sip:bob@biloxi.example.com" and d.route_set == []
    d.confirm(response(200))
    assert d.confirmed and str(d.remote_target) == "sip:bob@192.0.2.4" and len(d.route_set) == 2


def test_uas_dialog_keeps_record_route_order_and_remote_cseq():
    inv = invite()
    d = Dialog.from_uas_response(inv, response(200))
    assert not d.is_uac and d.confirmed
    assert d.id == DialogId(inv.call_id, "a6c85cf", "1928301774")
    assert [str(na.uri) for na in d.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert str(d.remote_target) == "sip:alice@pc33.atlanta.example.com"
    assert d.remote_cseq == 314159 and d.local_cseq is None


@pytest.mark.parametrize(
    "status, kwargs, error",
    [
        (100, {}, LocalProtocolError),
        (486, {}, LocalProtocolError),
        (200, {"tag": None}, RemoteProtocolError),
        (200, {"contact": None}, RemoteProtocolError),
    ],
)
def test_uac_dialog_creation_errors(status, kwargs, error):
    with pytest.raises(error):
        Dialog.from_uac_response(invite(), response(status, **kwargs))


def test_loose_routing_request_uri_is_remote_target():
    d = Dialog.from_uac_response(invite(), response(200))
    bye = d.create_request("BYE", via=VIA)
    parsed = parse_message(bytes(bye))  # validates the grammar of everything we wrote
    assert str(parsed.uri) == "sip:bob@192.0.2.4"
    assert parsed.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert str(d.next_hop) == "sip:p1.example.com;lr"
    assert parsed.cseq.number == 314160 and parsed.cseq.method == "BYE"
    assert parsed.from_.tag == "1928301774" and parsed.to.tag == "a6c85cf"
    assert parsed.from_.display_name == "Alice"
    assert parsed.call_id == "a84b4c76e66710@pc33.atlanta.example.com"


def test_strict_routing_puts_first_route_in_request_uri_and_target_last():
    rr = ("<sip:p2.example.com;lr>", "<sip:p1.example.com;method=INVITE>")  # p1 is an RFC 2543 router
    d = Dialog.from_uac_response(invite(), response(200, record_route=rr))
    req = parse_message(bytes(d.create_request("INFO", via=VIA)))
    assert str(req.uri) == "sip:p1.example.com"  # "method" is not allowed in a Request-URI
    assert req.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:bob@192.0.2.4>"]
    assert str(d.next_hop) == "sip:p1.example.com"


def test_no_route_set_no_route_header():
    d = Dialog.from_uac_response(invite(), response(200, record_route=()))
    req = d.create_request("OPTIONS", via=VIA)
    assert req.headers.get("Route") is None and str(req.uri) == "sip:bob@192.0.2.4"
    assert d.next_hop == req.uri


def test_ack_for_2xx_uses_invite_cseq_and_leaves_local_cseq():
    d = Dialog.from_uac_response(invite(), response(200))
    ack = parse_message(bytes(d.create_ack(314159, via=VIA, body=b"v=0\r\n")))
    assert ack.method == "ACK" and ack.cseq.number == 314159 and ack.cseq.method == "ACK"
    assert ack.headers.get("Content-Type") == "application/sdp" and ack.body == b"v=0\r\n"
    assert d.local_cseq == 314159
    assert d.create_request("BYE", via=VIA).cseq.number == 314160


def test_uas_first_request_uses_initial_cseq_then_increments():
    d = Dialog.from_uas_response(invite(), response(200))
    assert d.create_request("BYE", via=VIA, initial_cseq=7).cseq.number == 7
    assert d.create_request("INFO", via=VIA, initial_cseq=7).cseq.number == 8
    req = d.create_request("INFO", via=VIA)
    assert req.to.tag == "1928301774" and req.from_.tag == "a6c85cf"  # roles swapped on the UAS side


def test_create_request_refusals():
    d = Dialog.from_uac_response(invite(), response(200))
    for method in ("ACK", "CANCEL"):
        with pytest.raises(LocalProtocolError):
            d.create_request(method, via=VIA)
    with pytest.raises(LocalProtocolError, match="Contact"):
        d.create_request("INVITE", via=VIA)
    d.terminate()
    with pytest.raises(LocalProtocolError, match="terminated"):
        d.create_request("INFO", via=VIA)
    d2 = Dialog.from_uac_response(invite(), response(200))
    d2.local_cseq = 2**31 - 1
    with pytest.raises(LocalProtocolError, match="2\\*\\*31"):
        d2.create_request("BYE", via=VIA)


def test_reinvite_refreshes_target_and_carries_contact():
    d = Dialog.from_uac_response(invite(), response(200))
    req = d.create_request("INVITE", via=VIA, contact="<sip:alice@198.51.100.9>", body=b"v=0\r\n")
    assert req.headers.get("Contact") == "<sip:alice@198.51.100.9>"
    d.refresh_target(parse_message(bytes(response(200, contact="<sip:bob@203.0.113.7:5070>"))))
    assert str(d.remote_target) == "sip:bob@203.0.113.7:5070"


def _peer_request(d_uas: Dialog, cseq: int, method: str = "INFO") -> Request:
    """A request from the UAC side of the same dialog with a chosen CSeq."""
    uac = Dialog.from_uac_response(invite(), response(200))
    uac.local_cseq = cseq - 1
    return parse_message(bytes(uac.create_request(method, via=VIA)))  # type: ignore[return-value]


def test_check_request_lower_cseq_gets_500_and_updates_remote_cseq():
    d = Dialog.from_uas_response(invite(), response(200))
    assert d.check_request(_peer_request(d, 314160)) is None
    assert d.remote_cseq == 314160
    assert d.check_request(_peer_request(d, 314150)) == 500
    assert d.remote_cseq == 314160  # unchanged by the rejected request
    ack = parse_message(bytes(Dialog.from_uac_response(invite(), response(200)).create_ack(314159, via=VIA)))
    assert d.check_request(ack) is None  # ACK carries the INVITE's CSeq, never checked
    assert d.matches(_peer_request(d, 314161))


def test_dialog_id_for_messages():
    inv = invite()
    assert DialogId.for_incoming(inv) is None  # no To tag yet
    r = response(200)
    assert DialogId.for_incoming(r) == DialogId(inv.call_id, "1928301774", "a6c85cf")
    assert DialogId.for_outgoing(r) == DialogId(inv.call_id, "a6c85cf", "1928301774")
    assert str(DialogId("c", "l", "r")) == "c;l;r"


def test_secure_dialog_and_helpers():
    inv = invite()
    inv.uri = parse_uri("sips:bob@biloxi.example.com")
    assert Dialog.from_uac_response(inv, response(200)).secure
    assert format_name_addr("sip:a@b.example.com", display_name='A "q"', tag="t") == '"A \\"q\\"" <sip:a@b.example.com>;tag=t'
    assert [str(n.uri) for n in parse_route_set(["<sip:a.example.com;lr>, <sip:b.example.com;lr>"])] == [
        "sip:a.example.com;lr",
        "sip:b.example.com;lr",
    ]
    d = Dialog.from_uac_response(invite(), response(200))
    assert "UAC confirmed" in repr(d) and copy.copy(d).id == d.id
