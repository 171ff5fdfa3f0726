"""The userspace impairment relay on real loopback sockets.

Datagrams are sent in a burst (no pacing, no sleeps); the test waits on a future until
every datagram the channel model let through has arrived, with a timeout as a safety net.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voicelab.net import Channel, ChannelConfig
from voicelab.net.relay import UdpRelay


def _iface(loop):
    try:
        from voicelab.net.iface import LoopbackInterface

        return LoopbackInterface(loop)
    except ImportError:  # the interface object arrives with the transports
        return loop


class _Sink(asyncio.DatagramProtocol):
    def __init__(self, expected: int) -> None:
        self.got: list[tuple[bytes, float]] = []
        self.expected = expected
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.got.append((data, asyncio.get_running_loop().time()))
        if len(self.got) >= self.expected and not self.done.done():
            self.done.set_result(None)


async def _run(cfg: ChannelConfig, n: int, seed: int):
    loop = asyncio.get_running_loop()
    # the relay's model decides which datagrams survive; predict it with the same seed
    twin = Channel(cfg, seed=np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0]))
    survivors = sum(1 for i in range(n) if twin.transmit(i * 1e-6, 100 + 28))
    sink_t, sink = await loop.create_datagram_endpoint(lambda: _Sink(survivors), local_addr=("127.0.0.1", 0))
    target = sink_t.get_extra_info("sockname")[:2]
    relay = await UdpRelay(_iface(loop), target, uplink=cfg, seed=seed).start()
    src_t, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    t0 = loop.time()
    for i in range(n):
        src_t.sendto(i.to_bytes(4, "big") + bytes(96), relay.front_address)
    try:
        await asyncio.wait_for(sink.done, timeout=10.0)
    finally:
        src_t.close()
        sink_t.close()
        await relay.close()
    return sink.got, t0, relay


def test_relay_applies_loss_and_delay_in_order():
    cfg = ChannelConfig(delay_ms=40.0, loss_rate=0.2)
    got, t0, relay = asyncio.run(_run(cfg, 200, seed=5))
    n_lost = relay.up.stats.lost
    assert relay.up.stats.received == 200
    assert len(got) == 200 - n_lost
    assert abs(n_lost / 200 - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 200)
    seqs = [int.from_bytes(d[:4], "big") for d, _ in got]
    assert seqs == sorted(seqs)  # no reordering without `reorder`
    transit = np.array(relay.up.stats.transit_s)
    assert transit.min() >= 0.040 - 1e-3 and np.median(transit) < 0.040 + 0.015


def test_relay_reports_bad_target():
    from voicelab.errors import ParameterError

    with pytest.raises(ParameterError):
        UdpRelay(None, "127.0.0.1:5060")  # type: ignore[arg-type]
