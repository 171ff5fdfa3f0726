"""The signalling fast path: what is parsed once, cached or templated stays correct.

Counting tests (how often a parser runs, how often a template is used), never timing.
"""

from __future__ import annotations

import pytest

from voicelab.errors import RemoteProtocolError
from voicelab.sip import headers as H
from voicelab.sip import message as M
from voicelab.sip.message import parse_message
from voicelab.sip.timers import TimerConfig, derive_timers
from voicelab.sip.ua import IncomingCall, UserAgent

SDP = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _invite(n: int = 1, *, sdp: str = SDP, extra: str = "") -> bytes:
    return (f"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}\r\n"
            f"From: sipp <sip:sipp@127.0.0.1:5061>;tag={n}a\r\nTo: <sip:service@127.0.0.1:5060>\r\n"
            f"Call-ID: {n}@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\n"
            f"{extra}Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}").encode()


def _counting(monkeypatch, name: str) -> list[str]:
    """Count calls of the Via/CSeq parser everywhere the message module reaches it."""
    calls: list[str] = []
    real = getattr(H, name)

    def counted(value, *a):
        calls.append(value)
        return real(value, *a)

    monkeypatch.setattr(M, name, counted)
    monkeypatch.setitem(H.HEADER_PARSERS, name[len("parse_"):], counted)
    H._shared_parse.cache_clear()
    return calls


@pytest.mark.parametrize("name", ["parse_via", "parse_cseq"])
def test_each_header_is_parsed_once_however_often_it_is_read(monkeypatch, name):
    calls = _counting(monkeypatch, name)
    msg = parse_message(_invite())  # validation parses every header once
    assert len(calls) == 1
    for _ in range(5):
        assert msg.via[0].branch == "z9hG4bK-1" and msg.cseq.number == 1
    assert len(calls) == 1


def test_a_value_seen_in_another_message_is_not_parsed_again(monkeypatch):
    calls = _counting(monkeypatch, "parse_cseq")
    for n in range(5):  # five calls: CSeq "1 INVITE" every time
        assert parse_message(_invite(n)).cseq.number == 1
    assert calls == ["1 INVITE"]
    bad = _invite(9).replace(b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE")
    for _ in range(2):  # errors are not remembered: each message with it is refused
        with pytest.raises(RemoteProtocolError):
            parse_message(bad)
    assert calls.count("99999999999 INVITE") == 2
    monkeypatch.undo()
    H._shared_parse.cache_clear()


def test_an_edit_drops_what_was_parsed():
    msg = parse_message(_invite())
    assert msg.cseq.number == 1 and "max-forwards" in msg.headers
    msg.headers.set("CSeq", "7 INVITE")
    assert msg.cseq.number == 7
    msg.headers.remove("Via")
    assert msg.via == []
    msg.headers.add("Via", "SIP/2.0/UDP h;branch=z9hG4bKx")
    assert msg.via[0].branch == "z9hG4bKx" and msg.headers.count("via") == 1


def test_a_malformed_header_raises_on_every_read_not_once():
    msg = parse_message(_invite(), validate=False)
    msg.headers.set("CSeq", "x INVITE")
    for _ in range(2):
        with pytest.raises(RemoteProtocolError) as exc:
            msg.cseq
        assert exc.value.status_code == 400


@pytest.mark.parametrize("extra", ["Expires: soon\r\n", "Max-Forwards: 300\r\n", "Content-Length: 1\r\n"])
def test_headers_nobody_reads_are_still_validated(extra):
    with pytest.raises(RemoteProtocolError) as exc:
        parse_message(_invite(extra=extra))
    assert exc.value.status_code == 400


def test_header_key_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(H, "_KEYS", {})
    for i in range(H._KEYS_MAX + 50):
        assert H.header_key(f"X-Made-Up-{i}") == f"x-made-up-{i}"
    assert len(H._KEYS) == H._KEYS_MAX
    assert H.header_key("v") == "via" and H.header_key("I") == "call-id"


def test_timer_values_are_derived_once_per_configuration():
    assert derive_timers(None, reliable=False) is derive_timers(TimerConfig(), reliable=False)
    assert derive_timers(TimerConfig(t1=0.25), reliable=False).b == 16.0
    assert derive_timers(None, reliable=True).a is None


def _ua(**kw) -> UserAgent:
    return UserAgent(local_uri="sip:agent@127.0.0.1", local_addr=("127.0.0.1", 5060), rng=7, codecs=["pcmu"],
                     media_address="127.0.0.1", trace_limit=0, **kw)


def _answer(ua: UserAgent, data: bytes, now: float, port: int = 5062) -> tuple[bytes, object]:
    ua.receive(data, ("127.0.0.1", 5061), now)
    ev = [e for e in ua.drain_events() if isinstance(e, IncomingCall)][0]
    ua.answer(ev.call, 200, now=now, media_port=port)
    out = [d for d, _ in ua.datagrams_to_send() if d.startswith(b"SIP/2.0 200")]
    return out[-1].split(b"\r\n\r\n", 1)[1], ev.call.media


def test_the_same_offer_is_answered_from_a_template_with_a_fresh_session_id():
    ua, ref = _ua(), _ua()
    ref._answer_templates = _NoCache()  # the reference UA builds every answer from scratch
    bodies = []
    for n in range(1, 4):
        body, media = _answer(ua, _invite(n), float(n))
        ref_body, ref_media = _answer(ref, _invite(n), float(n))
        assert body == ref_body and media == ref_media  # byte for byte what create_answer makes
        bodies.append(body)
    assert ua.answer_template_hits == 2 and ref.answer_template_hits == 0
    assert len({b.split(b"\r\n")[1] for b in bodies}) == 3  # o= lines differ: a session id per call
    assert len({b.split(b"\r\n", 2)[2] for b in bodies}) == 1


def test_a_different_offer_or_port_is_not_answered_from_the_template():
    ua = _ua()
    _answer(ua, _invite(1), 1.0)
    body, media = _answer(ua, _invite(2, sdp=SDP.replace("6000", "7000")), 2.0)
    assert media.remote_port == 7000
    body, media = _answer(ua, _invite(3), 3.0, port=6100)
    assert b"m=audio 6100 " in body
    assert ua.answer_template_hits == 0


def test_the_templated_media_is_a_copy():
    ua = _ua()
    _, m1 = _answer(ua, _invite(1), 1.0)
    _, m2 = _answer(ua, _invite(2), 2.0)
    m2.params["plc"] = "changed"
    _, m3 = _answer(ua, _invite(3), 3.0)
    assert m3.params == m1.params and m3.params is not m2.params


class _NoCache(dict):
    def __setitem__(self, key, value) -> None:
        pass


def test_calls_leave_no_reference_cycles_for_the_collector():
    """A serving agent raises the collector's thresholds (voicelab.agent.tune_gc): that is
    only safe while the objects of a call are freed by reference counting."""
    import gc

    ua = _ua(keep_finished_calls=4)
    peer = ("127.0.0.1", 5061)

    def call(n: int, now: float) -> None:
        ua.receive(_invite(n), peer, now)
        inc = [e for e in ua.drain_events() if isinstance(e, IncomingCall)][0]
        ua.answer(inc.call, 200, now=now, media_port=5062)
        ok = [d for d, _ in ua.datagrams_to_send() if d.startswith(b"SIP/2.0 200")][-1]
        tag = ok.split(b"\r\nTo: ", 1)[1].split(b";tag=", 1)[1].split(b"\r\n", 1)[0].decode()
        for method, cseq, branch in (("ACK", 1, "a"), ("BYE", 2, "b")):
            ua.receive((f"{method} sip:service@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK{branch}{n}\r\n"
                        f"From: sipp <sip:sipp@127.0.0.1:5061>;tag={n}a\r\nTo: <sip:service@127.0.0.1:5060>;tag={tag}\r\n"
                        f"Call-ID: {n}@127.0.0.1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode(), peer, now)
        assert [d[:14] for d, _ in ua.datagrams_to_send()] == [b"SIP/2.0 200 OK"]  # the BYE's 200
        ua.drain_events()
        ua.handle_timer(now + 40.0)  # every transaction of the call ends

    call(0, 0.0)  # warm up (templates, caches)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for n in range(1, 41):
            call(n, 100.0 * n)
        gc.collect()
        ours = [o for o in gc.garbage if type(o).__module__.startswith("voicelab")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert ours == []
    assert len(ua._table._txns) == 0 and len(ua._server) == 0  # and nothing of them stays behind


def test_udp_transport_drains_queued_datagrams_in_one_callback_and_asks_for_a_large_buffer():
    """Counts, not time: 20 datagrams queued before the loop runs are delivered by fewer
    readiness callbacks than datagrams, all of them, in order."""
    import asyncio
    import socket

    from voicelab.net.iface import LoopbackInterface
    from voicelab.sip.transport import UDP_RCVBUF, UdpTransport

    async def main():
        got = []
        t = UdpTransport(LoopbackInterface(), parse=False, on_message=lambda data, addr, tr: got.append(data))
        host, port = await t.listen("127.0.0.1", 0)
        proto = t._protocol
        rcvbuf = proto._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(20):
                s.sendto(b"OPTIONS sip:x SIP/2.0\r\nX-N: %d\r\n\r\n" % i, (host, port))
            for _ in range(200):
                if len(got) == 20:
                    break
                await asyncio.sleep(0.01)
        await t.close()
        return got, proto.batches, rcvbuf

    got, batches, rcvbuf = asyncio.run(main())
    assert [int(g.split(b"X-N: ")[1].split(b"\r")[0]) for g in got] == list(range(20))
    assert batches >= 1
    with open("/proc/sys/net/core/rmem_max") as f:
        cap = int(f.read())
    assert rcvbuf >= min(UDP_RCVBUF, cap)  # Linux reports twice what was set


def test_finished_calls_leave_no_timer_index_entry():
    """The soak's finding: disarmed timers left their call's entry in the UA's per-call timer
    index forever (9 live blocks per call). After calls end and their timers pass, the index
    is empty, and the live memory blocks of a long run stay flat."""
    import sys

    from benchmarks.bench_sip_cpu import ACK, BYE, INVITE, SDP
    from voicelab.sip.ua import IncomingCall, UserAgent

    ua = UserAgent(local_uri="sip:agent@127.0.0.1", local_addr=("127.0.0.1", 5060), rng=1, codecs=["pcmu"],
                   media_address="127.0.0.1", keep_finished_calls=64, trace_limit=0, trying_delay=0.2)
    peer, clock = ("127.0.0.1", 5061), [1000.0]

    def one(n: int) -> None:
        clock[0] += 0.001
        ua.receive(INVITE.format(n=n, clen=len(SDP), sdp=SDP).encode(), peer, clock[0])
        ev = ua.next_event()
        while not isinstance(ev, IncomingCall):
            ev = ua.next_event()
        ua.answer(ev.call, 200, now=clock[0], media_port=5062)
        resp = ua.datagrams_to_send(clock[0])[-1][0]
        i = resp.index(b";tag=", resp.index(b"\r\nTo:")) + 5
        tag = resp[i:resp.index(b"\r\n", i)].decode()
        for msg in (ACK, BYE):
            clock[0] += 0.001
            ua.receive(msg.format(n=n, tag=tag).encode(), peer, clock[0])
            ua.datagrams_to_send(clock[0])
            while ua.next_event() is not None:
                pass
        ua.handle_timer(clock[0])

    def blocks_after(calls: int, start: int) -> int:
        for n in range(start, start + calls):
            one(n)
        clock[0] += 40.0  # past every transaction's and call's timers
        ua.handle_timer(clock[0])
        return sys.getallocatedblocks()

    first = blocks_after(2000, 0)
    assert ua._call_timers == {}  # noqa: SLF001 - the index this test guards
    second = blocks_after(2000, 2000)
    assert second - first < 2000  # was ~9 blocks kept per call: 18,000


def test_timer_slack_puts_deadlines_in_slots_and_never_fires_early():
    """AsyncUserAgent.timer_slack: deadlines in one slot share one loop timer, none runs early."""
    import asyncio

    from voicelab.sip.aio import AsyncUserAgent

    class FakeUA:
        local_addr = ("127.0.0.1", 5060)
        deadline = None

        def datagrams_to_send(self, now=None):
            return []

        def next_event(self):
            return None

        def next_timer(self):
            return self.deadline

    class FakeTransport:
        on_message = None

    async def run():
        ua = FakeUA()
        sip = AsyncUserAgent(ua, FakeTransport())
        whens = []
        for slack, deadlines in ((0.0, [100.0013, 100.0047]), (0.01, [100.0013, 100.0047, 100.0099, 100.0101, 0.07])):
            sip.timer_slack = slack
            for d in deadlines:
                ua.deadline = d
                sip.flush()
                whens.append((slack, d, sip._timer.when()))
        sip._timer.cancel()
        return whens

    whens = asyncio.run(run())
    for slack, deadline, when in whens:
        assert deadline <= when < deadline + max(slack, 1e-9) + 1e-9
    slotted = [w for s, d, w in whens if s and d > 100]
    assert slotted[0] == slotted[1] == slotted[2] and slotted[3] > slotted[2]  # three deadlines, one slot
    assert [w for s, d, w in whens if not s] == [100.0013, 100.0047]  # no slack: each on time
