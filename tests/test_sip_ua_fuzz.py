"""Hypothesis: random and mutated bytes into a UserAgent never raise, never leave a timer
in the past, and never leave timers running forever."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicelab.sip.ua import IncomingCall, MessageRejected, UserAgent
from tests.test_sip_ua import A_ADDR, B_ADDR, Net, auto_answer, make_ua

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_timers(ua: UserAgent, now: float) -> None:
    t = ua.next_timer()
    assert t is None or t > now, f"timer at {t} is not after now={now}"


def settle(ua: UserAgent, now: float, *, horizon: float = 400.0) -> None:
    """Run every timer up to ``now + horizon``; they must all finish."""
    end = now + horizon
    for _ in range(2000):
        t = ua.next_timer()
        if t is None:
            return
        assert t > now
        assert t <= end, f"a timer runs past {horizon} s: {t}"
        now = t
        ua.handle_timer(now)
        ua.datagrams_to_send()
        ua.drain_events()
        check_timers(ua, now)
    raise AssertionError("timers never settled")


def scenario(seed: int):
    """An established call between A and B, and the bytes each sent (the corpus)."""
    a = make_ua(A_ADDR, "alice", seed)
    b = make_ua(B_ADDR, "bob", seed + 1)
    sent: dict = {A_ADDR: [], B_ADDR: []}
    net = Net(a, b, on_event=auto_answer())
    original_pump = net.pump

    def pump():
        for addr, node in net.nodes.items():
            out = node.datagrams_to_send()
            sent[addr].extend(d for d, _ in out)
            node._outbox = list(out) + node._outbox  # put them back for the real pump
        original_pump()

    net.pump = pump
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    net.run(1.0)
    a.options("sip:bob@10.0.0.2", now=net.now)
    a.info(call, now=net.now, body=b"x")
    net.run(net.now + 1.0)
    return a, b, net, call, sent


def _corpus() -> list[bytes]:
    a, b, net, call, sent = scenario(7)
    a.bye(call, now=net.now)  # BYE and its 200 too
    net.run(net.now + 1.0)
    return sent[A_ADDR] + sent[B_ADDR]


CORPUS = _corpus()


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "dup_line", "drop_line", "digit", "truncate"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 20))]
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"\r\n", b";", b",", b" ", b"\x00", b"<", b"Via: x\r\n", b"\r\n\r\n", b"999999999999"]))
        elif op in ("dup_line", "drop_line"):
            lines = bytes(data).split(b"\r\n")
            j = draw(st.integers(0, len(lines) - 1))
            if op == "dup_line":
                lines.insert(j, lines[j])
            else:
                del lines[j]
            data = bytearray(b"\r\n".join(lines))
        elif op == "digit" and chr(data[i]).isdigit():
            data[i] = ord(draw(st.sampled_from("0123456789")))
        elif op == "truncate":
            del data[i:]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=700), st.sampled_from([A_ADDR, ("10.0.0.5", 5062), ("not-an-ip", 1)]))
def test_random_bytes_never_raise(data, src):
    ua = make_ua(B_ADDR, "bob", 3)
    ua.receive(data, src, 1.0)
    check_timers(ua, 1.0)
    for ev in ua.drain_events():
        assert isinstance(ev, (MessageRejected, IncomingCall)) or type(ev).__name__.endswith(("Answered", "Result"))
    settle(ua, 1.0)


@FUZZ
@given(st.lists(mutated(), min_size=1, max_size=4), st.booleans())
def test_mutated_messages_into_established_call(messages, to_caller):
    a, b, net, call, _ = scenario(7)
    ua = a if to_caller else b
    src = B_ADDR if to_caller else A_ADDR
    now = net.now
    for data in messages:
        now += 0.01
        ua.receive(data, src, now)
        check_timers(ua, now)
        for ev in ua.drain_events():
            if isinstance(ev, IncomingCall):  # a mutated INVITE that is still valid: answer it
                ua.answer(ev.call, 486, now=now)
                check_timers(ua, now)
        for data_out, addr in ua.datagrams_to_send():
            assert isinstance(data_out, bytes) and len(addr) == 2
    settle(ua, now)


@FUZZ
@given(st.lists(mutated(), min_size=1, max_size=3))
def test_mutated_messages_into_pending_invite(messages):
    a = make_ua(A_ADDR, "alice", 7)  # same seed as the corpus: same tags, branch and Call-ID
    a.invite("sip:bob@10.0.0.2", now=0.0)
    now = 0.0
    for data in messages:
        now += 0.005
        a.receive(data, B_ADDR, now)
        check_timers(a, now)
        a.drain_events()
    settle(a, now)
