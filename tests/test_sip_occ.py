"""RFC 7339 overload-control feedback: the Via text, the client's throttle, the server's estimate,
the UA on both sides (fake clock), and the agent's stateless refusals (C and Python paths) on a
real UDP socket."""

from __future__ import annotations

import asyncio
import re
import select

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.errors import ParameterError
from voicelab.sip import parse_message
from voicelab.sip.occ import (
    DEFAULT_VALIDITY_MS,
    Feedback,
    LossThrottle,
    client_asks,
    parse_feedback,
    request_params,
    with_feedback,
)
from voicelab.sip.overload import OverloadControl
from voicelab.sip.shed import status_line
from voicelab.sip.ua import CallFailed, IncomingCall

from .test_sip_shed import SIPP_INVITE, _c, _udp_pair
from .test_sip_ua import A_ADDR, B_ADDR, Net, make_ua

VIA = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport"


# ------------------------------------------------------------------ the Via text
@pytest.mark.parametrize("via, asks", [
    (VIA + ";oc", True),
    (VIA + ';oc;oc-algo="loss"', True),
    (VIA + ' ; OC ; oc-algo="A,loss"', True),
    (VIA + ';oc;oc-algo="A"', False),  # another algorithm only
    (VIA + ";oc=20", False),  # a value: a response's
    (VIA + ";oc-algo=loss", False),  # no oc itself
    (VIA + ";received=10.0.0.1;occupied", False),
    (VIA, False),
])
def test_client_asks_for_feedback_only_with_a_valueless_oc_and_the_loss_algorithm(via, asks):
    assert client_asks(via) is asks


def test_with_feedback_replaces_the_oc_parameters_and_keeps_the_others_in_order():
    out = with_feedback(VIA + ';received=10.0.0.9;oc;oc-algo="loss,A";x=1', percent=42, validity_ms=500, seq=3.25)
    assert out == (VIA + ';received=10.0.0.9;x=1;oc=42;oc-algo="loss";oc-validity=500;oc-seq=3.250')
    assert parse_feedback(out) == Feedback(42, 500, 3.25)
    for bad in ({"percent": 101}, {"percent": -1}, {"percent": True}, {"validity_ms": -1}, {"seq": float("nan")}):
        kw = {"percent": 1, "validity_ms": 1, "seq": 1.0, **bad}
        with pytest.raises(ParameterError):
            with_feedback(VIA + ";oc", **kw)


@pytest.mark.parametrize("tail", [
    ";oc", ";oc=abc", ";oc=101", ";oc=-5", ";oc=1000", ';oc=10;oc-algo="rate"', ";oc=10;oc-validity=x",
    ";oc=10;oc-seq=nan", ";oc=10;oc-seq=-1", ";oc=10;oc-seq=1e999", ";oc=10;oc-validity=99999999999",
])
def test_a_peers_unusable_feedback_is_ignored_not_an_error(tail):
    assert parse_feedback(VIA + tail) is None


def test_feedback_without_validity_holds_the_default():
    assert parse_feedback(VIA + ";oc=10") == Feedback(10, DEFAULT_VALIDITY_MS, 0.0)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(';=",oc-algvityseqlo0123456789. \t')), max_size=60),
       st.integers(0, 100), st.integers(0, 10**6), st.floats(0, 1e9, allow_nan=False))
def test_any_via_tail_parses_or_is_ignored_and_written_feedback_reads_back(tail, percent, validity, seq):
    via = VIA + tail
    from voicelab.sip.occ import _MAY_HAVE_OC, _params

    if "oc" in dict(_params(via)[1]):  # the fast gate never hides an oc parameter
        assert _MAY_HAVE_OC.search(via)
    fb = parse_feedback(via)  # never raises
    assert fb is None or (0 <= fb.percent <= 100 and fb.validity_ms >= 0 and fb.seq >= 0)
    client_asks(via)  # never raises
    out = with_feedback(via, percent=percent, validity_ms=validity, seq=seq)
    if via.count('"') % 2:  # an unbalanced quote: left as it was (the client gets no feedback)
        assert out == via
        return
    back = parse_feedback(out)
    assert back is not None and back.percent == percent and back.validity_ms == validity
    assert back.seq == pytest.approx(round(seq, 3), abs=1e-3)


# ------------------------------------------------------------------ the client's throttle
def test_throttle_sheds_the_asked_share_until_the_value_expires_and_ignores_stale_values():
    t, s = LossThrottle(), ("192.0.2.2", 5060)
    t.update(s, Feedback(40, 200, 5.0), now=10.0)
    rng = np.random.default_rng(7)
    shed = sum(t.shed(s, 10.1, float(rng.random())) for _ in range(20000))
    assert abs(shed / 20000 - 0.40) < 5 * np.sqrt(0.4 * 0.6 / 20000)  # binomial, 5 sigma
    assert t.shed_count == shed
    t.update(s, Feedback(90, 200, 4.0), now=10.1)  # an older value (reordered): ignored
    assert t.percent(s, 10.15) == 40
    assert t.percent(s, 10.2) == 0  # 200 ms after the value arrived
    t.update(s, Feedback(50, 500, 6.0), now=11.0)
    t.update(s, Feedback(50, 0, 7.0), now=11.1)  # validity 0: the server left overload
    assert t.percent(s, 11.1) == 0 and not t.shed(s, 11.1, 0.0)
    assert t.percent(("192.0.2.3", 5060), 11.1) == 0  # per server
    with pytest.raises(ParameterError):
        t.shed(s, 11.2, 1.0)


# ------------------------------------------------------------------ the server's estimate
def _offered(rate: float, *, cap: float = 100.0, seconds: float = 6.0, clients_listen: bool = True, seed: int = 1):
    """Clients offering ``rate`` new calls/s (virtual time) to a server admitting ``cap``/s."""
    oc = OverloadControl(max_rate=cap, max_lag=None, max_queue_delay=None, adaptive=False)
    throttle, rng = LossThrottle(), np.random.default_rng(seed)
    rows = []
    for k in range(int(rate * seconds)):
        now = k / rate
        if clients_listen and throttle.shed("server", now, float(rng.random())):
            rows.append((now, "shed"))
            continue
        r = oc.admit(now)
        rows.append((now, "ok" if r is None else str(r.status)))
        percent, validity = oc.feedback(now)
        throttle.update("server", Feedback(percent, validity, now), now)
    last = [what for t, what in rows if t >= seconds - 2.0]
    return {k: last.count(k) / 2.0 for k in ("ok", "503", "shed")}


@pytest.mark.parametrize("rate", [400.0, 1000.0])
def test_clients_that_listen_shed_the_excess_and_the_server_keeps_serving_its_capacity(rate):
    deaf = _offered(rate, clients_listen=False)
    listening = _offered(rate)
    assert deaf["ok"] == pytest.approx(100.0, abs=5) and deaf["503"] == pytest.approx(rate - 100.0, rel=0.05)
    # the excess is shed at the clients: the server refuses a few percent of what it did, goodput holds
    assert listening["ok"] >= 90.0
    assert listening["503"] <= 0.1 * deaf["503"]
    assert listening["shed"] >= 0.85 * (rate - 100.0)


def test_feedback_is_zero_below_capacity_and_falls_back_when_the_overload_ends():
    oc = OverloadControl(max_rate=100.0, max_lag=None, max_queue_delay=None, adaptive=False)
    for k in range(300):  # 3 s at 100/s: nothing refused
        oc.admit(k / 100.0)
    assert oc.feedback(3.0) == (0, 0)
    for k in range(400):  # 1 s at 400/s: refusals
        oc.admit(3.0 + k / 400.0)
    p, validity = oc.feedback(4.0)
    assert 50 <= p <= oc.max_feedback_percent and validity == DEFAULT_VALIDITY_MS
    for k in range(50):  # then 1 s at 50/s: below capacity, nothing refused
        oc.admit(4.0 + k / 50.0)
    assert oc.feedback(5.0)[0] == pytest.approx(p - oc.feedback_decay, abs=3)  # 50 points a second
    for k in range(50):
        oc.admit(5.0 + k / 50.0)
    assert oc.feedback(6.0) == (0, 0)
    with pytest.raises(ParameterError):
        OverloadControl(max_feedback_percent=101)
    with pytest.raises(ParameterError):
        OverloadControl(feedback_decay=0)


# ------------------------------------------------------------------ the UA on both sides (fake clock)
def test_ua_client_asks_sheds_new_calls_locally_and_never_in_dialog_requests():
    server = make_ua(B_ADDR, "bob", 2)
    oc = OverloadControl(max_rate=1.0, burst=1, max_lag=None, max_queue_delay=None, adaptive=False)
    server.admission = lambda request, now: oc.admit(now)
    server.via_feedback = lambda via: with_feedback(via, percent=100, validity_ms=1000, seq=1.0)
    client = make_ua(A_ADDR, "alice", 1, overload_feedback=True)

    def on_event(ua, ev, now):
        if ua is server and isinstance(ev, IncomingCall):
            ua.answer(ev.call, 200, now=now)

    net = Net(client, server, on_event=on_event)
    first = client.invite(f"sip:bob@{B_ADDR[0]}", now=0.0)
    net.pump()
    invite = parse_message(client.sent[-1][0])
    assert str(invite.headers.get("Via")).endswith(request_params)
    net.run(1.0)
    assert first.state.name == "ESTABLISHED"
    ok = [parse_message(d) for d, _ in server.sent if d.startswith(b"SIP/2.0 200")]
    assert ok and "oc=100" in ok[0].headers.get("Via")  # feedback in the client's own Via
    assert client.overload_throttle.percent(B_ADDR, 1.0) == 100
    n_sent = len(client.sent)
    second = client.invite(f"sip:bob@{B_ADDR[0]}", now=1.0)  # 100 %: shed before sending
    net.drain()
    failed = [ev for _, ev in net.events[A_ADDR] if isinstance(ev, CallFailed) and ev.call is second]
    assert failed and failed[0].status == 503 and "shed by us" in failed[0].reason and "RFC 7339" in failed[0].reason
    assert len(client.sent) == n_sent and second.state.name == "FAILED"
    client.bye(first, now=1.0)  # an in-dialog request: never shed
    net.run(2.0)
    assert first.state.name == "ENDED"
    # a client that does not ask gets its Via back as it was
    plain = make_ua(("10.0.0.3", 5060), "carol", 3)
    net2 = Net(plain, make_ua(B_ADDR, "bob", 4))
    net2.nodes[B_ADDR].via_feedback = server.via_feedback
    plain.invite(f"sip:bob@{B_ADDR[0]}", now=0.0)
    net2.run(1.0)
    assert all(b";oc" not in d for d, _ in net2.nodes[B_ADDR].sent)


# ------------------------------------------------------------------ the agent's stateless refusals
def test_c_drain_hands_back_an_invite_whose_top_via_asks_for_feedback():
    c = _c()
    server, peer = _udp_pair()
    try:
        asking = SIPP_INVITE.replace(b";branch=", b";oc;oc-algo=\"loss\";branch=", 1)
        not_top = asking.replace(b"Via: ", b"Via: SIP/2.0/UDP p;branch=z9hG4bKa, ", 1)  # oc in the second hop only
        quoted = SIPP_INVITE.replace(b";branch=", b';oc;oc-algo="A,loss";branch=', 1)  # a comma inside quotes
        in_quotes = SIPP_INVITE.replace(b";branch=", b';x="a, b;oc";branch=', 1)  # ";oc" inside a quoted value
        sent = (asking, SIPP_INVITE, asking.replace(b";oc;", b";oc-algo=x;"), not_top, quoted, in_quotes)
        for d in sent:
            peer.sendto(d, server.getsockname())
        select.select([server], [], [], 2.0)
        others, got, *_ = c.drain(server.fileno(), 64, 4000, lambda cid: (status_line(503, "Service Unavailable"), 1, b"ol1"))
        assert got == len(sent) and [d for d, _ in others] == [asking, quoted]  # only the top hop's oc counts
    finally:
        server.close()
        peer.close()


def test_agent_refusals_and_answers_carry_feedback_for_clients_that_ask():
    from voicelab.agent import Agent

    async def main():
        agent = Agent(mode="signalling", codecs=["pcmu"], overload=OverloadControl(
            max_rate=5.0, burst=1, max_lag=None, max_queue_delay=None, adaptive=False))
        await agent.start()
        loop = asyncio.get_running_loop()
        got: list[bytes] = []

        class P(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.append(data)

        tr, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
        me = tr.get_extra_info("sockname")

        def invite(k: int, asks: bool) -> bytes:
            d = SIPP_INVITE.replace(b"7-4242@", b"%d-4242@" % k).replace(b"-4242-7-0", b"-4242-%d-0" % k).replace(
                b"127.0.0.1:5061", b"127.0.0.1:%d" % me[1])
            return d.replace(b";branch=", b";oc;branch=", 1) if asks else d

        try:
            for burst in range(2):  # two bursts 0.3 s apart: the second is answered with the first's estimate
                for k in range(20):
                    tr.sendto(invite(100 * burst + k, asks=k % 2 == 0), agent.address)
                await asyncio.sleep(0.3)
            await asyncio.sleep(0.5)
        finally:
            tr.close()
            await agent.close()
        return got

    got = asyncio.run(main())
    vias = {}
    for d in got:
        m = parse_message(d)
        if m.cseq.method == "INVITE" and m.status_code >= 200:
            vias[m.call_id] = (m.status_code, m.headers.get("Via"))
    assert len(vias) == 40
    for cid, (status, via) in vias.items():
        k = int(cid.split("-")[0]) % 100
        if k % 2:  # did not ask: the Via as sent
            assert ";oc" not in via, via
        else:
            fb = parse_feedback(via)
            assert fb is not None, via
            if int(cid.split("-")[0]) >= 100 and status == 503:  # the second burst: in overload
                assert 50 <= fb.percent <= 95 and fb.validity_ms == DEFAULT_VALIDITY_MS, via
    assert any(s == 503 for s, _ in vias.values()) and any(s == 200 for s, _ in vias.values())
    assert re.search(r"oc=(\d+)", next(v for c, (s, v) in vias.items() if c.startswith("0-")))


def test_the_modules_examples_run():
    import doctest

    import voicelab.sip.occ

    assert doctest.testmod(voicelab.sip.occ).failed == 0
