"""The TCP impairment relay: the sans-IO core on a fake clock, the asyncio relay on loopback.

The core is driven with ``now`` by hand (no sockets, no sleeps): loss becomes a delay of
one retransmission timeout, everything behind a lost segment waits (head-of-line
blocking), bytes stay in order, same seed gives the same schedule. The live relay test
only checks the wiring (bytes, order, model delay on the loop clock, no leaks).
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


def _stream(tcp: TcpImpairment, n: int, *, size: int = 400, t0: float = 0.0):
    """Submit ``n`` chunks, one every 20 ms (like a media stream); all deliveries."""
    out = []
    for k in range(n):
        out += tcp.submit(bytes([k % 256]) * size, t0 + k * FRAME)
    return out


def test_lossless_path_delivers_after_the_configured_delay_in_order():
    tcp = TcpImpairment(ChannelConfig(delay_ms=25.0), seed=0)
    ds = _stream(tcp, 10)
    assert [d.deliver_at for d in ds] == pytest.approx([k * FRAME + 0.025 for k in range(10)])
    assert all(d.retransmissions == 0 and d.head_of_line_s == 0 for d in ds)
    assert tcp.stats.retransmissions == 0 and tcp.stats.head_of_line_blocked == 0
    assert tcp.stats.transit_s == pytest.approx([0.025] * 10)


def test_a_lost_segment_arrives_one_rto_late_and_blocks_the_ones_behind_it():
    # ordinal 5 is the 6th transmission: chunk 5's first try
    tcp = TcpImpairment(ChannelConfig(delay_ms=10.0, loss_trace=(5,)), seed=0, rto_min_ms=210.0)
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


def test_repeated_loss_of_one_segment_doubles_the_timeout():
    tcp = TcpImpairment(ChannelConfig(delay_ms=10.0, loss_trace=(1, 2, 3)), seed=0, initial_rto_ms=1000.0)
    d0 = tcp.submit(b"x", 0.0)[0]
    d1 = tcp.submit(b"y", 0.5)[0]  # the sample of segment 0 is in: RTO is the 200 ms floor
    assert d0.deliver_at == pytest.approx(0.010)
    assert d1.retransmissions == 3
    assert d1.deliver_at == pytest.approx(0.5 + 0.2 + 0.4 + 0.8 + 0.010)


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


def test_first_segment_lost_waits_the_initial_rto():
    tcp = TcpImpairment(ChannelConfig(delay_ms=5.0, loss_trace=(0,)), seed=0, initial_rto_ms=1000.0)
    d = tcp.submit(b"hello", 0.0)[0]
    assert d.deliver_at == pytest.approx(1.005) and d.retransmissions == 1


def test_large_writes_are_cut_into_segments_and_bandwidth_serialises_them():
    tcp = TcpImpairment(ChannelConfig(bandwidth_kbps=800.0), seed=0, mss=1000, header_bytes=0)
    ds = tcp.submit(bytes(2500), 0.0)
    assert [len(d.data) for d in ds] == [1000, 1000, 500]
    # 1000 bytes at 800 kbit/s = 10 ms each, back to back
    assert [d.deliver_at for d in ds] == pytest.approx([0.010, 0.020, 0.025])


def test_same_seed_same_schedule_and_another_seed_differs():
    cfg = ChannelConfig(delay_ms=30.0, jitter_ms=8.0, loss_rate=0.05)
    a = [(d.deliver_at, d.retransmissions) for d in _stream(TcpImpairment(cfg, seed=7), 300)]
    b = [(d.deliver_at, d.retransmissions) for d in _stream(TcpImpairment(cfg, seed=7), 300)]
    c = [(d.deliver_at, d.retransmissions) for d in _stream(TcpImpairment(cfg, seed=8), 300)]
    assert a == b
    assert a != c


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.3),
    jitter=st.floats(0.0, 40.0),
    sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=60),
)
def test_any_path_keeps_every_byte_in_order_and_never_delivers_early(seed, loss, jitter, sizes):
    tcp = TcpImpairment(ChannelConfig(delay_ms=20.0, jitter_ms=jitter, loss_rate=loss), seed=seed, mss=1448)
    sent, out = [], []
    for k, n in enumerate(sizes):
        data = bytes((k + i) % 256 for i in range(n))
        sent.append(data)
        out += tcp.submit(data, k * FRAME)
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
