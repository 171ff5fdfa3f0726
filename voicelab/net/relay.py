"""A userspace impairment relay for live calls on real sockets (``loopback`` mode).

This machine's kernel has no ``netem``, and most laptops cannot use it anyway, so live
calls are impaired in userspace: a UDP relay sits between two endpoints and sends every
datagram through the same seeded channel models as the offline simulator
(:class:`voicelab.net.Channel`), one per direction. The relay is a thin asyncio adapter
over those sans-IO models: it asks the model when (and whether) a datagram arrives and
delivers it then, on the event loop's clock.

::

    client ---> [front socket | relay | back socket] ---> target
    client <--- [front socket | relay | back socket] <--- target

The client sends to the relay's front address; the relay forwards from its back socket,
so the target sees the relay as the source (use rport / symmetric RTP, or advertise the
relay's addresses, so that replies come back through it). Deliveries in one direction
keep the order the channel model gave them: asyncio runs timers due at the same instant
in any order, so each direction keeps its own queue and one timer.

All sockets are opened through a network interface object
(:class:`voicelab.net.iface.LoopbackInterface` or any object with the same
``create_datagram_endpoint``), never directly.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError
from .channel import Channel, ChannelConfig
from .vclock import early_s

__all__ = ["UdpRelay", "RelayStats"]



@dataclass
class RelayStats:
    """Counters of one relay direction."""

    received: int = 0
    forwarded: int = 0
    lost: int = 0
    dropped_no_client: int = 0
    bytes_forwarded: int = 0
    transit_s: list = field(default_factory=list)


class _Direction:
    """One direction: channel model + in-order delivery queue + one loop timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, channel: Channel) -> None:
        self.loop = loop
        self.channel = channel
        self.queue: list[tuple[float, int, bytes, Any, float]] = []
        self.counter = itertools.count()
        self.handle: asyncio.TimerHandle | None = None
        self.stats = RelayStats()
        self.send = None  # set by the relay: callable(data, addr)

    def submit(self, data: bytes, addr: Any) -> None:
        now = self.loop.time()
        self.stats.received += 1
        arrivals = self.channel.transmit(now, len(data) + 28)  # + IPv4/UDP headers
        if not arrivals:
            self.stats.lost += 1
            return
        for t in arrivals:
            heapq.heappush(self.queue, (t, next(self.counter), data, addr, now))
        self._arm()

    def _arm(self) -> None:
        if not self.queue:
            return
        when = self.queue[0][0]
        if self.handle is not None:
            if self.handle.when() <= when:
                return
            self.handle.cancel()
        self.handle = self.loop.call_at(when - early_s(self.loop), self._fire)

    def _fire(self) -> None:
        self.handle = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now + early_s(self.loop) + 1e-9:
            _, _, data, addr, sent = heapq.heappop(self.queue)
            if self.send is not None and addr is not None:
                self.send(data, addr)
                self.stats.forwarded += 1
                self.stats.bytes_forwarded += len(data)
                self.stats.transit_s.append(now - sent)
            else:
                self.stats.dropped_no_client += 1
        self._arm()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.queue.clear()


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.on_datagram(data, addr)

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        if not self.closed.done():
            self.closed.set_result(None)


def _grow_buffers(transport: Any, size: int = 4 << 20) -> None:
    """Ask for large socket buffers so a burst is delayed by the model, not dropped by
    the kernel (virtual transports have no socket: nothing to do)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    import socket as _socket

    for opt in (_socket.SO_RCVBUF, _socket.SO_SNDBUF):
        try:
            sock.setsockopt(_socket.SOL_SOCKET, opt, size)
        except OSError:  # the kernel may cap it; a smaller buffer still works
            continue


class UdpRelay:
    """Relay UDP between one client and one target through two channel models.

    Parameters
    ----------
    iface : network interface
        Opens the sockets (``create_datagram_endpoint`` like the event loop's).
    target : (host, port)
        Where forwarded datagrams go.
    uplink, downlink : ChannelConfig
        Client -> target and target -> client impairment.
    listen : (host, port)
        Front address (port 0 picks a free one; read :attr:`front_address`).
    seed : int
        Seed of both directions' channel models (independent child streams).
    client : (host, port), optional
        Where target -> client datagrams go before the client has sent anything
        (otherwise the relay learns it from the client's first datagram).

    Examples
    --------
    >>> relay = UdpRelay(iface, ("127.0.0.1", 5060), uplink=ChannelConfig(loss_rate=0.05))  # doctest: +SKIP
    >>> await relay.start()                                                                   # doctest: +SKIP
    >>> relay.front_address                                                                   # doctest: +SKIP
    ('127.0.0.1', 40123)
    """

    def __init__(
        self,
        iface: Any,
        target: tuple[str, int],
        *,
        uplink: ChannelConfig | None = None,
        downlink: ChannelConfig | None = None,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        seed: int = 0,
        client: tuple[str, int] | None = None,
    ) -> None:
        if not (isinstance(target, tuple) and len(target) == 2):
            raise ParameterError(f"relay target must be a (host, port) pair, got {target!r}")
        self.iface = iface
        self.target = target
        self.listen = listen
        self.uplink_config = uplink or ChannelConfig()
        self.downlink_config = downlink or ChannelConfig()
        self.seed = seed
        self.client: Any = client
        self._front: _Endpoint | None = None
        self._back: _Endpoint | None = None
        self.up: _Direction | None = None
        self.down: _Direction | None = None

    async def start(self) -> "UdpRelay":
        """Open the sockets; returns self."""
        loop = asyncio.get_running_loop()
        s_up, s_down = np.random.SeedSequence(self.seed).spawn(2)
        self.up = _Direction(loop, Channel(self.uplink_config, seed=np.random.default_rng(s_up)))
        self.down = _Direction(loop, Channel(self.downlink_config, seed=np.random.default_rng(s_down)))
        _, self._front = await self.iface.create_datagram_endpoint(
            lambda: _Endpoint(self._from_client), local_addr=self.listen
        )
        _, self._back = await self.iface.create_datagram_endpoint(
            lambda: _Endpoint(self._from_target), local_addr=(self.listen[0], 0)
        )
        for ep in (self._front, self._back):
            _grow_buffers(ep.transport)
        self.up.send = lambda data, addr: self._back.transport.sendto(data, addr)  # type: ignore[union-attr]
        self.down.send = lambda data, addr: self._front.transport.sendto(data, addr)  # type: ignore[union-attr]
        return self

    @property
    def front_address(self) -> tuple[str, int]:
        """Where the client sends."""
        return self._front.transport.get_extra_info("sockname")[:2]  # type: ignore[union-attr]

    @property
    def back_address(self) -> tuple[str, int]:
        """The source address the target sees."""
        return self._back.transport.get_extra_info("sockname")[:2]  # type: ignore[union-attr]

    def _from_client(self, data: bytes, addr) -> None:
        self.client = addr  # latch: replies go to whoever spoke last
        self.up.submit(data, self.target)  # type: ignore[union-attr]

    def _from_target(self, data: bytes, addr) -> None:
        self.down.submit(data, self.client)  # type: ignore[union-attr]

    async def close(self) -> None:
        """Stop relaying and close both sockets (waits until they are closed)."""
        for d in (self.up, self.down):
            if d is not None:
                d.close()
        for ep in (self._front, self._back):
            if ep is not None and ep.transport is not None:
                ep.transport.close()
                await ep.closed

    async def __aenter__(self) -> "UdpRelay":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()
