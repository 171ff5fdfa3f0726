"""The transaction table's work per message does not grow with the live transactions.

A UDP agent keeps every finished transaction for up to 64*T1 (Timers J and L: 32 s), so at
a few hundred calls/s thousands are alive. The table visits only the transactions that ran
(a ready list) and finds deadlines in a heap: these tests count the visits
(:attr:`TransactionTable.visits`), not time, and check the heap against a full scan.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.sip.transaction import (
    RequestReceived,
    TransactionTable,
    UnmatchedRequest,
    build_response,
)

from .test_sip_transaction import kinds, make_request, respond


def _table_with_live(n: int) -> tuple[TransactionTable, float]:
    """``n`` finished OPTIONS server transactions (Completed, Timer J armed) and ``n`` INVITEs in Calling."""
    table = TransactionTable()
    now = 0.0
    for i in range(n):
        req = make_request("OPTIONS", branch=f"z9hG4bKsrv{i}", call_id=f"s{i}")
        tx, _ = table.open_server(req, now)
        table.send_response(tx.key, build_response(req, 200, "OK", to_tag="t"), now)
        table.open_client(make_request("INVITE", branch=f"z9hG4bKcli{i}", call_id=f"c{i}"), now)
        now += 1e-4
    table.messages_to_send()
    return table, now


def _one_message_round(table: TransactionTable, now: float, i: int) -> int:
    """The work a UA does for one new request: receive, open, answer, flush, re-arm, timers."""
    before = table.visits
    req = make_request("OPTIONS", branch=f"z9hG4bKnew{i}", call_id=f"n{i}")
    ev = table.receive(req, now)
    assert isinstance(ev[0], UnmatchedRequest)
    tx, ev = table.open_server(req, now)
    assert isinstance(ev[0], RequestReceived)
    table.send_response(tx.key, build_response(req, 200, "OK", to_tag="x"), now)
    assert kinds(table.messages_to_send()) == [(200, False)]
    assert table.next_timer() is not None
    table.handle_timer(now)  # nothing due yet
    return table.visits - before


def test_work_per_message_does_not_grow_with_live_transactions():
    work = {}
    for n in (10, 3000):
        table, now = _table_with_live(n)
        assert len(table) == 2 * n
        work[n] = [_one_message_round(table, now + 0.01 * k, k) for k in range(5)]
    assert work[10] == work[3000]
    assert max(work[3000]) <= 6  # a handful of visits, whatever the table holds


def test_firing_one_due_timer_visits_only_that_transaction():
    visits = {}
    for n in (10, 3000):
        table, now = _table_with_live(n)
        # every INVITE client's Timer A is due at 0.5 s after its start: move a quiet
        # table past the first retransmission round, then measure a round where one fires
        t = 0.5
        table.handle_timer(t + n * 1e-4)
        table.messages_to_send()
        lone = make_request("OPTIONS", branch="z9hG4bKlone", call_id="lone")
        start = t + n * 1e-4 + 0.01
        table.open_client(lone, start)
        table.messages_to_send()
        due = start + 0.5  # the lone OPTIONS's Timer E; every INVITE's next Timer A is at >= 1.5 s
        assert table.next_timer() == due
        before = table.visits
        table.handle_timer(due)
        assert kinds(table.messages_to_send()) == [("OPTIONS", True)]
        visits[n] = table.visits - before
    assert visits[10] == visits[3000] <= 3


def test_a_transaction_driven_directly_is_still_collected():
    table = TransactionTable()
    req = make_request("OPTIONS")
    tx, _ = table.open_server(req, 0.0)
    tx.send_response(build_response(req, 200, "OK", to_tag="q"), 0.1)  # not through the table
    assert kinds(table.messages_to_send()) == [(200, False)]
    assert table.next_timer() == 0.1 + 32.0  # Timer J = 64*T1 on UDP
    table.handle_timer(32.1)
    assert len(table) == 0 and table.next_timer() is None


_step = st.one_of(
    st.tuples(st.just("open"), st.sampled_from(["INVITE", "OPTIONS"])),
    st.tuples(st.just("respond"), st.integers(0, 40), st.sampled_from([100, 180, 200, 486])),
    st.tuples(st.just("serve"), st.sampled_from([200, 404])),
    st.tuples(st.just("wait"), st.floats(0.0, 40.0)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_step, max_size=40))
def test_heap_agrees_with_a_full_scan(steps):
    table = TransactionTable()
    now, n, opened = 0.0, 0, []
    for step in steps:
        if step[0] == "open":
            req = make_request(step[1], branch=f"z9hG4bKc{n}", call_id=f"c{n}")
            opened.append(req)
            table.open_client(req, now)
        elif step[0] == "respond" and opened:
            req = opened[step[1] % len(opened)]
            table.receive(respond(req, step[2]), now)
        elif step[0] == "serve":
            req = make_request("OPTIONS", branch=f"z9hG4bKs{n}", call_id=f"s{n}")
            tx, _ = table.open_server(req, now)
            table.send_response(tx.key, build_response(req, step[1], "R", to_tag="t"), now)
        elif step[0] == "wait":
            now += step[1]
            table.handle_timer(now)
        n += 1
        table.messages_to_send()
        live = table.transactions()
        assert not any(tx.terminated for tx in live)
        scan = [t for t in (tx.next_timer() for tx in live) if t is not None]
        assert table.next_timer() == (min(scan) if scan else None)
        assert all(t > now for t in scan)  # nothing due was left unfired
