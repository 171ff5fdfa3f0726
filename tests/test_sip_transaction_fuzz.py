"""Random input sequences into the transaction machines and the table (Hypothesis).

Rules: whatever the order of receive / timer / send / transport-error inputs, a
transaction raises nothing but voicelab protocol errors, leaves its state unchanged
when it raises, never arms a timer at or before ``now``, and everything it sends
serializes to bytes that parse back.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from voicelab.errors import ProtocolError
from voicelab.sip import Request, Response, parse_message
from voicelab.sip.timers import TimerConfig
from voicelab.sip.transaction import (
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    State,
    TransactionTable,
    TransactionTerminated,
    build_ack,
    build_cancel,
    build_response,
)

BRANCH = "z9hG4bKfuzz0001"


def request(method: str, *, branch: str | None = BRANCH, cseq: int = 1, to_tag: str | None = None, host="c.example.com"):
    via = f"SIP/2.0/UDP {host}:5060" + (f";branch={branch}" if branch else "")
    text = (
        f"{method} sip:bob@example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=f1\r\n"
        f"To: <sip:bob@example.com>{';tag=' + to_tag if to_tag else ''}\r\n"
        f"Call-ID: fuzz@c\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
    return parse_message(text.encode())


KINDS = {
    "ict": (InviteClientTransaction, "INVITE"),
    "nict": (NonInviteClientTransaction, "OPTIONS"),
    "ist": (InviteServerTransaction, "INVITE"),
    "nist": (NonInviteServerTransaction, "BYE"),
}

codes = st.sampled_from([100, 180, 183, 199, 200, 202, 299, 301, 404, 486, 487, 500, 603, 699])


class TransactionMachine(RuleBasedStateMachine):
    """One transaction of a random kind, fed random inputs on a monotonic fake clock."""

    @initialize(
        kind=st.sampled_from(sorted(KINDS)),
        reliable=st.booleans(),
        t1=st.sampled_from([0.5, 0.1, 2.0]),
        trying=st.sampled_from([0.2, 0.0, None]),
    )
    def setup(self, kind, reliable, t1, trying):
        cls, method = KINDS[kind]
        self.req = request(method)
        self.client = kind in ("ict", "nict")
        extra = {"trying_delay": trying} if cls is InviteServerTransaction else {}
        self.tx = cls(self.req, reliable=reliable, timers=TimerConfig(t1=t1, t2=max(4.0, t1)), **extra)
        self.now = 0.0
        self.terminated_events = 0

    def _call(self, fn, *args):
        before = self.tx.state
        try:
            events = fn(*args, self.now)
        except ProtocolError:
            assert self.tx.state is before  # an error changes nothing
            assert not self.tx.messages_to_send()
            return
        self.terminated_events += sum(isinstance(e, TransactionTerminated) for e in events)
        nt = self.tx.next_timer()
        assert nt is None or nt > self.now, f"timer at {nt} is not after now={self.now}"
        for out in self.tx.messages_to_send():
            back = parse_message(bytes(out.message))
            assert type(back) is type(out.message)

    @rule(dt=st.floats(min_value=0.0, max_value=40.0, allow_nan=False))
    def advance(self, dt):
        self.now += dt

    @rule()
    def fire_next_timer(self):
        nt = self.tx.next_timer()
        if nt is not None:
            self.now = max(self.now, nt)
        self._call(self.tx.handle_timer)

    @rule()
    def start(self):
        if self.client:
            self._call(self.tx.start)

    @rule(code=codes, which=st.sampled_from(["ours", "ours", "ours", "wrong_branch", "wrong_cseq", "cancel", "no_branch"]))
    def receive_response(self, code, which):
        src = {
            "ours": self.req,
            "wrong_branch": request(self.req.method, branch="z9hG4bKother"),
            "wrong_cseq": request(self.req.method, cseq=77),
            "cancel": parse_message(bytes(build_cancel(self.req))) if self.req.method == "INVITE" else self.req,
            "no_branch": request(self.req.method, branch=None),
        }[which]
        resp = parse_message(bytes(build_response(src, code, "R", to_tag=None if code == 100 else "t1")))
        self._call(self.tx.receive, resp)

    @rule(which=st.sampled_from(["same", "same", "ack", "ack_other_tag", "cancel", "other_branch", "bad_cseq", "bye"]))
    def receive_request(self, which):
        if which == "same":
            msg = parse_message(bytes(self.req))
        elif which == "ack":
            msg = request("ACK", to_tag="t1")
        elif which == "ack_other_tag":
            msg = request("ACK", to_tag="zz")
        elif which == "cancel":
            msg = parse_message(bytes(build_cancel(self.req)))
        elif which == "other_branch":
            msg = request(self.req.method, branch="z9hG4bKother")
        elif which == "bad_cseq":
            msg = request(self.req.method, cseq=99)
        else:
            msg = request("BYE")
        self._call(self.tx.receive, msg)

    @rule(code=codes, matching=st.booleans())
    def tu_sends(self, code, matching):
        if self.client:
            return
        src = self.req if matching else request(self.req.method, branch="z9hG4bKelse")
        self._call(self.tx.send_response, build_response(src, code, "R", to_tag=None if code == 100 else "t1"))

    @rule()
    def transport_error(self):
        self._call(self.tx.transport_error)

    @invariant()
    def consistent(self):
        if not hasattr(self, "tx"):
            return
        assert self.tx.state in type(self.tx).STATES
        if self.tx.state is State.TERMINATED:
            assert self.tx.next_timer() is None and self.terminated_events == 1
        else:
            assert self.terminated_events == 0
            for name in self.tx.armed_timers:
                assert name in type(self.tx).STATE_TIMERS.get(self.tx.state, ())


TransactionMachine.TestCase.settings = settings(
    max_examples=120, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_transaction_machine = TransactionMachine.TestCase


# ---------------------------------------------------------------------------------------
# The table fed mangled wire messages
# ---------------------------------------------------------------------------------------

_SEEDS_FOR_TABLE = [
    bytes(request("INVITE")),
    bytes(request("ACK", to_tag="t1")),
    bytes(request("OPTIONS", branch="legacy-1")),
    bytes(build_response(request("INVITE"), 486, "Busy", to_tag="t1")),
    bytes(build_response(request("OPTIONS", branch="z9hG4bKopt"), 200, "OK", to_tag="t1")),
    bytes(build_ack(request("INVITE"), build_response(request("INVITE"), 486, "Busy", to_tag="t1"))),
]


@st.composite
def mangled(draw):
    data = bytearray(draw(st.sampled_from(_SEEDS_FOR_TABLE)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "delete_line", "dup_line"]))
        lines = bytes(data).split(b"\r\n")
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "delete_line" and len(lines) > 2:
            del lines[draw(st.integers(1, len(lines) - 3))]
            data = bytearray(b"\r\n".join(lines))
        elif op == "dup_line" and len(lines) > 2:
            i = draw(st.integers(1, len(lines) - 3))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(mangled(), st.floats(0, 5, allow_nan=False)), min_size=1, max_size=8))
def test_table_takes_mangled_messages_without_crashing(items):
    table = TransactionTable()
    table.open_client(request("OPTIONS", branch="z9hG4bKopt"), 0.0)
    table.open_server(request("INVITE"), 0.0)
    table.send_response(
        next(tx.key for tx in table.transactions() if tx.key.role == "server"),
        build_response(request("INVITE"), 486, "Busy", to_tag="t1"),
        0.0,
    )
    now = 0.0
    for data, dt in items:
        now += dt
        try:
            msg = parse_message(data, validate=False)
            table.receive(msg, now)
        except ProtocolError:
            pass
        table.handle_timer(now)
        nt = table.next_timer()
        assert nt is None or nt > now
        for out in table.messages_to_send():
            assert isinstance(parse_message(bytes(out.message)), (Request, Response))
