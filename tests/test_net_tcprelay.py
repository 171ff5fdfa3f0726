"""The TCP impairment relay: the sans-IO core on a fake clock, the asyncio relay on loopback.

The core is driven with ``now`` by hand (no sockets, no sleeps). The default recovery
(``"linux"``) repairs a loss when a later segment is acknowledged (RACK, fast
retransmit), by a tail loss probe when nothing follows, and by the retransmission timer
only for a lost retransmission; the old model (``recovery="rto"``: every loss waits one
RTO) stays available and tested. In both, everything behind a lost segment waits
(head-of-line blocking), bytes stay in order, same seed gives the same schedule. The
live relay tests check the wiring (bytes, order, model delay on the loop clock, the
repair timer, no leaks). The kernel cross-check is tests/test_tcp_kernel_check.py.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.errors import ParameterError
from voicelab.net import ChannelConfig
from voicelab.net.iface import LoopbackInterface
from voicelab.net.tcprelay import TcpImpairment, TcpRelay

from .conftest import run_clean

FRAME = 0.020


def _stream(tcp: TcpImpairment, n: int, *, size: int = 400, t0: float = 0.0, gap: float = FRAME):
    """Submit ``n`` chunks, one every ``gap`` s (like a media stream), then flush; all deliveries."""
    out = []
    for k in range(n):
        out += tcp.submit(bytes([k % 256]) * size, t0 + k * gap)
    return out + tcp.flush()


def RTO(cfg, **kw):
    """The lab's first model: every loss waits a retransmission timeout."""
    return TcpImpairment(cfg, recovery="rto", **kw)


def test_lossless_path_delivers_after_the_configured_delay_in_order():
    tcp = TcpImpairment(ChannelConfig(delay_ms=25.0), seed=0)
    ds = _stream(tcp, 10)
    assert [d.deliver_at for d in ds] == pytest.approx([k * FRAME + 0.025 for k in range(10)])
    assert all(d.retransmissions == 0 and d.head_of_line_s == 0 for d in ds)
    assert tcp.stats.retransmissions == 0 and tcp.stats.head_of_line_blocked == 0
    assert tcp.stats.transit_s == pytest.approx([0.025] * 10)


def test_rto_model_a_lost_segment_arrives_one_rto_late_and_blocks_the_ones_behind_it():
    # ordinal 5 is the 6th transmission: chunk 5's first try
    tcp = RTO(ChannelConfig(delay_ms=10.0, loss_trace=(5,)), seed=0, rto_min_ms=210.0)
    ds = _stream(tcp, 20)
    rto = 0.210  # srtt 20 ms, rttvar 10 ms -> 60 ms, raised to the 210 ms floor
    lost_at = 5 * FRAME + rto + 0.010
    assert ds[5].retransmissions == 1 and ds[5].deliver_at == pytest.approx(lost_at)
    assert ds[5].transit_s == pytest.approx(rto + 0.010)
    # chunks 6..15 arrived before the retransmission: they wait for it
    behind = [d for d in ds[6:] if d.arrived_at < lost_at]
    assert [d.segment for d in behind] == list(range(6, 16))
    assert all(d.deliver_at == pytest.approx(lost_at) and d.head_of_line_s > 0 for d in behind)
    assert ds[16].deliver_at == pytest.approx(16 * FRAME + 0.010)  # after that: normal again
    assert tcp.stats.retransmissions == 1 and tcp.stats.head_of_line_blocked == len(behind)
    # nothing was lost: every byte comes out, in order
    assert b"".join(d.data for d in ds) == b"".join(bytes([k]) * 400 for k in range(20))


def test_rto_model_repeated_loss_of_one_segment_doubles_the_timeout():
    tcp = RTO(ChannelConfig(delay_ms=10.0, loss_trace=(1, 2, 3)), seed=0, initial_rto_ms=1000.0)
    d0 = tcp.submit(b"x", 0.0)[0]
    d1 = tcp.submit(b"y", 0.5)[0]  # the sample of segment 0 is in: RTO is the 200 ms floor
    assert d0.deliver_at == pytest.approx(0.010)
    assert d1.retransmissions == 3
    assert d1.deliver_at == pytest.approx(0.5 + 0.2 + 0.4 + 0.8 + 0.010)


# ------------------------------------------------------- recovery="linux" (the default)


def test_a_lost_segment_is_resent_when_the_next_one_is_acked_rack():
    # RFC 8985 6.2: chunk 5 (sent at 0.100) is lost; chunk 6 (0.120) arrives at 0.130 and
    # its SACK is back at 0.140; RACK: 0.100 + RTT 20 ms + reo_wnd (min_RTT/4 = 5 ms) is
    # already past, so chunk 5 goes again at 0.140 and arrives at 0.150
    tcp = TcpImpairment(ChannelConfig(delay_ms=10.0, loss_trace=(5,)), seed=0)
    ds = _stream(tcp, 20)
    t_l, gap, rtt, owd = 5 * FRAME, FRAME, 0.020, 0.010
    assert ds[5].retransmissions == 1
    assert ds[5].deliver_at == pytest.approx(t_l + gap + rtt + owd)
    # chunk 6 waited for it (head-of-line), chunk 7 arrived at the same moment
    assert ds[6].deliver_at == pytest.approx(ds[5].deliver_at) and ds[6].head_of_line_s > 0
    assert ds[8].deliver_at == pytest.approx(8 * FRAME + owd)
    assert tcp.stats.fast_retransmits == 1 and tcp.stats.timeouts == 0 and tcp.stats.tail_loss_probes == 0
    assert tcp.stats.head_of_line_blocked == 1
    # the old model would have waited the 200 ms floor of the RTO
    old = _stream(RTO(ChannelConfig(delay_ms=10.0, loss_trace=(5,)), seed=0), 20)
    assert old[5].transit_s > 0.2 > 2 * ds[5].transit_s


def test_rack_waits_the_reordering_window_when_the_rtt_is_long():
    # RTT 100 ms: reo_wnd = min_RTT/4 = 25 ms; the next chunk's SACK (0.320) comes before
    # 0.200 + 100 + 25 ms, so the retransmission waits for the window: 0.325
    tcp = TcpImpairment(ChannelConfig(delay_ms=50.0, loss_trace=(10,)), seed=0)
    ds = _stream(tcp, 30)
    assert ds[10].deliver_at == pytest.approx(0.200 + 0.100 + 0.025 + 0.050)


def test_three_sacks_repair_at_once_dupthresh():
    # 5 ms apart, RTT 100 ms: the third later segment's SACK (0.315) comes before the
    # reordering window ends (0.325): DupThresh, reo_wnd 0 (Linux tcp_rack_reo_wnd)
    tcp = TcpImpairment(ChannelConfig(delay_ms=50.0, loss_trace=(40,)), seed=0)
    ds = _stream(tcp, 80, gap=0.005)
    assert ds[40].deliver_at == pytest.approx(0.200 + 0.015 + 0.100 + 0.050)
    assert tcp.stats.fast_retransmits == 1


def test_tail_loss_probe_and_the_delayed_ack_allowance():
    # the last segment of a two-segment write is lost, nothing follows: with another segment
    # in flight the probe timeout is 2 SRTT (40 ms, RFC 8985 7.2)
    tcp = TcpImpairment(ChannelConfig(delay_ms=10.0, loss_trace=(6,)), seed=0, mss=1000)
    ds = _stream(tcp, 5)
    ds = tcp.submit(bytes(2000), 0.2) + tcp.flush()
    assert ds[1].deliver_at == pytest.approx(0.2 + 2 * 0.020 + 0.010)
    assert tcp.stats.tail_loss_probes == 1 and tcp.stats.timeouts == 0
    # the same with two writes 1 ms apart: the first is still unacknowledged
    tcp = TcpImpairment(ChannelConfig(delay_ms=10.0, loss_trace=(6,)), seed=0)
    ds = _stream(tcp, 5)
    ds = tcp.submit(b"a", 0.2) + tcp.submit(b"b", 0.201) + tcp.flush()
    assert ds[1].deliver_at == pytest.approx(0.201 + 2 * 0.020 + 0.010)
    # alone in flight: + WCDelAckT (200 ms), which makes it the RTO (200 ms floor)
    tcp = TcpImpairment(ChannelConfig(delay_ms=10.0, loss_trace=(5,)), seed=0)
    ds = _stream(tcp, 5) + tcp.submit(b"last", 0.2) + tcp.flush()
    assert ds[5].deliver_at == pytest.approx(0.2 + 0.200 + 0.010)


def test_two_losses_in_a_row_on_a_short_path_are_repaired_by_a_probe_then_rack():
    # RTT 1 ms: PTO = max(2 SRTT, 10 ms) with two segments in flight. Chunks 5 and 6 lost:
    # the probe resends 6 at 0.130, its SACK makes RACK resend 5 at 0.131 (the kernel
    # shows the same 32/12 ms pair)
    tcp = TcpImpairment(ChannelConfig(delay_ms=0.5, loss_trace=(5, 6)), seed=0)
    ds = _stream(tcp, 20)
    assert ds[6].arrived_at == pytest.approx(0.120 + 0.010 + 0.0005)
    assert ds[5].deliver_at == pytest.approx(0.120 + 0.010 + 0.001 + 0.0005)
    assert tcp.stats.tail_loss_probes == 1 and tcp.stats.fast_retransmits == 1


def test_a_lost_retransmission_waits_for_the_rto_and_backs_off():
    # ordinals: chunks 0..6 are 0..6; RACK resends chunk 5 at 0.140 before chunk 7 (ordinal
    # 7, lost); RTO (200 ms floor) at 0.340 is ordinal 18 (lost again), doubled: 0.740
    tcp = TcpImpairment(ChannelConfig(delay_ms=10.0, loss_trace=(5, 7, 18)), seed=0)
    ds = _stream(tcp, 60)
    assert ds[5].retransmissions == 3
    assert ds[5].deliver_at == pytest.approx(0.140 + 0.200 + 0.400 + 0.010)
    assert tcp.stats.fast_retransmits == 1 and tcp.stats.timeouts == 2
    assert all(d.deliver_at == pytest.approx(ds[5].deliver_at) for d in ds[6:37])


def test_poll_and_next_event_drive_the_repair_on_a_clock():
    tcp = TcpImpairment(ChannelConfig(delay_ms=10.0, loss_trace=(5,)), seed=0)
    out = []
    for k in range(7):
        out += tcp.submit(bytes([k]) * 100, k * FRAME)
    assert [d.segment for d in out] == [0, 1, 2, 3, 4]  # 5 is not repaired yet, 6 waits
    assert tcp.next_event_s == pytest.approx(0.140)
    assert tcp.poll(0.139) == []
    got = tcp.poll(0.140)
    assert [d.segment for d in got] == [5, 6] and tcp.next_event_s is None
    assert RTO(ChannelConfig()).poll(1.0) == [] and RTO(ChannelConfig()).next_event_s is None


def test_rto_follows_rfc6298_from_the_rtt_samples():
    tcp = TcpImpairment(ChannelConfig(delay_ms=50.0), seed=0)
    assert tcp.rto_s == pytest.approx(1.0)  # no sample yet: the initial RTO
    tcp.submit(b"a", 0.0)
    assert tcp.srtt_s is None  # the ACK has not come back yet at now=0
    tcp.submit(b"b", 0.2)
    # first sample R = 100 ms: SRTT = R, RTTVAR = R/2, RTO = R + 4 R/2 = 300 ms
    assert tcp.srtt_s == pytest.approx(0.100) and tcp.rto_s == pytest.approx(0.300)
    tcp.submit(b"c", 0.4)
    # second equal sample: RTTVAR = 3/4 * 50 ms, SRTT stays 100 ms
    assert tcp.rto_s == pytest.approx(0.100 + 4 * 0.0375)


@pytest.mark.parametrize("recovery", ["linux", "rto"])
def test_first_segment_lost_with_nothing_after_it_waits_the_initial_rto(recovery):
    # no RTT sample yet: the probe timeout is the initial RTO too (RFC 8985 7.2)
    tcp = TcpImpairment(ChannelConfig(delay_ms=5.0, loss_trace=(0,)), seed=0, initial_rto_ms=1000.0, recovery=recovery)
    d = (tcp.submit(b"hello", 0.0) + tcp.flush())[0]
    assert d.deliver_at == pytest.approx(1.005) and d.retransmissions == 1


def test_large_writes_are_cut_into_segments_and_bandwidth_serialises_them():
    tcp = TcpImpairment(ChannelConfig(bandwidth_kbps=800.0), seed=0, mss=1000, header_bytes=0)
    ds = tcp.submit(bytes(2500), 0.0)
    assert [len(d.data) for d in ds] == [1000, 1000, 500]
    # 1000 bytes at 800 kbit/s = 10 ms each, back to back
    assert [d.deliver_at for d in ds] == pytest.approx([0.010, 0.020, 0.025])


@pytest.mark.parametrize("recovery", ["linux", "rto"])
def test_same_seed_same_schedule_and_another_seed_differs(recovery):
    cfg = ChannelConfig(delay_ms=30.0, jitter_ms=8.0, loss_rate=0.05)
    a = [(d.deliver_at, d.retransmissions) for d in _stream(TcpImpairment(cfg, seed=7, recovery=recovery), 300)]
    b = [(d.deliver_at, d.retransmissions) for d in _stream(TcpImpairment(cfg, seed=7, recovery=recovery), 300)]
    c = [(d.deliver_at, d.retransmissions) for d in _stream(TcpImpairment(cfg, seed=8, recovery=recovery), 300)]
    assert a == b
    assert a != c


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.3),
    jitter=st.floats(0.0, 40.0),
    sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=60),
    recovery=st.sampled_from(["linux", "rto"]),
    polls=st.booleans(),
)
def test_any_path_keeps_every_byte_in_order_and_never_delivers_early(seed, loss, jitter, sizes, recovery, polls):
    tcp = TcpImpairment(ChannelConfig(delay_ms=20.0, jitter_ms=jitter, loss_rate=loss), seed=seed, mss=1448,
                        recovery=recovery)
    sent, out = [], []
    for k, n in enumerate(sizes):
        data = bytes((k + i) % 256 for i in range(n))
        sent.append(data)
        now = k * FRAME
        while polls and tcp.next_event_s is not None and tcp.next_event_s <= now:
            # driven like the relay: a poll at each repair, so nothing is decided late
            t = tcp.next_event_s
            polled = tcp.poll(t)
            assert all(d.deliver_at >= t for d in polled)
            out += polled
        got = tcp.submit(data, now)
        assert not polls or all(d.deliver_at >= now for d in got)
        out += got
    out += tcp.flush()
    assert tcp.next_event_s is None
    assert b"".join(d.data for d in out) == b"".join(sent)
    times = [d.deliver_at for d in out]
    assert times == sorted(times)
    assert all(d.deliver_at >= d.arrived_at >= d.sent_at for d in out)
    assert tcp.stats.retransmissions == sum(d.retransmissions for d in out)


def test_bad_parameters_and_time_going_backwards_are_parameter_errors():
    with pytest.raises(ParameterError):
        TcpImpairment("lossy")  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        TcpImpairment(ChannelConfig(), rto_min_ms=500, rto_max_ms=100)
    with pytest.raises(ParameterError):
        TcpImpairment(ChannelConfig(), mss=0)
    tcp = TcpImpairment(ChannelConfig())
    tcp.submit(b"a", 1.0)
    with pytest.raises(ParameterError):
        tcp.submit(b"b", 0.5)
    with pytest.raises(ParameterError):
        tcp.submit("text", 2.0)  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        TcpRelay(LoopbackInterface(), ("127.0.0.1", 1), rto_minimum=1)
    with pytest.raises(ParameterError):
        TcpRelay(LoopbackInterface(), ("127.0.0.1", 1), recovery="reno")
    for bad in ({"recovery": "fast"}, {"tlp_min_ms": -1}, {"dupthresh": 0}, {"wc_delack_ms": float("nan")}):
        with pytest.raises(ParameterError):
            TcpImpairment(ChannelConfig(), **bad)
    with pytest.raises(ParameterError):
        tcp.poll(0.1)  # time going backwards through poll too


# ------------------------------------------------------------------------- live relay


class _Sink(asyncio.Protocol):
    def __init__(self, expected: int) -> None:
        self.data = bytearray()
        self.times: list[tuple[int, float]] = []
        self.expected = expected
        self.done = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.times.append((len(self.data), asyncio.get_running_loop().time()))
        if len(self.data) >= self.expected and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if not self.done.done():
            self.done.set_result(None)


def test_live_relay_delays_a_lost_segment_by_the_rto_and_keeps_the_bytes():
    async def main():
        loop = asyncio.get_running_loop()
        iface = LoopbackInterface(loop)
        payload = bytes(range(256)) * 4
        sink = _Sink(len(payload))  # the target accepts one connection: the relay's
        server = await iface.create_server(lambda: sink, "127.0.0.1", 0)
        target = server.sockets[0].getsockname()[:2]
        # the first segment of the uplink is lost once: it comes out after the initial RTO
        cfg = ChannelConfig(delay_ms=15.0, loss_trace=(0,))
        relay = await TcpRelay(iface, target, uplink=cfg, downlink=ChannelConfig(), seed=3, initial_rto_ms=150.0).start()
        client = _Sink(0)
        tr, _ = await iface.create_connection(lambda: client, *relay.front_address)
        t_write = loop.time()
        tr.write(payload)
        await asyncio.wait_for(asyncio.shield(sink.done), 5.0)
        assert bytes(sink.data) == payload
        assert sink.times[0][1] - t_write >= 0.150 + 0.015 - 0.002
        assert relay.up.retransmissions == 1 and relay.up.bytes == len(payload)
        assert relay.measured_transit_s("up")[0] >= 0.160
        tr.close()
        await sink.lost  # the relay passes the close on once the queue is empty
        await relay.close()
        server.close()
        await server.wait_closed()

    run_clean(main, timeout=10.0)


def test_live_relay_repairs_a_loss_on_its_timer_when_later_segments_are_acked():
    async def main():
        loop = asyncio.get_running_loop()
        iface = LoopbackInterface(loop)
        payload = bytes(range(256)) * 3
        sink = _Sink(len(payload))
        server = await iface.create_server(lambda: sink, "127.0.0.1", 0)
        target = server.sockets[0].getsockname()[:2]
        # one write, three 256-byte segments; the first is lost. The SACKs of the other two
        # are back at 30 ms: RACK resends it then (the pipe's repair timer), it arrives at
        # 45 ms; the old model waits the initial RTO (150 ms)
        cfg = ChannelConfig(delay_ms=15.0, loss_trace=(0,))
        relay = await TcpRelay(iface, target, uplink=cfg, seed=3, initial_rto_ms=150.0, mss=256).start()
        client = _Sink(0)
        tr, _ = await iface.create_connection(lambda: client, *relay.front_address)
        t_write = loop.time()
        tr.write(payload)
        await asyncio.wait_for(asyncio.shield(sink.done), 5.0)
        assert bytes(sink.data) == payload
        first = sink.times[0][1] - t_write
        assert 0.045 - 0.002 <= first < 0.150
        assert relay.up.fast_retransmits == 1 and relay.up.retransmissions == 1
        tr.close()
        await sink.lost
        await relay.close()
        server.close()
        await server.wait_closed()

    run_clean(main, timeout=10.0)


def test_live_relay_closes_the_client_when_the_target_refuses():
    async def main():
        loop = asyncio.get_running_loop()
        iface = LoopbackInterface(loop)
        from voicelab.net.iface import free_port

        relay = await TcpRelay(iface, ("127.0.0.1", free_port(kind="tcp")), seed=0).start()
        client = _Sink(1)
        await iface.create_connection(lambda: client, *relay.front_address)
        await asyncio.wait_for(client.lost, 5.0)
        assert relay.refused == 1
        await relay.close()

    run_clean(main, timeout=10.0)
