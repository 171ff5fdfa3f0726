"""The sans-IO UA core: two UserAgents (and a fake proxy) wired back to back in process.

No sockets, no sleeps: a small event loop moves datagrams between the agents with a
fake clock, through fixed delays or voicelab.net.Channel links.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import itertools

import numpy as np
import pytest

from voicelab.errors import LocalProtocolError, ParameterError, RemoteProtocolError
from voicelab.net import Channel, ChannelConfig
from voicelab.sip import Request, Response, parse_message
from voicelab.sip.transaction import build_response
from voicelab.sip.ua import (
    CallAnswered,
    CallCancelled,
    CallEnded,
    CallEstablished,
    CallFailed,
    CallRinging,
    CallState,
    IncomingCall,
    InfoReceived,
    MessageRejected,
    OptionsAnswered,
    RegistrationResult,
    ReinviteAnswered,
    ReinviteReceived,
    RequestAnswered,
    UserAgent,
)

A_ADDR = ("10.0.0.1", 5060)
B_ADDR = ("10.0.0.2", 5060)
P_ADDR = ("10.0.0.9", 5060)


class RecordingUA(UserAgent):
    """A UserAgent that keeps a copy of every datagram it hands out (for inspection)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sent: list = []

    def datagrams_to_send(self, now=None):
        out = super().datagrams_to_send(now)
        self.sent.extend(out)
        return out


def make_ua(addr, user, seed, **kw):
    kw.setdefault("codecs", ["opus", "pcmu"])
    return RecordingUA(local_uri=f"sip:{user}@{addr[0]}", local_addr=addr, rng=seed, media_address=addr[0], **kw)


class FakeProxy:
    """A stateless loose-routing proxy that Record-Routes INVITEs (RFC 3261 16.11)."""

    def __init__(self, addr):
        self.addr = addr
        self.uri = f"sip:{addr[0]}:{addr[1]};lr"
        self.seen: list[str] = []
        self._out: list = []

    def receive(self, data, src, now):
        msg = parse_message(data)
        if isinstance(msg, Response):
            self.seen.append(f"{msg.status_code} {msg.cseq.method}")
            vias = msg.headers.get_all("Via")
            msg.headers.remove("Via")
            for v in vias[1:]:
                msg.headers.add("Via", v)
            nxt = msg.via[0]
            port = nxt.rport if type(nxt.rport) is int else nxt.port or 5060
            self._out.append((bytes(msg), (nxt.received or nxt.host, port)))
            return
        self.seen.append(msg.method)
        routes = msg.headers.get_all("Route")
        if routes and f":{self.addr[1]}" in routes[0] and self.addr[0] in routes[0]:
            routes = routes[1:]
        fields = [(f.name, f.value) for f in msg.headers if f.key not in ("route", "via")]
        top = msg.via[0]
        branch = "z9hG4bKp" + hashlib.sha1((top.branch or "").encode()).hexdigest()[:16]
        new = [("Via", f"SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};branch={branch}")]
        new += [("Via", v) for v in msg.headers.get_all("Via")]
        if msg.method == "INVITE" and msg.to.tag is None:
            new.append(("Record-Route", f"<{self.uri}>"))
        new += [("Route", r) for r in routes]
        new += fields
        fwd = Request(msg.method, msg.uri, new, msg.body)
        target = parse_message(bytes(fwd)).route[0].uri if routes else msg.uri
        self._out.append((bytes(fwd), (target.host, target.port or 5060)))

    def datagrams_to_send(self):
        out, self._out = self._out, []
        return out

    def next_timer(self):
        return None

    def handle_timer(self, now):
        pass


class Net:
    """Moves datagrams between nodes on a fake clock; calls ``on_event(ua, event, now)``."""

    def __init__(self, *nodes, delay=0.01, delays=None, channels=None, on_event=None):
        self.nodes = {n.local_addr if isinstance(n, UserAgent) else n.addr: n for n in nodes}
        self.delay = delay
        self.delays = delays or {}
        self.channels = channels or {}
        self.on_event = on_event
        self.queue: list = []
        self.seq = itertools.count()
        self.now = 0.0
        self.events: dict = {addr: [] for addr in self.nodes}

    def pump(self):
        for addr, node in self.nodes.items():
            for data, dst in node.datagrams_to_send():
                dst = (dst[0], dst[1])
                ch = self.channels.get((addr, dst))
                arrivals = ch.transmit(self.now, len(data)) if ch is not None else [self.now + self.delays.get((addr, dst), self.delay)]
                for t in arrivals:
                    heapq.heappush(self.queue, (t, next(self.seq), dst, data, addr))

    def drain(self):
        for addr, node in self.nodes.items():
            if not isinstance(node, UserAgent):
                continue
            while (ev := node.next_event()) is not None:
                self.events[addr].append((self.now, ev))
                if self.on_event is not None:
                    self.on_event(node, ev, self.now)

    def step(self, until):
        self.drain()
        self.pump()
        candidates = [self.queue[0][0]] if self.queue else []
        candidates += [t for t in (n.next_timer() for n in self.nodes.values()) if t is not None]
        if not candidates or min(candidates) > until:
            self.now = max(self.now, until)
            return False
        self.now = max(self.now, min(candidates))
        while self.queue and self.queue[0][0] <= self.now:
            _, _, dst, data, src = heapq.heappop(self.queue)
            if dst in self.nodes:
                self.nodes[dst].receive(data, src, self.now)
        for n in self.nodes.values():
            t = n.next_timer()
            if t is not None and t <= self.now:
                n.handle_timer(self.now)
        self.drain()
        self.pump()
        return True

    def run(self, until):
        for _ in range(100000):
            if not self.step(until):
                return
        raise AssertionError("event loop did not settle")

    def types(self, addr):
        return [type(e).__name__ for _, e in self.events[addr]]

    def of(self, addr, cls):
        return [e for _, e in self.events[addr] if isinstance(e, cls)]


def auto_answer(status=200, ring=True):
    def handler(ua, ev, now):
        if isinstance(ev, IncomingCall):
            if ring:
                ua.answer(ev.call, 180, now=now)
            ua.answer(ev.call, status, now=now)

    return handler


def methods(ua, direction):
    return [e.first_line.split(" ")[0] if not e.first_line.startswith("SIP/") else e.first_line.split(" ")[1]
            for e in ua.trace if e.direction == direction and not e.retransmission]  # fmt: skip


# ---------------------------------------------------------------------------------------
# Basic call
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec_b", ["pcmu", "opus"])
def test_basic_call_invite_ringing_ok_ack_bye(codec_b):
    a = make_ua(A_ADDR, "alice", 1, codecs=["opus", "pcmu"])
    b = make_ua(B_ADDR, "bob", 2, codecs=[codec_b])
    net = Net(a, b, on_event=auto_answer())
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    net.run(1.0)
    assert net.types(A_ADDR) == ["CallRinging", "CallAnswered", "CallEstablished"]
    assert net.of(A_ADDR, CallRinging)[0].response.status_code == 180
    assert net.types(B_ADDR) == ["IncomingCall", "CallEstablished"]
    assert methods(a, "out") == ["INVITE", "ACK"]
    assert methods(a, "in") == ["100", "180", "200"]
    assert methods(b, "in") == ["INVITE", "ACK"]
    bcall = net.of(B_ADDR, IncomingCall)[0].call
    assert call.state is CallState.ESTABLISHED and bcall.state is CallState.ESTABLISHED
    # offer/answer through voicelab.sdp
    assert call.media.codec == codec_b and bcall.media.codec == codec_b
    assert call.media.remote_port == 40000 and call.media.remote_address == "10.0.0.2"
    assert bcall.media.remote_address == "10.0.0.1"
    answered = net.of(A_ADDR, CallAnswered)[0]
    assert answered.answer_sdp == bcall.local_sdp and b"m=audio" in answered.answer_sdp
    # ACK for 2xx: INVITE's CSeq number, its own branch, dialog tags
    inv = call._invite
    ack = parse_message(next(d for d, _ in _sent_log(a) if d.startswith(b"ACK")))
    assert ack.cseq.number == inv.cseq.number and ack.via[0].branch != inv.via[0].branch
    assert ack.to.tag == call.dialog.remote_tag
    # hang up
    a.bye(call, now=net.now)
    net.run(net.now + 1.0)
    assert net.of(A_ADDR, CallEnded)[0].by_remote is False
    assert net.of(B_ADDR, CallEnded)[0].by_remote is True
    assert call.state is CallState.ENDED and bcall.state is CallState.ENDED
    assert methods(a, "out")[-1] == "BYE" and methods(a, "in")[-1] == "200"
    assert not net.of(A_ADDR, MessageRejected) and not net.of(B_ADDR, MessageRejected)
    # trace: dialog id on in-dialog messages, transaction key on transaction messages
    bye_entry = next(e for e in a.trace if e.first_line.startswith("BYE"))
    assert bye_entry.dialog == call.dialog.id and bye_entry.transaction is not None
    assert bye_entry.transaction.method == "BYE"


def _sent_log(ua):
    """Every datagram a RecordingUA handed out, in order."""
    return ua.sent


def test_bye_from_callee_and_tcp_transport_has_no_retransmissions():
    a = make_ua(A_ADDR, "alice", 3, transport="tcp")
    b = make_ua(B_ADDR, "bob", 4, transport="tcp")
    net = Net(a, b, on_event=auto_answer(ring=False))
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    net.run(1.0)
    bcall = net.of(B_ADDR, IncomingCall)[0].call
    assert "transport=tcp" in str(b.contact) and "SIP/2.0/TCP" in call._invite.headers["Via"]
    b.bye(bcall, now=net.now)
    net.run(net.now + 1)
    assert net.of(A_ADDR, CallEnded)[0].by_remote and not net.of(B_ADDR, CallEnded)[0].by_remote
    assert not any(e.retransmission for e in a.trace + b.trace)
    assert a.next_timer() is not None  # Timer M (RFC 6026) runs on TCP too
    net.run(net.now + 40)
    assert a.next_timer() is None and b.next_timer() is None


def test_setup_time_equals_link_delays_on_lossless_link():
    a = make_ua(A_ADDR, "alice", 5)
    b = make_ua(B_ADDR, "bob", 6)
    delays = {(A_ADDR, B_ADDR): 0.030, (B_ADDR, A_ADDR): 0.045}
    net = Net(a, b, delays=delays, on_event=auto_answer(ring=False))
    call = a.invite("sip:bob@10.0.0.2", now=10.0)
    net.now = 10.0
    net.run(11.0)
    assert call.times.setup_ms == pytest.approx(75.0, abs=1e-6)
    assert call.times.post_dial_delay_ms == pytest.approx(75.0, abs=1e-6)
    bcall = net.of(B_ADDR, IncomingCall)[0].call
    assert bcall.times.ack_received - bcall.times.invite_received == pytest.approx(0.075 + 0.030 - 0.030, abs=1e-9)


def test_post_dial_delay_is_first_ringing_setup_includes_answer_wait():
    a = make_ua(A_ADDR, "alice", 7)
    b = make_ua(B_ADDR, "bob", 8)
    pending = []

    def ring_then_wait(ua, ev, now):
        if isinstance(ev, IncomingCall):
            ua.answer(ev.call, 180, now=now)
            pending.append(ev.call)

    net = Net(a, b, delay=0.02, on_event=ring_then_wait)
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    net.run(2.0)
    b.answer(pending[0], 200, now=2.0)
    net.run(3.0)
    assert call.times.post_dial_delay_ms == pytest.approx(40.0, abs=1e-6)
    assert call.times.setup_ms == pytest.approx(2020.0, abs=1e-6)


# ---------------------------------------------------------------------------------------
# CANCEL, busy, failures
# ---------------------------------------------------------------------------------------


def test_cancel_before_answer_gives_487_and_ack():
    a = make_ua(A_ADDR, "alice", 9)
    b = make_ua(B_ADDR, "bob", 10)
    net = Net(a, b, on_event=lambda ua, ev, now: isinstance(ev, IncomingCall) and ua.answer(ev.call, 180, now=now))
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    a.cancel(call, now=0.0)  # no provisional yet: held back until the 180 (RFC 3261 9.1)
    assert methods(a, "out") == ["INVITE"]
    net.run(1.0)
    assert methods(a, "out") == ["INVITE", "CANCEL", "ACK"]
    assert sorted(methods(a, "in")) == sorted(["100", "180", "200", "487"])
    assert net.of(A_ADDR, CallCancelled)[0].by_remote is False
    assert net.of(B_ADDR, CallCancelled)[0].by_remote is True
    assert call.state is CallState.CANCELLED and call.status == 487
    ack = parse_message(next(d for d, _ in _sent_log(a) if d.startswith(b"ACK")))
    assert ack.via[0].branch == call._invite.via[0].branch  # non-2xx ACK: same transaction (17.1.1.3)
    cancel = parse_message(next(d for d, _ in _sent_log(a) if d.startswith(b"CANCEL")))
    assert cancel.cseq.number == call._invite.cseq.number and cancel.cseq.method == "CANCEL"
    ok_cancel = next(e for e in a.trace if e.direction == "in" and e.cseq and e.cseq.endswith("CANCEL"))
    assert ok_cancel.first_line == "SIP/2.0 200 OK"


def test_busy_486_acked_by_transaction():
    a = make_ua(A_ADDR, "alice", 11)
    b = make_ua(B_ADDR, "bob", 12)
    net = Net(a, b, on_event=lambda ua, ev, now: isinstance(ev, IncomingCall) and ua.reject(ev.call, now=now))
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    net.run(1.0)
    failed = net.of(A_ADDR, CallFailed)[0]
    assert (failed.status, failed.reason) == (486, "Busy Here")
    assert methods(a, "out") == ["INVITE", "ACK"] and methods(b, "in") == ["INVITE", "ACK"]
    assert net.of(B_ADDR, CallFailed)[0].status == 486
    assert call.state is CallState.FAILED and call.dialog is None or call.dialog.terminated


def test_invite_to_nobody_times_out_with_408():
    a = make_ua(A_ADDR, "alice", 13)
    net = Net(a)
    call = a.invite("sip:bob@10.0.0.77", now=0.0)
    net.run(40.0)
    failed = net.of(A_ADDR, CallFailed)[0]
    assert failed.status == 408 and net.events[A_ADDR][0][0] == pytest.approx(32.0)
    assert sum(1 for e in a.trace if e.first_line.startswith("INVITE")) == 7  # 0, .5, 1.5, 3.5, 7.5, 15.5, 31.5
    assert call.state is CallState.FAILED and call.times.ended == pytest.approx(32.0)


def test_answer_without_codecs_or_sdp_refuses_offer():
    a = make_ua(A_ADDR, "alice", 14)
    b = make_ua(B_ADDR, "bob", 15, codecs=None)
    net = Net(a, b)
    a.invite("sip:bob@10.0.0.2", now=0.0)
    net.run(0.5)
    bcall = net.of(B_ADDR, IncomingCall)[0].call
    assert net.of(B_ADDR, IncomingCall)[0].offer_sdp is not None
    with pytest.raises(LocalProtocolError, match="codecs"):
        b.answer(bcall, 200, now=net.now)
    b.answer(bcall, 488, now=net.now)
    net.run(1.0)
    assert net.of(A_ADDR, CallFailed)[0].status == 488


def test_codec_mismatch_answers_488():
    a = make_ua(A_ADDR, "alice", 16, codecs=["opus"])
    b = make_ua(B_ADDR, "bob", 17, codecs=["pcmu"])
    net = Net(a, b, on_event=auto_answer(ring=False))
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    net.run(1.0)
    assert net.of(A_ADDR, CallFailed)[0].status == 488 and call.state is CallState.FAILED


def test_delayed_offer_answer_in_ack():
    a = make_ua(A_ADDR, "alice", 18)
    b = make_ua(B_ADDR, "bob", 19, codecs=["pcmu"])
    net = Net(a, b, on_event=auto_answer(ring=False))
    call = a.invite("sip:bob@10.0.0.2", sdp_offer=None, now=0.0)
    assert call._invite.body == b""
    net.run(1.0)
    bcall = net.of(B_ADDR, IncomingCall)[0].call
    assert net.of(B_ADDR, IncomingCall)[0].offer_sdp is None
    assert call.media.codec == "pcmu" and bcall.media.codec == "pcmu"
    ack = parse_message(next(d for d, _ in _sent_log(a) if d.startswith(b"ACK")))
    assert b"m=audio" in ack.body


# ---------------------------------------------------------------------------------------
# re-INVITE, OPTIONS, INFO
# ---------------------------------------------------------------------------------------


def established_pair(seed=20, **kw):
    a = make_ua(A_ADDR, "alice", seed, **kw)
    b = make_ua(B_ADDR, "bob", seed + 1, **kw)
    net = Net(a, b, on_event=auto_answer())
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    net.run(1.0)
    bcall = net.of(B_ADDR, IncomingCall)[0].call
    assert call.established and bcall.established
    return a, b, net, call, bcall


def test_reinvite_hold_resume_and_codec_change():
    a, b, net, call, bcall = established_pair()
    assert call.media.codec == "opus" and call.media.direction == "sendrecv"
    a.reinvite(call, now=net.now, direction="sendonly")
    with pytest.raises(LocalProtocolError, match="14.1"):
        a.reinvite(call, now=net.now)
    net.run(net.now + 1)
    assert call.media.direction == "sendonly" and bcall.media.direction == "recvonly"
    assert len(net.of(A_ADDR, ReinviteAnswered)) == 1 and len(net.of(B_ADDR, ReinviteReceived)) == 1
    a.reinvite(call, now=net.now, direction="sendrecv")
    net.run(net.now + 1)
    assert call.media.direction == "sendrecv" and bcall.media.direction == "sendrecv"
    a.reinvite(call, now=net.now, codecs=["pcmu"])
    net.run(net.now + 1)
    assert call.media.codec == "pcmu" and bcall.media.codec == "pcmu"
    # the callee can re-INVITE too
    b.reinvite(bcall, now=net.now, direction="inactive")
    net.run(net.now + 1)
    assert bcall.media.direction == "inactive" and call.media.direction == "inactive"
    invites = [parse_message(d) for d, _ in _sent_log(a) if d.startswith(b"INVITE")]
    assert [m.cseq.number for m in invites] == [invites[0].cseq.number + i for i in range(4)]
    versions = [int(m.body.split(b"\r\n")[1].split()[2]) for m in invites]
    assert versions == sorted(versions) and len(set(versions)) == 4  # o= version increments
    assert not net.of(A_ADDR, MessageRejected) and not net.of(B_ADDR, MessageRejected)


def test_reinvite_glare_gets_491():
    a, b, net, call, bcall = established_pair(seed=22)
    a.reinvite(call, now=net.now, direction="sendonly")
    b.reinvite(bcall, now=net.now, direction="sendonly")
    net.run(net.now + 1)
    fails_a = [e.status for _, e in net.events[A_ADDR] if type(e).__name__ == "ReinviteFailed"]
    fails_b = [e.status for _, e in net.events[B_ADDR] if type(e).__name__ == "ReinviteFailed"]
    assert fails_a == [491] and fails_b == [491]
    assert call.established and bcall.established


def test_options_out_of_dialog_and_in_dialog_info():
    a, b, net, call, bcall = established_pair(seed=24)
    h = a.options("sip:bob@10.0.0.2", now=net.now)
    net.run(net.now + 1)
    ans = net.of(A_ADDR, OptionsAnswered)[0]
    assert ans.handle is h and ans.status == 200 and "INVITE" in ans.response.headers["Allow"]
    assert ans.rtt_ms == pytest.approx(20.0)
    h2 = a.info(call, now=net.now, body=b"Signal=5\r\n", content_type="application/dtmf-relay")
    net.run(net.now + 1)
    assert net.of(A_ADDR, RequestAnswered)[0].handle is h2 and net.of(A_ADDR, RequestAnswered)[0].status == 200
    assert net.of(B_ADDR, InfoReceived)[0].request.body == b"Signal=5\r\n"


# ---------------------------------------------------------------------------------------
# In-dialog checks (12.2.2)
# ---------------------------------------------------------------------------------------


def _responses_to(ua, method):
    ua.datagrams_to_send()
    return [parse_message(d) for d, _ in _sent_log(ua) if d.startswith(b"SIP/2.0") and f" {method}\r\n".encode() in d]


def test_in_dialog_request_with_wrong_tag_gets_481():
    a, b, net, call, bcall = established_pair(seed=26)
    rogue = copy.copy(call.dialog)
    rogue.remote_tag = "not-the-tag"
    bye = rogue.create_request("BYE", via=a._via("z9hG4bKrogue1"))
    b.receive(bytes(bye), A_ADDR, net.now)
    resp = _responses_to(b, "BYE")[-1]
    assert resp.status_code == 481 and bcall.established


def test_in_dialog_lower_cseq_gets_500():
    a, b, net, call, bcall = established_pair(seed=28)
    a.info(call, now=net.now)
    net.run(net.now + 1)
    stale = copy.copy(call.dialog)
    stale.local_cseq = call.dialog.local_cseq - 3
    req = stale.create_request("INFO", via=a._via("z9hG4bKstale1"))
    b.receive(bytes(req), A_ADDR, net.now)
    resp = _responses_to(b, "INFO")[-1]
    assert resp.status_code == 500 and bcall.established


def test_bye_outside_dialog_and_unknown_method():
    b = make_ua(B_ADDR, "bob", 30)
    base = (
        "{m} sip:bob@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{b}\r\n"
        "From: <sip:alice@10.0.0.1>;tag=1\r\nTo: <sip:bob@10.0.0.2>\r\nCall-ID: x{b}\r\nCSeq: 1 {m}\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    codes = {}
    for i, m in enumerate(["BYE", "FOO", "SUBSCRIBE", "OPTIONS"]):
        b.receive(base.format(m=m, b=f"k{i}").encode(), A_ADDR, float(i))
        codes[m] = parse_message(b.datagrams_to_send()[-1][0]).status_code
    assert codes == {"BYE": 481, "FOO": 501, "SUBSCRIBE": 405, "OPTIONS": 200}


# ---------------------------------------------------------------------------------------
# Record-Route through a proxy
# ---------------------------------------------------------------------------------------


def test_record_route_via_proxy_used_for_ack_and_bye():
    a = make_ua(A_ADDR, "alice", 31, outbound_proxy=f"sip:{P_ADDR[0]}:{P_ADDR[1]}")
    b = make_ua(B_ADDR, "bob", 32)
    proxy = FakeProxy(P_ADDR)
    net = Net(a, b, proxy, on_event=auto_answer())
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    net.run(1.0)
    bcall = net.of(B_ADDR, IncomingCall)[0].call
    assert call.established and bcall.established
    assert [str(r.uri) for r in call.dialog.route_set] == [proxy.uri]
    assert [str(r.uri) for r in bcall.dialog.route_set] == [proxy.uri]
    a.bye(call, now=net.now)
    net.run(net.now + 1)
    assert net.of(B_ADDR, CallEnded)[0].by_remote
    assert proxy.seen.count("ACK") == 1 and proxy.seen.count("BYE") == 1 and "200 BYE" in proxy.seen
    bye = parse_message(next(d for d, _ in _sent_log(a) if d.startswith(b"BYE")))
    assert bye.headers.get_all("Route") == [f"<{proxy.uri}>"] and str(bye.uri) == str(call.dialog.remote_target)
    assert all(addr == P_ADDR for _, addr in _sent_log(a))  # everything went through the proxy


# ---------------------------------------------------------------------------------------
# rport / received (RFC 3581)
# ---------------------------------------------------------------------------------------


def test_rport_response_goes_to_source_address_with_received_and_rport():
    b = make_ua(B_ADDR, "bob", 33)
    req = (
        b"OPTIONS sip:bob@10.0.0.2 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKnat1;rport\r\n"
        b"From: <sip:alice@example.com>;tag=77\r\nTo: <sip:bob@10.0.0.2>\r\n"
        b"Call-ID: nat-test\r\nCSeq: 9 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    b.receive(req, ("10.0.0.5", 5062), 0.0)
    (data, addr), = b.datagrams_to_send()
    assert addr == ("10.0.0.5", 5062)
    via = parse_message(data).via[0]
    assert via.received == "10.0.0.5" and via.rport == 5062 and via.branch == "z9hG4bKnat1"
    # without rport: received is added (source differs from sent-by) and the sent-by port is used
    b.receive(req.replace(b";rport", b"").replace(b"nat1", b"nat2"), ("10.0.0.5", 5062), 1.0)
    (data, addr), = b.datagrams_to_send()
    assert addr == ("10.0.0.5", 5060) and parse_message(data).via[0].rport is None


# ---------------------------------------------------------------------------------------
# Lossy channel
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_call_completes_over_lossy_channel(seed):
    a = make_ua(A_ADDR, "alice", 100 + seed)
    b = make_ua(B_ADDR, "bob", 200 + seed)
    cfg = ChannelConfig(delay_ms=20.0, loss_rate=0.2)
    channels = {(A_ADDR, B_ADDR): Channel(cfg, seed=seed), (B_ADDR, A_ADDR): Channel(cfg, seed=1000 + seed)}
    net = Net(a, b, channels=channels, on_event=auto_answer())
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    net.run(40.0)
    bcall = net.of(B_ADDR, IncomingCall)[0].call
    assert call.state is CallState.ESTABLISHED and bcall.state is CallState.ESTABLISHED
    a.bye(call, now=net.now)
    net.run(net.now + 40.0)
    assert call.state is CallState.ENDED and bcall.state is CallState.ENDED
    assert len(net.of(A_ADDR, CallEstablished)) == 1 and len(net.of(B_ADDR, CallEnded)) == 1
    lost = channels[(A_ADDR, B_ADDR)].stats.sent - channels[(A_ADDR, B_ADDR)].stats.delivered
    lost += channels[(B_ADDR, A_ADDR)].stats.sent - channels[(B_ADDR, A_ADDR)].stats.delivered
    retrans = sum(e.retransmission for e in a.trace + b.trace)
    assert retrans >= 1 or lost == 0
    assert a.next_timer() is None and b.next_timer() is None  # everything cleaned up


def test_lossy_channel_retransmissions_actually_happen():
    """Across the seeds above at least one run lost packets and recovered them."""
    total_lost = total_retrans = 0
    for seed in range(6):
        a = make_ua(A_ADDR, "alice", 100 + seed)
        b = make_ua(B_ADDR, "bob", 200 + seed)
        cfg = ChannelConfig(delay_ms=20.0, loss_rate=0.2)
        chans = {(A_ADDR, B_ADDR): Channel(cfg, seed=seed), (B_ADDR, A_ADDR): Channel(cfg, seed=1000 + seed)}
        net = Net(a, b, channels=chans, on_event=auto_answer())
        a.invite("sip:bob@10.0.0.2", now=0.0)
        net.run(40.0)
        total_lost += sum(c.stats.sent - c.stats.delivered for c in chans.values())
        total_retrans += sum(e.retransmission for e in a.trace + b.trace)
    assert total_lost > 0 and total_retrans >= total_lost // 2


# ---------------------------------------------------------------------------------------
# Garbage in
# ---------------------------------------------------------------------------------------


def test_garbage_never_raises_and_gets_400_or_is_dropped():
    b = make_ua(B_ADDR, "bob", 34)
    rng = np.random.default_rng(5)
    for i in range(200):
        b.receive(rng.bytes(int(rng.integers(0, 400))), A_ADDR, float(i))
    rejected = [e for e in b.drain_events() if isinstance(e, MessageRejected)]
    assert len(rejected) == 200 and all(e.status is None for e in rejected)
    assert b.datagrams_to_send() == []
    # a request that can be read but is invalid: 400 built from what could be read
    bad = (
        b"INVITE sip:bob@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKbad\r\n"
        b"From: <sip:alice@10.0.0.1>;tag=1\r\nTo: <sip:bob@10.0.0.2>\r\nCall-ID: bad@x\r\n"
        b"CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    b.receive(bad, A_ADDR, 500.0)
    (data, addr), = b.datagrams_to_send()
    resp = parse_message(data)
    assert resp.status_code == 400 and addr == A_ADDR and resp.call_id == "bad@x" and resp.via[0].branch == "z9hG4bKbad"
    assert b.drain_events()[0].status == 400
    b.receive(bad.replace(b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia").replace(b"1 BYE", b"1 INVITE"), A_ADDR, 501.0)
    assert parse_message(b.datagrams_to_send()[0][0]).status_code == 505
    assert b.drain_events()[0].status == 505
    b.receive(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKx\r\n\r\n", A_ADDR, 502.0)
    assert b.datagrams_to_send() == [] and b.drain_events()[0].status is None
    with pytest.raises(ParameterError):
        b.receive("text", A_ADDR, 503.0)
    with pytest.raises(ParameterError, match="backwards"):
        b.receive(b"x", A_ADDR, 1.0)


def _raw_request(method="INVITE", *, cl="{len}", body=b"v=0\r\n", extra=b"", cseq=b"7 INVITE", call_id=b"framing@x"):
    head = (
        method.encode() + b" sip:bob@10.0.0.2 SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKframe\r\nVia: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKp\r\n"
        b"From: <sip:alice@10.0.0.1>;tag=fa\r\nTo: \"Bob\" <sip:bob@10.0.0.2>\r\nCall-ID: " + call_id + b"\r\n"
        b"CSeq: " + cseq + b"\r\nContact: <sip:alice@10.0.0.1>\r\n" + extra
    )
    cl_line = b"" if cl is None else b"Content-Length: " + cl.replace("{len}", str(len(body))).encode() + b"\r\n"
    return head + cl_line + b"\r\n" + body


#: requests whose framing the parser refuses, but whose Via/From/To/Call-ID/CSeq are readable
BAD_FRAMING = {
    "body shorter than Content-Length": (_raw_request(body=b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n")[:-8], 400),
    "Content-Length past the datagram": (_raw_request(cl="500"), 400),
    "Content-Length not 1*DIGIT": (_raw_request(cl="twelve"), 400),
    "Content-Length negative": (_raw_request(cl="-3"), 400),
    "Content-Length with a sign": (_raw_request(cl="+5"), 400),
    "two Content-Lengths, the first bad": (_raw_request(extra=b"Content-Length: x\r\n"), 400),
    "300 header fields": (_raw_request(extra=b"".join(b"X-F%d: %d\r\n" % (i, i) for i in range(300))), 400),
    "a header line without a colon": (_raw_request(extra=b"this is not a header\r\n"), 400),
    "a header line over the line limit": (_raw_request(extra=b"Subject: " + b"s" * 9000 + b"\r\n"), 400),
    "folded To and CSeq": (_raw_request(cl="x").replace(b"To: ", b"To:\r\n ").replace(b"CSeq: 7", b"CSeq: 7\r\n\t"), 400),
    "no empty line after the headers": (_raw_request(cl=None, body=b""), 400),
    "over the 64 KiB message limit": (_raw_request(body=b"a=x-pad\r\n" * 8000), 513),
    "OPTIONS with a bad Content-Length": (_raw_request("OPTIONS", cl="?", cseq=b"7 OPTIONS"), 400),
}


@pytest.mark.parametrize("name", list(BAD_FRAMING))
def test_bad_framing_is_answered_from_leniently_read_headers(name):
    """RFC 3261 18.3 / 8.2: a UAS answers 400 (513 for size) whenever it can build the response."""
    data, status = BAD_FRAMING[name]
    if name == "no empty line after the headers":
        data = data.rstrip(b"\r\n") + b"\r\n"  # complete header lines, but no CRLF CRLF
    with pytest.raises(RemoteProtocolError):  # the strict parser refuses it (otherwise this tests nothing)
        parse_message(data, validate=False)
    b = make_ua(B_ADDR, "bob", 44)
    b.receive(data, ("10.0.0.1", 5999), 1.0)
    (out, addr), = b.datagrams_to_send()
    resp = parse_message(out)
    assert resp.status_code == status and addr == ("10.0.0.1", 5999)  # to the source, as for any stateless reply
    # 8.2.6.2: Via (all, in order), From, Call-ID and CSeq copied; To copied with a tag added
    assert [v.branch for v in resp.via] == ["z9hG4bKframe", "z9hG4bKp"]
    assert (resp.call_id, resp.cseq.number, resp.cseq.method) == ("framing@x", 7, data.split(b" ")[0].decode())
    assert resp.from_.tag == "fa" and str(resp.to.uri) == "sip:bob@10.0.0.2" and resp.to.tag
    (ev,) = b.drain_events()
    assert isinstance(ev, MessageRejected) and ev.status == status
    assert b.next_timer() is None and not b.calls  # stateless: no transaction, no call


BAD_AND_UNANSWERABLE = {
    "ACK (never answered)": _raw_request("ACK", cl="x", cseq=b"7 ACK"),
    "a response": b"SIP/2.0 200 OK\r\n" + _raw_request(cl="x").split(b"\r\n", 1)[1],
    "no Call-ID": _raw_request(cl="x").replace(b"Call-ID: framing@x\r\n", b""),
    "CSeq not parseable": _raw_request(cl="x", cseq=b"seven INVITE"),
    "Call-ID not parseable": _raw_request(cl="x", call_id=b"a b c"),
    "Via not parseable": _raw_request(cl="x").replace(b"v: SIP/2.0/UDP", b"v: SIP/2.0/UDP ;;"),
    "cut inside the CSeq line": _raw_request(cl="x").split(b"\r\nCSeq: ")[0] + b"\r\nCSeq: 7 INV",
    "start line not a request": b"HELLO\r\n" + _raw_request(cl="x").split(b"\r\n", 1)[1],
    "From not UTF-8": _raw_request(cl="x").replace(b"<sip:alice", b"\"\xff\xfe\" <sip:alice"),
    "more Via fields than the header limit": _raw_request(
        cl="x", extra=b"".join(b"Via: SIP/2.0/UDP 10.9.%d.%d;branch=z9hG4bK%d\r\n" % (i // 250, i % 250, i)
                              for i in range(300))),
}


@pytest.mark.parametrize("name", list(BAD_AND_UNANSWERABLE))
def test_bad_framing_without_what_a_response_needs_is_dropped(name):
    b = make_ua(B_ADDR, "bob", 45)
    b.receive(BAD_AND_UNANSWERABLE[name], A_ADDR, 1.0)
    assert b.datagrams_to_send() == []
    (ev,) = b.drain_events()
    assert isinstance(ev, MessageRejected) and ev.status is None and ev.reason.startswith("dropped")


def test_ack_with_other_cseq_number_confirms_the_invite_server_transaction():
    """RFC 3261 17.2.3 matches an ACK to the INVITE server transaction by the top Via branch
    (and sent-by, method ACK <-> INVITE), not by CSeq: SIPp's automatic ACK after a 401
    carries CSeq 1 for an INVITE with CSeq 2, and must still stop the 401's retransmissions."""
    challenge = lambda req, now: build_response(req, 401, "Unauthorized", to_tag="srv")  # noqa: E731
    b = make_ua(B_ADDR, "bob", 46, authenticate=challenge)
    invite = _raw_request(cseq=b"2 INVITE")
    b.receive(invite, A_ADDR, 0.0)
    assert [parse_message(d).status_code for d, _ in b.datagrams_to_send()] == [100, 401]
    ack = _raw_request("ACK", cl="0", body=b"", cseq=b"1 ACK").replace(b"To: \"Bob\" <sip:bob@10.0.0.2>",
                                                                           b"To: \"Bob\" <sip:bob@10.0.0.2>;tag=srv")
    b.receive(ack, A_ADDR, 0.1)
    assert b.drain_events() == []  # absorbed by the transaction: no MessageRejected
    (tx,) = b.transaction_table.transactions()
    assert tx.state.name == "CONFIRMED"
    now, resent = 0.1, []
    while (t := b.next_timer()) is not None:
        now = t
        b.handle_timer(now)
        resent += [parse_message(d).status_code for d, _ in b.datagrams_to_send()]
    assert resent == [] and now == pytest.approx(0.1 + 5.0)  # Timer I (T4) ends it, not Timer H
    assert b.transaction_table.transactions() == [] and b.datagrams_to_send() == []


def test_2xx_without_contact_fails_the_call_instead_of_hanging():
    a = make_ua(A_ADDR, "alice", 43)
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    inv = parse_message(a.datagrams_to_send()[0][0])
    a.receive(bytes(build_response(inv, 200, "OK", to_tag="t")), B_ADDR, 0.1)
    failed = [e for e in a.drain_events() if isinstance(e, CallFailed)]
    assert failed[0].status == 502 and "Contact" in failed[0].reason and call.over


def test_response_with_foreign_via_is_dropped():
    a = make_ua(A_ADDR, "alice", 35)
    a.invite("sip:bob@10.0.0.2", now=0.0)
    inv = parse_message(a.datagrams_to_send()[0][0])
    resp = build_response(inv, 180, "Ringing", to_tag="t")
    resp.headers.set("Via", "SIP/2.0/UDP 10.9.9.9:5060;branch=" + inv.via[0].branch)
    a.receive(bytes(resp), B_ADDR, 0.1)
    assert [type(e).__name__ for e in a.drain_events()] == ["MessageRejected"]


# ---------------------------------------------------------------------------------------
# Auth hooks and REGISTER
# ---------------------------------------------------------------------------------------


def test_client_auth_retry_and_server_auth_hook():
    auth = pytest.importorskip("voicelab.sip.auth", reason="voicelab.sip.auth (digest) is not in this tree")
    authn = auth.DigestAuthenticator("lab", {"alice": "pw"}, secret=b"k" * 32)

    def authenticate(request, now):
        result = authn.verify(request, now)
        return None if result.ok else authn.reject(request, result, now)

    asked = []

    def credentials_for(realm):
        asked.append(realm)
        return ("alice", "pw")

    a = make_ua(A_ADDR, "alice", 36, credentials_for=credentials_for)
    b = make_ua(B_ADDR, "bob", 37, authenticate=authenticate)
    net = Net(a, b, on_event=auto_answer())
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    first_cseq = call._invite.cseq.number
    net.run(1.0)
    assert call.established and asked == ["lab"]
    assert call._invite.cseq.number == first_cseq + 1 and call._invite.headers.get("Authorization")
    assert methods(a, "out") == ["INVITE", "ACK", "INVITE", "ACK"] and methods(a, "in")[:2] == ["100", "401"]
    # in-dialog requests are challenged too (the hook sees every request but ACK/CANCEL)
    a.bye(call, now=net.now)
    net.run(net.now + 1)
    assert net.of(B_ADDR, CallEnded) and call.state is CallState.ENDED
    byes = [parse_message(d) for d, _ in _sent_log(a) if d.startswith(b"BYE")]
    assert len(byes) == 2 and byes[1].cseq.number == byes[0].cseq.number + 1
    # wrong password: one retry, then the 401 ends the call
    c = make_ua(("10.0.0.3", 5060), "carol", 38, credentials_for=lambda realm: ("alice", "wrong"))
    net2 = Net(c, make_ua(B_ADDR, "bob", 39, authenticate=authenticate))
    c.invite("sip:bob@10.0.0.2", now=0.0)
    net2.run(1.0)
    assert net2.of(("10.0.0.3", 5060), CallFailed)[0].status == 401
    assert methods(c, "out").count("INVITE") == 2
    # no credentials hook: the first 401 is final
    d = make_ua(("10.0.0.4", 5060), "dave", 40)
    net3 = Net(d, make_ua(B_ADDR, "bob", 41, authenticate=authenticate))
    d.invite("sip:bob@10.0.0.2", now=0.0)
    net3.run(1.0)
    assert net3.of(("10.0.0.4", 5060), CallFailed)[0].status == 401 and methods(d, "out").count("INVITE") == 1


def test_register_with_423_retry():
    a = make_ua(A_ADDR, "alice", 40)
    out = []

    a.register("sip:10.0.0.8", 0.0, expires=30)
    (data, addr), = a.datagrams_to_send()
    req = parse_message(data)
    assert addr == ("10.0.0.8", 5060) and req.headers["Expires"] == "30" and req.to.uri == a.local_uri
    r = build_response(req, 423, "Interval Too Brief", to_tag="r")
    r.headers.add("Min-Expires", "60")
    a.receive(bytes(r), addr, 0.1)
    (data2, _), = a.datagrams_to_send()
    req2 = parse_message(data2)
    assert req2.call_id == req.call_id and req2.cseq.number == req.cseq.number + 1 and req2.headers["Expires"] == "60"
    ok = build_response(req2, 200, "OK", to_tag="r")
    ok.headers.add("Contact", f"<{a.contact}>;expires=55")
    a.receive(bytes(ok), addr, 0.2)
    res = [e for e in a.drain_events() if isinstance(e, RegistrationResult)]
    out.append(res)
    assert len(res) == 1 and res[0].status == 200 and res[0].expires == 55
    a.register("sip:10.0.0.8", 1.0, expires=0)
    req3 = parse_message(a.datagrams_to_send()[0][0])
    assert req3.call_id == req.call_id and req3.cseq.number == req2.cseq.number + 1


def test_parameter_errors():
    with pytest.raises(ParameterError):
        UserAgent(local_uri="sip:a@x", local_addr=("10.0.0.1", 5060), rng=1, transport="sctp")
    with pytest.raises(ParameterError):
        UserAgent(local_uri="not a uri", local_addr=("10.0.0.1", 5060), rng=1)
    with pytest.raises(ParameterError):
        UserAgent(local_uri="sip:a@x", local_addr=("10.0.0.1",), rng=1)
    a = make_ua(A_ADDR, "alice", 41)
    with pytest.raises(ParameterError):
        a.invite("bob", now=0.0)
    with pytest.raises(ParameterError):
        a.invite("sip:b@10.0.0.2", now=float("nan"))
    other = make_ua(B_ADDR, "bob", 42)
    call = other.invite("sip:a@10.0.0.1", now=0.0)
    with pytest.raises(ParameterError):
        a.bye(call, now=1.0)
    with pytest.raises(LocalProtocolError):
        other.answer(call, 200, now=1.0)
