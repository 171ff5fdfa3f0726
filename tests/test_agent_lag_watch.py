"""The agent's event-loop lag watcher: on the media pacer's grid, /proc read only when needed.

Virtual clock (:func:`voicelab.net.vclock.run_virtual`) with the agent's real UDP SIP
socket: no sleeps, exact times.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicelab.agent import Agent, next_lag_due
from voicelab.errors import ParameterError
from voicelab.net.vclock import run_virtual
from voicelab.rtp.pacer import MediaPacer, pacer_for
from voicelab.sip.overload import OverloadControl


class _Loop:
    def time(self):
        return 0.0


def _pacer(tick_s, early):
    return MediaPacer(_Loop(), tick_s=tick_s, early=early)  # type: ignore[arg-type]


def test_next_lag_due_keeps_the_grid_and_the_interval():
    p = _pacer(0.020, 0.0005)
    due = next_lag_due(1.0003, 1.0003, 0.020, p)  # first sample: an interval on, up to the grid, early before it
    assert due == pytest.approx(1.0395)
    # woken late (as timers are): the next one is still interval after the previous due, not after now
    assert next_lag_due(due, due + 0.0009, 0.020, p) == pytest.approx(1.0595)
    # after a 100 ms stall: half an interval ahead at least, rounded up to the grid (no backlog of samples)
    assert next_lag_due(due, due + 0.1, 0.020, p) == pytest.approx(1.1595)
    # no grid (virtual clock, or no pacer): plain interval
    assert next_lag_due(2.0, 2.001, 0.020, _pacer(0.0, 0.0)) == pytest.approx(2.02)
    assert next_lag_due(2.0, 2.001, 0.020, None) == pytest.approx(2.02)


@given(prev=st.floats(0, 1e4), behind=st.floats(0, 1.0), interval=st.sampled_from([0.005, 0.02, 0.05]),
       tick=st.sampled_from([0.0, 0.001, 0.004, 0.02]))  # fmt: skip
def test_next_lag_due_is_ahead_of_now_and_on_the_grid(prev, behind, interval, tick):
    p = _pacer(tick, 0.0005 if tick else 0.0)
    now = prev + behind
    due = next_lag_due(prev, now, interval, p)
    assert due >= now + interval / 2 - 1e-9 and due >= prev + interval - 1e-9
    if tick:
        k = (due + p.early) / tick
        assert abs(k - round(k)) < 1e-6


def test_lag_samples_ride_the_pacer_tick_and_skip_proc_while_idle():
    async def run():
        loop = asyncio.get_running_loop()
        pacer = pacer_for(loop)
        pacer.tick_s = 0.020  # as `agent serve --tick-ms 20`
        oc = OverloadControl(max_lag=0.25)
        seen = []
        observe = oc.observe_lag
        oc.observe_lag = lambda lag, now: (seen.append(now), observe(lag, now))[1]  # type: ignore[method-assign]
        await asyncio.sleep(0.0073)  # the agent starts off the grid
        async with Agent(mode="signalling", codecs=["pcmu"], overload=oc, lag_interval=0.02) as agent:
            await asyncio.sleep(1.0)
            idle_skips = agent.backlog_reads_skipped
            # SIP traffic in a window: that window's backlog is read from /proc, not skipped
            tr = agent.sip.transport
            tr.stats.messages_received += 1  # as if a datagram had been read
            before = agent.backlog_reads_skipped
            await asyncio.sleep(0.061)
            after = agent.backlog_reads_skipped
        return seen, idle_skips, before, after

    seen, idle_skips, before, after = run_virtual(run())
    assert len(seen) >= 45  # every 20 ms for a second
    assert all(abs(t / 0.020 - round(t / 0.020)) < 1e-6 for t in seen)  # on the grid (early = 0 on a virtual clock)
    assert all(b - a == pytest.approx(0.020) for a, b in zip(seen, seen[1:]))
    assert idle_skips >= 15  # one backlog sample in three, all skipped while nothing arrived
    assert after == before  # the window with a message read /proc


def test_overload_policy_times_never_go_backwards_across_the_agents_stamps():
    """The lag watcher resumes after its timer ran (the timer's time is stale by then) and
    datagrams are stamped at arrival: the agent hands the overload policy one ordered clock
    (the policy refuses a time before one it was given, which crashed the watcher and made
    ``Agent.close`` raise in ``bench_sip_shed.py``)."""
    agent = Agent(mode="signalling", codecs=["pcmu"], overload=OverloadControl(max_lag=0.25), host="127.0.0.1", port=0)
    assert agent._oc_time(10.003) == 10.003
    assert agent._oc_time(10.001) == 10.003  # a stale stamp is moved up, not refused
    agent.overload.observe_lag(0.001, agent._oc_time(10.002))
    agent.overload.admit(agent._oc_time(10.004), active_calls=0, queue_depth=0, queue_delay=0.0)
    with pytest.raises(ParameterError, match="backwards"):  # the policy itself stays strict
        agent.overload.observe_lag(0.0, 10.0)
