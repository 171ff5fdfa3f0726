"""The media pacer: one loop timer services every stream's jobs (fake and virtual clocks, no sleeps)."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.errors import ParameterError
from voicelab.net.vclock import run_virtual
from voicelab.rtp.live import LiveAudioStream
from voicelab.rtp.pacer import MediaPacer, pacer_for

FRAME = 0.020


class _Handle:
    def __init__(self, when, fn, args):
        self.when, self.fn, self.args, self.cancelled = when, fn, args, False

    def cancel(self):
        self.cancelled = True


class _FakeLoop:
    """A loop clock moved by hand; each fired timer is one loop iteration."""

    def __init__(self):
        self.now = 0.0
        self._timers = []
        self._seq = itertools.count()
        self.errors = []
        self.iterations = []  # loop time of every timer that fired

    def time(self):
        return self.now

    def call_at(self, when, fn, *args):
        h = _Handle(when, fn, args)
        heapq.heappush(self._timers, (when, next(self._seq), h))
        return h

    def call_exception_handler(self, context):
        self.errors.append(context)

    def pending(self):
        return sum(not h.cancelled for _, _, h in self._timers)

    def run_until(self, t, *, stall_to=None):
        """Fire timers due up to ``t`` in order; with ``stall_to`` the loop was blocked until
        then, so every timer due before it fires late, at ``stall_to``."""
        if stall_to is not None:
            self.now = max(self.now, stall_to)
        while self._timers and self._timers[0][0] <= t:
            when, _, h = heapq.heappop(self._timers)
            if h.cancelled:
                continue
            self.now = max(self.now, when)
            self.iterations.append(self.now)
            h.fn(*h.args)
        self.now = max(self.now, t)


def _periodic(pacer, log, name, start, period=FRAME):
    """A stream-like job: runs every ``period`` from ``start`` and re-schedules itself."""
    state = {"job": None}

    def slot(when):
        log.append((name, when, pacer.loop.time()))
        state["job"] = pacer.schedule(when + period, slot, when + period)

    state["job"] = pacer.schedule(start, slot, start)
    return state


def test_several_streams_due_together_are_serviced_by_one_timer_per_tick():
    loop = _FakeLoop()
    pacer = MediaPacer(loop, tick_s=FRAME, early=0.0005)
    log = []
    # three streams whose clocks start at different moments, aligned up to the 20 ms grid
    for name, t in (("a", 0.0031), ("b", 0.0117), ("c", 0.0199)):
        _periodic(pacer, log, name, pacer.align(t))
    loop.run_until(0.2)
    assert loop.pending() == 1  # one loop timer for all three streams
    assert pacer.wakeups == len(loop.iterations) == 10 and pacer.jobs_run == 30
    for k in range(10):
        tick = [entry for entry in log if abs(entry[1] - 0.02 * (k + 1)) < 1e-9]
        assert sorted(n for n, _, _ in tick) == ["a", "b", "c"]
        assert all(0.0 <= when - ran <= 0.0005 + 1e-9 for _, when, ran in tick)  # never before when - early


def test_align_rounds_up_to_the_grid_and_a_zero_grid_keeps_times():
    loop = _FakeLoop()
    p = MediaPacer(loop, tick_s=0.001, early=0.0)
    assert p.align(0.0123) == pytest.approx(0.013)
    assert p.align(0.013) == pytest.approx(0.013)
    assert p.align(1234.5678901) == pytest.approx(1234.568) and p.align(1234.5678901) >= 1234.5678901 - 1e-9
    p.tick_s = 0
    assert p.align(0.0123) == 0.0123
    with pytest.raises(ParameterError):
        p.tick_s = -1.0


def test_a_job_added_mid_tick_runs_next_iteration_and_one_removed_mid_tick_never_runs():
    loop = _FakeLoop()
    pacer = MediaPacer(loop, tick_s=0.0, early=0.0)
    ran = []
    late_job = {}

    def a(_):
        ran.append(("a", loop.time()))
        late_job["x"] = pacer.schedule(loop.time(), lambda _: ran.append(("added", loop.time())))  # due now
        victim.cancel()  # a stream closed by another stream's callback, in the same tick

    pacer.schedule(0.02, a)
    victim = pacer.schedule(0.02, lambda _: ran.append(("victim", loop.time())))
    pacer.schedule(0.02, lambda _: ran.append(("c", loop.time())))
    loop.run_until(0.02)
    assert ran == [("a", 0.02), ("c", 0.02), ("added", 0.02)]
    assert loop.iterations == [0.02, 0.02]  # the added job waited for the next iteration
    assert pacer.jobs_run == 3 and len(pacer) == 0 and loop.pending() == 0


def test_after_a_loop_stall_every_slot_runs_once_in_order_one_per_iteration():
    loop = _FakeLoop()
    pacer = MediaPacer(loop, tick_s=0.0, early=0.0005)
    log = []
    _periodic(pacer, log, "s", 0.02)
    loop.run_until(0.1)
    n_before = len(log)
    loop.run_until(0.2, stall_to=0.187)  # blocked for ~90 ms: slots 0.12 .. 0.18 are overdue
    whens = [w for _, w, _ in log]
    assert np.allclose(np.diff(whens), FRAME)  # no slot skipped, none twice
    assert whens[-1] == pytest.approx(0.2)
    late = log[n_before:]
    assert all(ran >= when - 0.0005 - 1e-9 for _, when, ran in log)  # nothing runs early
    # the overdue slots ran one per loop iteration (datagrams are read between them), as
    # separate per-stream timers did, not all inside one callback
    stalled = [ran for _, when, ran in late if when < 0.187]
    assert len(stalled) == 4 and loop.iterations.count(0.187) == 4


def test_an_error_in_one_job_is_reported_and_the_others_still_run():
    loop = _FakeLoop()
    pacer = MediaPacer(loop, tick_s=0.0, early=0.0)
    ran = []

    def boom(_):
        raise RuntimeError("stream exploded")

    pacer.schedule(0.02, boom)
    pacer.schedule(0.02, ran.append, "after")
    loop.run_until(0.05)
    assert ran == ["after"]
    assert len(loop.errors) == 1 and "stream exploded" in str(loop.errors[0]["exception"])


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(st.tuples(st.floats(0.0, 0.2), st.booleans()), min_size=1, max_size=40),
    stalls=st.lists(st.floats(0.0, 0.25), max_size=4),
    early=st.sampled_from([0.0, 0.0005]),
)
def test_every_job_not_cancelled_runs_once_in_deadline_order_never_early(ops, stalls, early):
    loop = _FakeLoop()
    pacer = MediaPacer(loop, tick_s=0.0, early=early)
    ran = []
    jobs = []
    for i, (when, cancel) in enumerate(ops):
        jobs.append((pacer.schedule(when, lambda arg: ran.append((arg, loop.time())), (when, i)), cancel, when, i))
    for job, cancel, _, _ in jobs:
        if cancel:
            job.cancel()
    for s in sorted(stalls):
        loop.run_until(s, stall_to=s)
    loop.run_until(1.0)
    expected = sorted((when, i) for _, cancel, when, i in jobs if not cancel)
    assert [arg for arg, _ in ran] == expected
    assert all(t >= when - early - 1e-9 for (when, _), t in ran)
    assert loop.pending() == 0


def test_pacer_for_gives_one_pacer_per_loop_and_virtual_loops_keep_exact_times():
    async def main():
        loop = asyncio.get_running_loop()
        p = pacer_for(loop)
        assert pacer_for(loop) is p
        return p.tick_s, p.early

    assert run_virtual(main()) == (0.0, 0.0)


# --------------------------------------------------------------- streams on one pacer


class _MemTransport(asyncio.DatagramTransport):
    def __init__(self, net, addr, protocol):
        super().__init__()
        self.net, self.addr, self.protocol, self._closing = net, addr, protocol, False

    def sendto(self, data, addr=None):
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + 0.005, self.net.deliver, bytes(data), self.addr, tuple(addr[:2]))

    def close(self):
        if not self._closing:
            self._closing = True
            self.net.pop(self.addr, None)
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self):
        return self._closing

    def get_extra_info(self, name, default=None):
        return {"sockname": self.addr}.get(name, default)


class _MemNet(dict):
    """Datagrams between in-memory endpoints, delivered 5 ms after they were sent."""

    port = 40000

    def deliver(self, data, src, dst):
        t = self.get(dst)
        if t is not None:
            t.protocol.datagram_received(data, src)

    async def create_datagram_endpoint(self, factory, local_addr=None):
        _MemNet.port += 2
        protocol = factory()
        t = self[("10.0.0.1", self.port)] = _MemTransport(self, ("10.0.0.1", self.port), protocol)
        protocol.connection_made(t)
        return t, protocol


def test_echo_streams_on_one_grid_share_the_pacer_ticks_and_echo_every_frame():
    x = 0.3 * np.sin(2 * np.pi * 300 * np.arange(8000) / 8000)  # 1 s

    async def main():
        loop = asyncio.get_running_loop()
        pacer = pacer_for(loop)
        pacer.tick_s = FRAME  # all playout clocks on one 20 ms grid
        net = _MemNet()
        pairs = []
        for i in range(4):
            a = await LiveAudioStream(net, codec="pcmu", seed=i).open()
            b = await LiveAudioStream(net, codec="pcmu", seed=100 + i, jitter_buffer="fixed:40").open()
            a.set_remote(b.local_address)
            b.set_remote(a.local_address)
            b.send_live("echo")
            pairs.append((a, b))
        t0 = loop.time()
        for i, (a, _) in enumerate(pairs):  # callers start 3.7 ms apart: different phases
            a.send(x, 8000, start_at=t0 + 0.0037 * i)
        await asyncio.gather(*(a.played_through(t0 + 1.2) for a, _ in pairs))
        w0, j0 = pacer.wakeups, pacer.jobs_run
        await asyncio.sleep(0.2)  # steady state: 4 echo slots + 4 caller slots per 20 ms
        batch = (pacer.jobs_run - j0) / (pacer.wakeups - w0)
        for a, b in pairs:
            await a.close()
            await b.close()
        return pairs, batch

    pairs, batch = run_virtual(main())
    assert batch >= 4.0  # the four echo streams' slots (at least) share each agent tick
    for a, b in pairs:
        slots = [t for t, _ in b._played]
        assert np.allclose(np.remainder(np.asarray(slots) / FRAME + 0.5, 1.0), 0.5)  # on the grid
        assert b.stats.outcomes.get("played", 0) >= 49 and b.stats.frames_sent >= 49
        assert max(abs(v) for v in b.stats.send_lateness_s) < 1e-9  # virtual clock: exactly on time
        sent, _ = a.sent_audio()
        echoed, _ = a.received_audio()
        assert np.max(np.abs(echoed)) > 0.2  # the echo came back (it is not silence)


def test_second_phases_run_after_every_first_phase_of_the_tick():
    loop = _FakeLoop()
    pacer = MediaPacer(loop, tick_s=0.0, early=0.0)
    order = []

    def job(name):
        order.append(name + "1")
        return lambda: order.append(name + "2")

    for name in "abc":
        pacer.schedule(0.02, job, name)
    pacer.schedule(0.04, job, "d")
    loop.run_until(0.05)
    assert order == ["a1", "b1", "c1", "a2", "b2", "c2", "d1", "d2"]
    assert pacer.wakeups == 2


def test_rtcp_reports_ride_the_playout_ticks_on_the_grid():
    """RTCP reports fall due on the pacer's grid and go in a tick's second phase: no wake-up of their own."""
    x = 0.3 * np.sin(2 * np.pi * 300 * np.arange(8000 * 12) / 8000)  # 12 s: a few reports each way

    async def main():
        loop = asyncio.get_running_loop()
        pacer = pacer_for(loop)
        pacer.tick_s = FRAME
        net = _MemNet()
        cap_a: list = []
        cap_b: list = []
        a = await LiveAudioStream(net, codec="pcmu", seed=1, capture=cap_a).open()
        b = await LiveAudioStream(net, codec="pcmu", seed=2, jitter_buffer="fixed:40", capture=cap_b).open()
        a.set_remote(b.local_address)
        b.set_remote(a.local_address)
        b.send_live("echo")
        a.send(x, 8000, start_at=pacer.align(loop.time()))
        await a.played_through(loop.time() + 10.0)
        sent = [c for s, cap in ((a, cap_a), (b, cap_b)) for c in cap if tuple(c[1]) == tuple(s.local_address)]
        await a.close()
        await b.close()
        return sent, pacer  # what they sent (not what arrived)

    sent, pacer = run_virtual(main())
    rtcp = [t for t, _src, _dst, data in sent if 200 <= data[1] <= 204]
    rtp_times = {round(t, 9) for t, _src, _dst, data in sent if not 200 <= data[1] <= 204}
    assert len(rtcp) >= 4
    # every report left on the grid, at an instant when media was sent too (the same tick)
    assert np.allclose(np.remainder(np.asarray(rtcp) / FRAME + 0.5, 1.0), 0.5)
    assert sum(round(t, 9) in rtp_times for t in rtcp) >= len(rtcp) - 2  # (the final BYEs need not)


class _ClockedSocket:
    """A socket whose ``sendto`` takes ``cost`` seconds of the fake loop's clock and logs when it started."""

    def __init__(self, loop, log, name, cost=1e-5):
        self.loop, self.log, self.name, self.cost = loop, log, name, cost

    def sendto(self, data, addr):
        self.log.append(("send", self.name, self.loop.now, int.from_bytes(data[2:4], "big")))
        self.loop.now += self.cost
        return len(data)


def _echo_stream_on_fake_loop(loop, pacer, log, i, *, track=True):
    """An echo stream wired to a fake loop and a clocked socket (the direct path of an accepted address)."""
    from voicelab.rtp.session import RtpSession

    s = LiveAudioStream(None, codec="pcmu", seed=i, remote_addr=("127.0.0.1", 40000 + 2 * i), track=track)
    s._loop, s.pacer = loop, pacer
    s.session = RtpSession(epoch_offset=2_208_988_800.0, **s.session_args)
    s.session.start(0.0)
    s._tx_sock = _ClockedSocket(loop, log, i)
    s._tx_sock_tried = True
    s._direct_addr = s.session.remote_addr
    counted = s.session.frame_sent

    def frame_sent(now, timestamp, octets):  # the bookkeeping of a send, logged
        log.append(("count", i, loop.now, now))
        counted(now, timestamp, octets)

    s.session.frame_sent = frame_sent
    s._live = "echo"
    s._play_start = 0.02
    s._arm_play()
    return s


def test_a_ticks_echo_sends_all_go_before_any_bookkeeping_each_stamped_with_its_own_send_time():
    loop = _FakeLoop()
    pacer = MediaPacer(loop, tick_s=0.0, early=0.0)
    log: list = []
    streams = [_echo_stream_on_fake_loop(loop, pacer, log, i) for i in range(5)]
    loop.run_until(0.02 + 4 * FRAME + 1e-9)  # 5 slots: the first has nothing to echo yet, then 4 sends each
    sends = [e for e in log if e[0] == "send"]
    assert len(sends) == 4 * 5 and pacer.wakeups == 5
    tick_of = lambda t: round((t - 0.02) / FRAME)  # noqa: E731
    for k in range(1, 5):  # within each tick: every send, then every count
        kinds = [e[0] for e in log if tick_of(e[2]) == k]
        assert kinds == ["send"] * 5 + ["count"] * 5, kinds
    for s in streams:
        mine = [e for e in sends if e[1] == streams.index(s)]
        send_at = [e[2] for e in mine]
        scheduled = [0.02 + k * FRAME for k in range(1, 5)]
        # the recorded send time is this packet's own (the clock moved 10 us per earlier send in the tick)
        assert s.stats.send_lateness_s == pytest.approx([a - b for a, b in zip(send_at, scheduled)], abs=1e-12)
        assert s.stats.send_lateness_s[0] == pytest.approx(1e-5 * streams.index(s), abs=1e-12)
        assert s.send_times == {e[3]: e[2] for e in mine}
        assert [e[3] for e in log if e[0] == "count" and e[1] == streams.index(s)] == send_at  # frame_sent(now=send time)
        assert s.session._last_send[0] == send_at[-1]  # the sender reports' RTP/NTP mapping: the last send's time
        assert s.stats.frames_sent == s.session.stats.packets_sent == 4
        assert s.first_sequence == mine[0][3]


def test_a_report_built_before_the_streams_second_phase_still_counts_the_send_of_its_tick():
    loop = _FakeLoop()
    pacer = MediaPacer(loop, tick_s=0.0, early=0.0)
    log: list = []
    s = _echo_stream_on_fake_loop(loop, pacer, log, 0)
    loop.run_until(0.02 + 1e-9)  # first slot: a frame kept for the next
    seen = []

    def report_first(_):  # a job due at the next slot, ahead of the playout's second phase
        return lambda: (s._rtcp(), seen.append((s.session.stats.packets_sent, s.session._last_send[0], s.stats.frames_sent)))

    s.session.next_timer = lambda: None  # (no report of its own is due: _rtcp re-arms nothing)
    pacer.schedule(0.04, report_first)
    # the report job was scheduled after the playout job: make it come first in the tick
    pacer._heap = sorted((w, -1 if j.callback is report_first else q, j) for w, q, j in pacer._heap)
    loop.run_until(0.04 + 1e-9)
    send_at = [e[2] for e in log if e[0] == "send"]
    assert len(send_at) == 1 and seen == [(1, send_at[0], 1)]
    assert s.stats.frames_sent == 1 and [e[0] for e in log] == ["send", "count"]


def test_an_echo_send_the_socket_refuses_is_counted_once_and_the_playout_goes_on():
    loop = _FakeLoop()
    pacer = MediaPacer(loop, tick_s=0.0, early=0.0)
    log: list = []
    s = _echo_stream_on_fake_loop(loop, pacer, log, 0)

    def refuse(data, addr):
        raise ConnectionRefusedError(111, "refused")

    s._tx_sock.sendto = refuse
    loop.run_until(0.02 + 3 * FRAME + 1e-9)
    assert s.socket_errors == 3 and s.stats.frames_sent == 3 and sum(s.stats.outcomes.values()) == 4  # 4 slots, 3 echoes
    assert not loop.errors
