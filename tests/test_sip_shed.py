"""The stateless refusal built on the raw datagram (voicelab.sip.shed).

Golden bytes for SIPp's INVITE, malformed INVITEs going to the parser (which answers
400 or drops them as before), and a Hypothesis check that the fast 503 says what the
full stack (parser, transaction, UA admission hook, response builder) says for the
same INVITE.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.sip import Response, parse_message
from voicelab.sip.overload import Refusal
from voicelab.sip.shed import SHED_TAG_PREFIX, classify, refusal, respond, status_line, triage

from .test_sip_ua import make_ua

SIPP_ADDR = ("127.0.0.1", 5061)
AGENT_ADDR = ("127.0.0.1", 5060)

# benchmarks/sipp/uac_load.xml's INVITE as SIPp 3.6.1 sends it (call 7 of pid 4242)
SIPP_INVITE = (
    b"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-7-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag007\r\n"
    b"To: service <sip:service@127.0.0.1:5060>\r\n"
    b"Call-ID: 7-4242@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: sip:sipp@127.0.0.1:5061\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: Performance Test\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length:   129\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

GOLDEN_503 = (
    b"SIP/2.0 503 Service Unavailable\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-7-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag007\r\n"
    b"To: service <sip:service@127.0.0.1:5060>;tag=ol2a\r\n"
    b"Call-ID: 7-4242@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Retry-After: 3\r\n"
    b"Server: voicelab\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def test_sipp_invite_refusal_golden_bytes():
    kind = triage(SIPP_INVITE)
    assert kind is not None and kind[:2] == ("invite", "7-4242@127.0.0.1")
    out = respond(kind[2], status_line(503, "Service Unavailable"), retry_after=3, tag=b"ol2a")
    assert out == GOLDEN_503
    assert refusal(SIPP_INVITE, 503, "Service Unavailable", retry_after=3, tag="ol2a") == GOLDEN_503
    busy = refusal(SIPP_INVITE, 486, "Busy Here", retry_after=None, tag="ol1")
    assert busy.startswith(b"SIP/2.0 486 Busy Here\r\n") and b"Retry-After" not in busy


def test_sipp_ack_of_the_refusal_is_recognised_and_the_call_ack_is_not():
    ack = (SIPP_INVITE.split(b"\r\n\r\n")[0].replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
           .replace(b"127.0.0.1:5060>", b"127.0.0.1:5060>;tag=ol2a") + b"\r\n\r\n")
    assert classify(ack) == ("shed-ack", "7-4242@127.0.0.1")
    assert classify(ack.replace(b"tag=ol2a", b"tag=1f2e3d")) is None  # the agent's own (hex) tag: a real call
    assert classify(ack.replace(b";tag=ol2a", b"")) is None
    # a To URI parameter that looks like our tag is not the To tag
    assert classify(ack.replace(b"<sip:service@127.0.0.1:5060>;tag=ol2a", b"<sip:service@127.0.0.1:5060;tag=ol9>")) is None


def test_compact_forms_folding_case_and_timestamp():
    req = (b"INVITE sip:a@h SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1, SIP/2.0/UDP p;branch=z9hG4bK2\r\n"
           b"VIA:SIP/2.0/TCP q;branch=z9hG4bK3  \r\nf: <sip:b@h>;tag=1\r\nt: <sip:a@h>\r\ni: c1\r\ncseq: 9 INVITE\r\n"
           b"Timestamp: 54.3\r\nl: 0\r\n\r\n")
    out = refusal(req, 503, "Service Unavailable", retry_after=1, tag="ol1")
    assert out == (b"SIP/2.0 503 Service Unavailable\r\n"
                   b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1, SIP/2.0/UDP p;branch=z9hG4bK2\r\n"
                   b"Via: SIP/2.0/TCP q;branch=z9hG4bK3\r\n"
                   b"From: <sip:b@h>;tag=1\r\nTo: <sip:a@h>;tag=ol1\r\nCall-ID: c1\r\nCSeq: 9 INVITE\r\n"
                   b"Timestamp: 54.3\r\nRetry-After: 1\r\nServer: voicelab\r\nContent-Length: 0\r\n\r\n")


# (datagram, what the full stack does with it: "400", "drop" or "call")
JUNK = [
    (SIPP_INVITE.replace(b"\r\n\r\n", b"\r\n"), "400"),  # no end of headers
    (SIPP_INVITE.replace(b"To: service", b"To:\r\n service"), "call"),  # folded: valid, but not for the fast path
    (SIPP_INVITE.replace(b"Call-ID:", b"Call-ID: x\r\nCall-ID:"), "400"),  # two Call-IDs
    (SIPP_INVITE.replace(b"To: service <sip:service@127.0.0.1:5060>\r\n", b""), "drop"),  # no To
    (SIPP_INVITE.replace(b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-7-0\r\n", b""), "drop"),  # no Via
    (SIPP_INVITE.replace(b"CSeq: 1 INVITE\r\n", b"CSeq: 1 INVITE\n"), "drop"),  # a bare LF
    (SIPP_INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 7\r0"), "400"),  # a lone CR
    (SIPP_INVITE.replace(b"7-4242@127.0.0.1", "7-4242@h\u00e9".encode()), "400"),  # non-ASCII Call-ID
    (SIPP_INVITE.replace(b"\r\n", b"\n"), "drop"),  # LF line ends throughout
]


def test_malformed_invites_are_left_to_the_parser():
    """The fast path reads none of these; the full stack answers them as it always did."""
    for data, expected in JUNK:
        assert triage(data) is None, data
        ua = make_ua(AGENT_ADDR, "agent", 5)
        ua.receive(data, SIPP_ADDR, 0.0)
        sent = [d[:12] for d, _ in ua.datagrams_to_send()]
        events = [type(e).__name__ for e in ua.drain_events()]
        got = "call" if "IncomingCall" in events else ("400" if sent == [b"SIP/2.0 400 "] else "drop" if not sent else sent)
        assert got == expected, (data, sent, events)
        if expected != "call":
            assert events == ["MessageRejected"]
    # an INVITE without CSeq is an invite to triage, but no refusal can be built from it
    no_cseq = SIPP_INVITE.replace(b"CSeq: 1 INVITE\r\n", b"")
    kind = triage(no_cseq)
    assert kind is not None and respond(kind[2], status_line(503, "x"), retry_after=1, tag=b"ol1") is None


# ---------------------------------------------------------------------------------------
# The fast 503 agrees with the full stack's
# ---------------------------------------------------------------------------------------
_token = st.text("abcdefghijkmnopqrstuvwxyzABCXYZ0123456789-.!%*_+`'~", min_size=1, max_size=12)
_ws = st.sampled_from(["", " ", "  ", "\t"])


def _name(long: str, compact: str | None):
    forms = [long, long.lower(), long.upper()] + ([compact] if compact else [])
    return st.sampled_from(forms)


@st.composite
def invites(draw):
    branches = draw(st.lists(_token, min_size=1, max_size=4, unique=True))
    vias = [f"SIP/2.0/UDP {SIPP_ADDR[0]}:{SIPP_ADDR[1]};branch=z9hG4bK{branches[0]}"]
    vias += [f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP']))} proxy{i}.example.com;branch=z9hG4bK{b}"
             for i, b in enumerate(branches[1:])]
    lines = []
    i = 0
    while i < len(vias):  # some Via lines carry two values
        if i + 1 < len(vias) and draw(st.booleans()):
            lines.append((draw(_name("Via", "v")), f"{vias[i]}, {vias[i + 1]}"))
            i += 2
        else:
            lines.append((draw(_name("Via", "v")), vias[i]))
            i += 1
    display = draw(st.sampled_from(["", "Alice ", '"A. Lice" ']))
    others = [
        (draw(_name("From", "f")), f"{display}<sip:alice@a.example.com>;tag={draw(_token)}"),
        (draw(_name("To", "t")), draw(st.sampled_from(["<sip:bob@b.example.com>", "Bob <sip:bob@b.example.com;user=phone>",
                                                       "sip:bob@b.example.com"]))),
        (draw(_name("Call-ID", "i")), f"{draw(_token)}@{draw(_token)}"),
        (draw(_name("CSeq", None)), f"{draw(st.integers(1, 2**31 - 1))} INVITE"),
        ("Max-Forwards", "70"),
        ("Contact", "<sip:alice@127.0.0.1:5061>"),
    ]
    if draw(st.booleans()):
        others.append(("Timestamp", draw(st.sampled_from(["54", "54.3", "0.01"]))))
    others = draw(st.permutations(others))
    head = "".join(f"{n}{draw(_ws)}:{draw(_ws)}{v}{draw(_ws)}\r\n" for n, v in lines + list(others))
    return f"INVITE sip:bob@b.example.com SIP/2.0\r\n{head}Content-Length: 0\r\n\r\n".encode()


def _full_stack_refusal(data: bytes, retry_after: int) -> Response:
    ua = make_ua(AGENT_ADDR, "agent", 7)
    ua.admission = lambda request, now: Refusal(503, retry_after, "rate")
    ua.receive(data, SIPP_ADDR, 0.0)
    sent = [d for d, _ in ua.datagrams_to_send() if not d.startswith(b"SIP/2.0 1")]  # (a 100 Trying may come first)
    assert len(sent) == 1, sent
    return parse_message(sent[0])


@settings(max_examples=150, deadline=None)
@given(invites(), st.integers(1, 32))
def test_fast_refusal_agrees_with_the_full_stack(data, retry_after):
    kind = triage(data)
    req = parse_message(data)
    assert kind is not None and kind[:2] == ("invite", req.call_id)
    fast = parse_message(respond(kind[2], status_line(503, "Service Unavailable"), retry_after=retry_after,
                                 tag=f"{SHED_TAG_PREFIX}1".encode()))
    full = _full_stack_refusal(data, retry_after)
    assert isinstance(fast, Response) and fast.status_code == full.status_code == 503
    for name in ("Via", "From", "Call-ID", "CSeq", "Retry-After", "Content-Length", "Timestamp"):
        assert fast.headers.get_all(name) == full.headers.get_all(name), name
    assert [v.branch for v in fast.via] == [v.branch for v in req.via]
    assert fast.to.tag == f"{SHED_TAG_PREFIX}1" and full.to.tag is not None
    assert str(fast.to.uri) == str(full.to.uri) and fast.to.display_name == full.to.display_name
    assert fast.headers.get("Content-Length") == "0" and fast.body == b""
