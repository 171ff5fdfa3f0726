"""The stateless refusal built on the raw datagram (voicelab.sip.shed).

Golden bytes for SIPp's INVITE, malformed INVITEs going to the parser (which answers
400 or drops them as before), and a Hypothesis check that the fast 503 says what the
full stack (parser, transaction, UA admission hook, response builder) says for the
same INVITE.
"""

from __future__ import annotations

import contextlib

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


# ---------------------------------------------------------------------------------------
# The C accelerator (voicelab/sip/_shedc.c) against the Python reference
# ---------------------------------------------------------------------------------------
import asyncio  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from voicelab.sip import shed  # noqa: E402

from .conftest import REPO, need  # noqa: E402

_FALLBACK_RUN = os.environ.get("VOICELAB_NO_EXTENSIONS", "") not in ("", "0")


def _c():
    """The compiled module; skips locally, fails in CI, when it was not built."""
    if _FALLBACK_RUN:
        pytest.skip("VOICELAB_NO_EXTENSIONS is set: the pure-Python path is under test")
    need(shed.ACCELERATED, "voicelab.sip._shedc not built (pip install -e . with gcc and python3-dev)")
    from voicelab.sip import _shedc

    return _shedc


def _py_refuse(data, line, retry_after, tag):
    t = shed._py_triage(data)
    return respond(t[2], line, retry_after=retry_after, tag=tag) if t is not None and t[0] == "invite" else None


# pieces that move a datagram across every branch of the triage: line ends, folding,
# compact and odd-case names, tags (ours, a UA's, in the URI), colons, non-ASCII
_PIECES = [b"\r\n", b"\n", b"\r", b"\r\n ", b"\r\n\t", b"\r\n\r\n", b":", b" ", b"\t", b";", b",", b">", b"<",
           b";tag=ol7", b";TAG = OL1", b";tag=1f2e", b"tag=", b"\r\nTo: <sip:x@y>", b"\r\nt:b", b"\r\ni: dup",
           b"\r\nCall-ID: c9", b"\r\nv: SIP/2.0/UDP z;branch=z9hG4bKq", b"\r\nVia :x", b"\r\ncseq: 2 INVITE",
           b"\r\nTimestamp: 1", b"\r\nf: <sip:f@g>", b"\xc3\xa9", b"\x00", b"ACK ", b"INVITE "]


def _ack_of(inv: bytes, tag: bytes) -> bytes:
    head = inv.split(b"\r\n\r\n")[0].replace(b"INVITE sip", b"ACK sip", 1)
    lines = head.split(b"\r\n")
    for i, ln in enumerate(lines):
        name = ln.split(b":", 1)[0].strip().lower()
        if name in (b"to", b"t"):
            lines[i] = ln.rstrip(b" \t") + b";tag=" + tag
    return b"\r\n".join(lines) + b"\r\n\r\n"


@st.composite
def datagrams(draw):
    """Generated INVITEs and ACKs (ours or a call's), then mutated: pieces inserted,
    slices deleted or replaced, a prefix or suffix cut."""
    data = draw(invites())
    if draw(st.booleans()):
        data = _ack_of(data, draw(st.sampled_from([b"ol1", b"ol2a", b"OL5", b"o", b"1f2e3d", b"x;tag=ol3"])))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
        if op == "insert":
            data = data[:i] + draw(st.sampled_from(_PIECES)) + data[i:]
        elif op == "delete":
            data = data[:i] + data[i + draw(st.integers(1, 12)):]
        elif op == "replace":
            data = data[:i] + draw(st.binary(min_size=1, max_size=4)) + data[i + 1:]
        else:
            data = data[:i] if draw(st.booleans()) else data[i:]
    return data


@settings(max_examples=400, deadline=None)
@given(st.one_of(datagrams(), st.binary(max_size=64), st.sampled_from([d for d, _ in JUNK] + [SIPP_INVITE])),
       st.one_of(st.none(), st.integers(0, 10**6)), st.sampled_from([b"ol1", b"ol2a"]))
def test_c_triage_and_refusal_agree_with_python(data, retry_after, tag):
    c = _c()
    want = shed._py_triage(data)
    got = c.triage(data)
    assert got == want, data
    for line in (status_line(503, "Service Unavailable"), status_line(486, "Busy Here")):
        assert c.refuse(data, line, retry_after, tag) == _py_refuse(data, line, retry_after, tag), data


def test_c_golden_bytes_and_too_many_headers_go_to_python():
    c = _c()
    assert c.refuse(SIPP_INVITE, status_line(503, "Service Unavailable"), 3, b"ol2a") == GOLDEN_503
    assert shed.triage is not shed._py_triage  # the accelerated entry point is in use
    many = SIPP_INVITE.replace(b"CSeq:", b"Via: SIP/2.0/UDP p;branch=z9hG4bKx\r\n" * 70 + b"CSeq:")
    assert c.triage(many) is NotImplemented
    assert shed.triage(many) == shed._py_triage(many) and shed.triage(many)[0] == "invite"
    assert len(shed.triage(many)[2][0]) == 71


def _udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    a.setblocking(False)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    b.settimeout(2.0)
    return a, b


def test_c_drain_refuses_drops_and_hands_back_in_order():
    """The socket adapter: what it refuses, what it drops, what it hands back (in order)."""
    c = _c()
    server, peer = _udp_pair()
    try:
        dst = server.getsockname()
        inv = [SIPP_INVITE.replace(b"7-4242@", b"%d-4242@" % k) for k in range(5)]
        options = b"OPTIONS sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP p;branch=z9hG4bK1\r\n\r\n"
        sent = [inv[0], _ack_of(inv[0], b"ol9"), options, inv[1], _ack_of(inv[1], b"1f2e"), inv[2],
                SIPP_INVITE.replace(b"CSeq: 1 INVITE\r\n", b""), JUNK[0][0], inv[3], b"x" * 3000]
        for d in sent:
            peer.sendto(d, dst)
        select.select([server], [], [], 2.0)
        asked = []

        def decide(call_id):
            asked.append(call_id)
            return None if call_id == "1-4242@127.0.0.1" else (status_line(503, "Service Unavailable"), 3, b"ol%x" % len(asked))

        others, got, consumed, acks, refused, sent_bytes, unsent = c.drain(server.fileno(), 64, 2000, decide)
        me = peer.getsockname()
        assert got == len(sent) and acks == 1 and refused == 3 and unsent == []
        assert asked == ["0-4242@127.0.0.1", "1-4242@127.0.0.1", "2-4242@127.0.0.1", "3-4242@127.0.0.1"]
        assert others == [(d, me) for d in (options, inv[1], _ack_of(inv[1], b"1f2e"), sent[6], JUNK[0][0], b"x" * 3000)]
        assert consumed == sum(len(sent[i]) for i in (0, 1, 5, 8))
        answers = [peer.recv(65536) for _ in range(3)]
        line = status_line(503, "Service Unavailable")
        assert answers == [_py_refuse(inv[k], line, 3, b"ol%x" % n) for k, n in ((0, 1), (2, 3), (3, 4))]
        assert sent_bytes == sum(map(len, answers))
        assert c.drain(server.fileno(), 64, 2000, decide)[:2] == ([], 0)  # nothing queued: no error
    finally:
        server.close()
        peer.close()


def _drain_path(monkeypatch, accelerated: bool) -> None:
    """The agent's UDP socket drains through the C accelerator, or through the Python code."""
    from voicelab.sip import transport

    if accelerated:
        _c()
    else:
        monkeypatch.setattr(transport, "_shed_drain", None)


@contextlib.asynccontextmanager
async def _refusing_agent():
    """A signalling agent that admits one call (burst 1, then about none), and a UDP peer:
    (agent, its overload policy, the peer's non-blocking socket)."""
    from voicelab.agent import Agent
    from voicelab.sip.overload import OverloadControl

    oc = OverloadControl(max_rate=1e-3, burst=1, max_lag=None, max_queue_delay=None, adaptive=False)
    agent = Agent(mode="signalling", codecs=["pcmu"], overload=oc, host="127.0.0.1", port=0)
    await agent.start()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    try:
        yield agent, oc, peer
    finally:
        peer.close()
        await agent.close()


@pytest.mark.parametrize("accelerated", [True, False])
def test_agent_refuses_and_drops_acks_on_both_paths(monkeypatch, accelerated):
    """An overloaded agent's UDP socket: 503 for each new INVITE, the ACKs dropped, an
    OPTIONS still answered, with the C drain and with the Python one."""
    _drain_path(monkeypatch, accelerated)

    async def main():
        loop = asyncio.get_running_loop()
        async with _refusing_agent() as (agent, oc, peer):
            assert agent.sip.transport._protocol._c_drain is accelerated
            n = 40
            invs = [SIPP_INVITE.replace(b"7-4242@", b"%d-4242@" % k) for k in range(n)]
            for d in invs:  # the first is admitted (burst 1), the others refused
                peer.sendto(d, agent.address)
            got = []
            while len(got) < n - 1:
                d = await asyncio.wait_for(loop.sock_recv(peer, 65536), 5.0)
                if d.startswith(b"SIP/2.0 503"):
                    got.append(d)
            for d in got:
                peer.sendto(_ack_of(invs[int(d.split(b"Call-ID: ")[1].split(b"-")[0])],
                                    d.split(b";tag=")[2].split(b"\r\n")[0]), agent.address)
            peer.sendto(b"OPTIONS sip:agent@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bKo1\r\n"
                        b"From: <sip:p@h>;tag=1\r\nTo: <sip:agent@h>\r\nCall-ID: opt1\r\nCSeq: 1 OPTIONS\r\n"
                        b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n" % peer.getsockname()[1], agent.address)
            while True:  # (the admitted call's 100/200 come too)
                d = await asyncio.wait_for(loop.sock_recv(peer, 65536), 5.0)
                if b"Call-ID: opt1" in d:
                    break
            assert d.startswith(b"SIP/2.0 200")
            assert agent.calls_shed == n - 1 and agent.shed_acks == n - 1
            assert all(b"Retry-After: " in d for d in got)
            line = status_line(503, "Service Unavailable")
            for d in got:
                k = int(d.split(b"Call-ID: ")[1].split(b"-")[0])
                tag = d.split(b";tag=")[2].split(b"\r\n")[0]
                assert d == _py_refuse(invs[k], line, int(d.split(b"Retry-After: ")[1].split(b"\r\n")[0]), tag)

    asyncio.run(main())


@pytest.mark.parametrize("accelerated", [True, False])
def test_retransmitted_refused_invite_gets_the_same_503_not_a_new_decision(monkeypatch, accelerated):
    """A caller retransmits an INVITE before the 503 reaches it (the socket queue was long):
    the copy gets the same 503 (same To tag), even when the policy would admit a new call
    now; answering it 200 would make a call its caller has already ended (an orphan)."""
    _drain_path(monkeypatch, accelerated)

    async def main():
        loop = asyncio.get_running_loop()
        async with _refusing_agent() as (agent, oc, peer):

            async def answer_to(call: bytes) -> bytes:
                while True:
                    d = await asyncio.wait_for(loop.sock_recv(peer, 65536), 5.0)
                    if b"Call-ID: " + call in d and not d.startswith(b"SIP/2.0 100"):
                        return d

            here = b"127.0.0.1:%d" % peer.getsockname()[1]  # the UA answers an admitted call to the Via
            first, refused, fresh = (SIPP_INVITE.replace(b"7-4242@", b"%d-4242@" % k).replace(b"-4242-7-", b"-4242-%d-" % k)
                                     .replace(b"127.0.0.1:5061", here) for k in (1, 2, 3))
            peer.sendto(first, agent.address)  # admitted (burst 1)
            assert (await answer_to(b"1-4242@")).startswith(b"SIP/2.0 200")
            peer.sendto(refused, agent.address)
            d1 = await answer_to(b"2-4242@")
            assert d1.startswith(b"SIP/2.0 503")
            oc.max_rate = None  # the policy now admits every new call
            peer.sendto(refused, agent.address)  # the caller's retransmission
            d2 = await answer_to(b"2-4242@")
            peer.sendto(fresh, agent.address)
            assert (await answer_to(b"3-4242@")).startswith(b"SIP/2.0 200")  # a new call is admitted
            assert d2 == d1  # the same 503, To tag included
            assert agent.shed_repeats == 1 and agent.calls_answered == 2

    asyncio.run(main())


def test_fallback_without_extensions_passes_the_same_tests():
    """VOICELAB_NO_EXTENSIONS=1: the pure-Python path is selected and these tests pass on it."""
    if _FALLBACK_RUN:
        pytest.skip("already the fallback run")
    env = dict(os.environ, VOICELAB_NO_EXTENSIONS="1", PYTHONPATH=str(REPO))
    code = "import voicelab.sip.shed as s, voicelab.sip.transport as t; print(s.ACCELERATED, s.drain, t._shed_drain)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "None", "None"], out
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", __file__,
                          "-k", "not fallback_without"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout


def test_c_drain_reentered_from_decide_uses_its_own_buffers():
    """decide runs Python code (another thread, or this one, may drain meanwhile): the
    inner drain must not overwrite the outer one's datagrams."""
    c = _c()
    s1, p1 = _udp_pair()
    s2, p2 = _udp_pair()
    try:
        inv = [SIPP_INVITE.replace(b"7-4242@", b"%d-4242@" % k) for k in range(3)]
        for d in inv:
            p1.sendto(d, s1.getsockname())
        p2.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n", s2.getsockname())
        select.select([s1], [], [], 2.0)
        select.select([s2], [], [], 2.0)
        inner = []

        def decide(call_id):
            if not inner:
                inner.append(c.drain(s2.fileno(), 64, 2000, lambda cid: None))
            return None

        others = c.drain(s1.fileno(), 64, 2000, decide)[0]
        assert [d for d, _ in others] == inv
        assert [d for d, _ in inner[0][0]] == [b"OPTIONS sip:x SIP/2.0\r\n\r\n"]
    finally:
        for s in (s1, p1, s2, p2):
            s.close()
