"""The virtual-clock event loop: jumps, order, executor waits, deadlocks, and a live RTP call.

No sleeps: virtual time is the subject. The few real waits are the thing under test
(executor work, a wake-up from another thread, a blocking callback) and are short.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import socket
import threading
import time
import warnings

import numpy as np
import pytest

from voicelab.errors import ParameterError, VoicelabError
from voicelab.net.iface import NetworkInterface
from voicelab.net.vclock import (
    VirtualClockLoop,
    is_virtual,
    run_virtual,
    run_virtual_in_thread,
    virtual_time,
    wall_ratio,
)

# ----------------------------------------------------------------------------- the clock


def test_an_hour_of_sleep_is_instant_and_exact():
    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with wall_ratio() as m:
            await asyncio.sleep(3600.0)
        return t0, loop.time(), m

    t0, t1, m = run_virtual(main())
    assert (t0, t1) == (0.0, 3600.0)
    assert m.virtual_s == 3600.0 and m.wall_s < 0.5 and m.speedup > 7200.0
    t0, t1, _ = run_virtual(main(), start=100.25)
    assert (t0, t1) == (100.25, 3700.25)


def test_sleeps_longer_than_asyncio_select_cap_and_at_huge_clock_values():
    async def main(d):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(d)
        fired = loop.create_future()
        loop.call_at(loop.time(), fired.set_result, loop.time())  # due exactly now
        return t0, loop.time(), await fired

    # asyncio caps one wait at a day: three days are three jumps
    assert run_virtual(main(3 * 86400.0 + 0.5)) == (0.0, 3 * 86400.0 + 0.5, 3 * 86400.0 + 0.5)
    # at 1e12 s the float spacing (1.2e-4 s) exceeds asyncio's 1 ns "due" margin
    start = 1e12
    assert run_virtual(main(0.5), start=start) == (start, start + 0.5, start + 0.5)


def test_timers_run_by_deadline_and_fifo_at_equal_deadlines():
    rng = np.random.default_rng(7)
    deadlines = rng.integers(1, 5, size=400) * 0.02  # many exact ties

    async def main():
        loop = asyncio.get_running_loop()
        ran = []
        for i, d in enumerate(deadlines):
            if i % 2:
                loop.call_at(float(d), ran.append, (loop.time(), i))
            else:
                loop.call_later(float(d), ran.append, (loop.time(), i))
        await asyncio.sleep(1.0)
        return ran

    ran = run_virtual(main())
    expected = sorted(range(len(deadlines)), key=lambda i: (deadlines[i], i))  # stable: FIFO on ties
    assert [i for _, i in ran] == expected
    with virtual_time() as runner:  # and each ran at its deadline, seen from inside
        loop = runner.get_loop()
        seen = []
        for d in (0.5, 0.25, 0.5, 0.25):
            loop.call_at(d, lambda d=d: seen.append((d, loop.time())))
        runner.run(asyncio.sleep(1.0))
    assert seen == [(0.25, 0.25), (0.25, 0.25), (0.5, 0.5), (0.5, 0.5)]


def test_wait_for_and_timeout_fire_at_the_virtual_deadline():
    async def main():
        loop = asyncio.get_running_loop()
        out = []
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10.0), timeout=2.5)
        out.append(loop.time())
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.75):
                await loop.create_future()
        out.append(loop.time())
        assert await asyncio.wait_for(asyncio.sleep(1.0, result="ok"), timeout=1.5) == "ok"
        out.append(loop.time())
        return out

    assert run_virtual(main(), start=10.0) == [12.5, 13.25, 14.25]


def _scenario(seed):
    """Five tasks with seeded random sleeps, a queue and equal-deadline ties."""

    async def main():
        loop = asyncio.get_running_loop()
        rng = np.random.default_rng(seed)
        log = []
        q: asyncio.Queue = asyncio.Queue()

        async def worker(name):
            for _ in range(50):
                await asyncio.sleep(float(rng.choice([0.01, 0.02, 0.03])))
                log.append((loop.time(), name, "tick"))
                q.put_nowait(name)

        async def drain():
            for _ in range(250):
                log.append((loop.time(), await q.get(), "got"))

        await asyncio.gather(drain(), *(worker(f"w{i}") for i in range(5)))
        return log

    return run_virtual(main())


def test_two_runs_give_identical_event_sequences():
    a, b = _scenario(3), _scenario(3)
    assert a == b
    times = [t for t, _, kind in a if kind == "tick"]
    assert len(times) - len(set(times)) > 50  # the sequence really contains ties to order
    assert _scenario(4) != a  # and the seed matters


def test_queue_producer_consumer_60_virtual_seconds_in_well_under_a_second():
    n = 3000  # 60 s of 20 ms frames

    async def main():
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        got = []

        async def produce():
            t0 = loop.time()
            for k in range(n):
                await asyncio.sleep(t0 + (k + 1) * 0.02 - loop.time())
                q.put_nowait((k, loop.time()))
            q.put_nowait(None)

        async def consume():
            while (item := await q.get()) is not None:
                got.append((item[0], item[1], loop.time()))

        with wall_ratio() as m:
            await asyncio.gather(produce(), consume())
        return got, m

    got, m = run_virtual(main())
    assert [k for k, _, _ in got] == list(range(n))
    assert all(sent == recv for _, sent, recv in got)  # the hand-over takes no virtual time
    assert np.allclose([s for _, s, _ in got], 0.02 * np.arange(1, n + 1), atol=1e-9)
    assert m.virtual_s == pytest.approx(60.0, abs=1e-6)
    assert m.wall_s < 1.0, m
    print(f"\nqueue 20 ms x {n}: {m}")


# ------------------------------------------------------------------- real-time work


def _cpu_job(n):
    return sum(i * i for i in range(n))  # real work (tens of ms), not a sleep


def test_executor_work_is_waited_for_with_the_clock_frozen():
    async def main():
        loop = asyncio.get_running_loop()
        fired = []
        loop.call_later(1.0, lambda: fired.append(loop.time()))
        r1 = await loop.run_in_executor(None, _cpu_job, 300_000)
        t1 = loop.time()
        r2 = await asyncio.to_thread(_cpu_job, 1000)
        t2 = loop.time()
        await asyncio.sleep(2.0)
        return r1, r2, t1, t2, fired, loop.real_waits

    r1, r2, t1, t2, fired, real_waits = run_virtual(main())
    assert (r1, r2) == (_cpu_job(300_000), _cpu_job(1000))
    # without the hold the loop would have jumped to the 1 s timer while the job ran
    assert (t1, t2) == (0.0, 0.0) and fired == [1.0]
    assert real_waits >= 1


def test_a_thread_that_wakes_the_loop_is_not_a_deadlock():
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        threading.Thread(target=lambda: loop.call_soon_threadsafe(fut.set_result, 42)).start()
        return await fut

    assert run_virtual(main(), stall_timeout=1.0) == 42


def test_real_file_descriptors_still_work_and_are_waited_on():
    a, b = socket.socketpair()
    a.setblocking(False)
    try:

        async def main():
            loop = asyncio.get_running_loop()
            got = loop.create_future()
            loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(100)))
            released = threading.Event()
            # the peer writes only after a real delay longer than stall_timeout: registered
            # real I/O must make the loop wait for it instead of declaring a deadlock
            threading.Thread(target=lambda: (released.wait(0.1), b.send(b"ping"))).start()
            try:
                return await got, loop.time()
            finally:
                loop.remove_reader(a)

        assert run_virtual(main(), stall_timeout=0.02) == (b"ping", 0.0)
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------- misuse


def test_deadlock_is_reported_not_hung():
    async def waits_forever():
        await asyncio.get_running_loop().create_future()

    async def main():
        await asyncio.sleep(5.0)
        await asyncio.gather(waits_forever(), asyncio.sleep(1.0))

    t = time.perf_counter()
    with pytest.raises(VoicelabError, match=r"deadlocked at virtual time 6 s.*waits_forever"):
        run_virtual(main(), stall_timeout=0.05)
    assert time.perf_counter() - t < 1.0
    # the same with a loop we drive ourselves: the loop stays usable afterwards
    loop = VirtualClockLoop(stall_timeout=0.05)
    try:
        with pytest.raises(VoicelabError, match="stall_timeout=None"):
            loop.run_until_complete(loop.create_future())
        assert loop.run_until_complete(asyncio.sleep(1.0, result="still fine")) == "still fine"
    finally:
        loop.close()


def test_max_time_stops_a_timer_that_re_arms_forever():
    async def main():
        loop = asyncio.get_running_loop()

        def tick():
            loop.call_later(0.02, tick)  # like an RTCP timer nobody cancels

        tick()
        await loop.create_future()  # the result never comes

    with pytest.raises(VoicelabError, match="max_time=30 s"):
        run_virtual(main(), max_time=30.0)


def test_blocking_callback_is_logged_in_debug_mode(caplog):
    async def main():
        asyncio.get_running_loop().slow_callback_duration = 0.01
        t = time.perf_counter()
        while time.perf_counter() - t < 0.03:  # blocks the loop (busy, the way time.sleep would)
            pass
        await asyncio.sleep(1.0)

    with caplog.at_level("WARNING", logger="voicelab.net.vclock"):
        run_virtual(main(), debug=True)
    assert any("without the clock moving" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"start": -1.0}, "start must be >= 0"),
        ({"start": math.nan}, "start must be a finite"),
        ({"stall_timeout": 0.0}, "stall_timeout must be > 0"),
        ({"max_time": 1.0, "start": 5.0}, "before start"),
        ({"start": "0"}, "start must be a finite"),
    ],
)
def test_bad_options_are_parameter_errors(kw, match):
    with pytest.raises(ParameterError, match=match):
        VirtualClockLoop(**kw)
    coro = asyncio.sleep(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the refused coroutine is closed: no "never awaited"
        with pytest.raises(ParameterError, match=match):
            run_virtual(coro, **kw)


def test_run_virtual_refuses_non_coroutines_and_running_loops():
    async def main():
        return 1

    with pytest.raises(ParameterError, match="call the async function"):
        run_virtual(main)

    async def nested():
        with pytest.raises(ParameterError, match="run_virtual_in_thread"):
            run_virtual(main())
        with pytest.raises(ParameterError, match="virtual_time"):
            with virtual_time():
                pass
        return await run_virtual_in_thread(main()), is_virtual()

    assert asyncio.run(nested()) == (1, False)
    with pytest.raises(ParameterError, match="needs a loop"):
        wall_ratio().start()


def test_is_virtual_and_a_runner_shares_one_clock():
    async def where():
        return is_virtual(), asyncio.get_running_loop().time()

    assert run_virtual(where(), start=2.0) == (True, 2.0)
    assert asyncio.run(where())[0] is False
    assert is_virtual() is False
    with virtual_time(start=1.0) as runner:
        runner.run(asyncio.sleep(10.0))
        assert runner.run(where()) == (True, 11.0)
        loop = runner.get_loop()
    assert loop.is_closed() and is_virtual(loop)


def test_leftover_tasks_are_cancelled_and_the_executor_shut_down():
    seen = []

    async def background():
        try:
            await asyncio.sleep(1e6)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main():
        asyncio.get_running_loop().create_task(background())
        await asyncio.to_thread(_cpu_job, 10)  # starts the default executor
        await asyncio.sleep(0.5)

    run_virtual(main())
    assert seen == ["cancelled"]


# ------------------------------------------------- the real proof: live RTP in virtual time


class _MemDatagramTransport(asyncio.DatagramTransport):
    def __init__(self, net, host, addr, protocol):
        super().__init__()
        self._net, self._addr, self._protocol = net, addr, protocol
        self._host = host
        self._closing = False
        self._context = contextvars.copy_context()

    def sendto(self, data, addr=None):
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + self._net.delay_s, self._net.deliver, bytes(data), self._addr, tuple(addr[:2]))

    def close(self):
        if not self._closing:
            self._closing = True
            self._net.endpoints.pop(self._addr, None)
            asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def is_closing(self):
        return self._closing

    def get_extra_info(self, name, default=None):
        return {"sockname": self._addr, "socket": None}.get(name, default)


class _MemNet:
    """Datagrams between in-memory endpoints, each delivered ``delay_s`` after it was sent."""

    def __init__(self, delay_s):
        self.delay_s = delay_s
        self.endpoints = {}
        self.next_port = 40000

    def deliver(self, data, src, dst):
        t = self.endpoints.get(dst)
        if t is not None:  # nobody bound there (or closed): the datagram is lost
            t._context.run(t._protocol.datagram_received, data, src)


class _MemHost(NetworkInterface):
    """A host on :class:`_MemNet`: datagrams only (the test needs no streams)."""

    def __init__(self, net, address):
        self.net, self.address = net, address

    async def create_datagram_endpoint(self, protocol_factory, local_addr=None, remote_addr=None):
        port = (local_addr or (self.address, 0))[1] or self.net.next_port
        self.net.next_port += 2
        protocol = protocol_factory()
        transport = _MemDatagramTransport(self.net, self, (self.address, port), protocol)
        self.net.endpoints[(self.address, port)] = transport
        protocol.connection_made(transport)
        return transport, protocol

    async def create_server(self, protocol_factory, host, port, ssl=None):
        raise OSError("the test network carries datagrams only")

    async def create_connection(self, protocol_factory, host, port, ssl=None, local_addr=None, server_hostname=None):
        raise OSError("the test network carries datagrams only")

    def host_addresses(self):
        return [self.address]

    def time(self):
        return asyncio.get_running_loop().time()


def _rtp_call(seconds=10.0, delay_ms=30.0):
    from voicelab.audio.signals import composite_source_signal
    from voicelab.rtp.live import LiveAudioStream

    x = composite_source_signal(duration_s=seconds, sample_rate=8000, seed=1)

    async def main():
        net = _MemNet(delay_ms / 1000.0)
        ha, hb = _MemHost(net, "10.0.0.1"), _MemHost(net, "10.0.0.2")
        cap_a, cap_b = [], []
        a = await LiveAudioStream(ha, codec="pcmu", local_addr=("10.0.0.1", 0), seed=1, cname="caller", capture=cap_a).open()
        b = await LiveAudioStream(hb, codec="pcmu", local_addr=("10.0.0.2", 0), seed=2, cname="agent", capture=cap_b).open()
        a.set_remote(b.local_address)
        b.set_remote(a.local_address)
        with wall_ratio() as m:
            t0 = a.send(x, 8000)
            b.send(x, 8000, start_at=t0)
            end = t0 + seconds + 0.2
            await asyncio.wait_for(asyncio.gather(a.played_through(end), b.played_through(end)), timeout=seconds + 5)
        for s in (a, b):
            await s.close()
        return a, b, cap_a, cap_b, m

    return x, run_virtual(main())


@pytest.fixture(scope="module")
def two_calls():
    return _rtp_call(), _rtp_call()


def test_live_rtp_streams_run_in_virtual_time_much_faster_than_real_time(two_calls):
    from voicelab import codecs
    from voicelab.audio import to_int16

    (x, (a, b, _, _, m)), _ = two_calls
    print(f"\nLiveAudioStream pcmu 10 s both ways: {m}, wall/virtual = {m.wall_fraction:.4f}")
    assert m.virtual_s >= 10.0
    assert m.wall_fraction < 0.10, m
    ref = codecs.get("pcmu")
    for snd, rcv in ((a, b), (b, a)):
        sent, ts = snd.sent_audio()
        got, tr = rcv.received_audio()
        assert snd.stats.frames_sent == len(x) // 160
        assert rcv.stats.outcomes.get("played", 0) == snd.stats.frames_sent  # lossless, all on time
        # every frame played exactly as the codec decodes it: none concealed, lost or reordered
        frames = to_int16(sent).reshape(-1, ref.frame_samples)
        want = np.concatenate([ref.decode(ref.encode(f)) for f in frames])
        assert np.array_equal(to_int16(got[: len(sent)]), want)
        # the pacing is exact on this clock: every frame left at the same offset from its
        # scheduled time (live.py's fixed early margin against selector rounding)
        late = np.asarray(snd.stats.send_lateness_s)
        assert np.ptp(late) < 1e-12 and -0.001 <= late[0] <= 0.0
        # playout starts one frame + the network delay + the jitter buffer after capture
        assert tr - ts == pytest.approx(0.020 + late[0] + 0.030 + 0.060, abs=1e-9)
        # and the capture shows every datagram arriving exactly 30 ms after it left
        left = {d: t for t, src, _, d in snd.capture if src == snd.local_address}
        arrived = [(t, d) for t, src, _, d in rcv.capture if src == snd.local_address]
        assert len(arrived) == len(left) - 1  # all but the RTCP BYE: the call ended before it arrived
        assert all(t - left[d] == pytest.approx(0.030, abs=1e-9) for t, d in arrived)


def test_live_rtp_in_virtual_time_is_bit_identical_across_runs(two_calls):
    (_, r1), (_, r2) = two_calls
    for s1, s2 in zip(r1[:2], r2[:2]):
        g1, t1 = s1.received_audio()
        g2, t2 = s2.received_audio()
        assert t1 == t2 and g1.shape == g2.shape and np.array_equal(g1, g2)
        assert s1.stats.send_lateness_s == s2.stats.send_lateness_s
    assert r1[2] == r2[2] and r1[3] == r2[3]  # identical packet traces: times, addresses, bytes
