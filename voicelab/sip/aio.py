"""asyncio adapter of the sans-IO SIP user agent: :class:`AsyncUserAgent`.

Drives a :class:`voicelab.sip.ua.UserAgent` from a SIP transport
(:mod:`voicelab.sip.transport`): datagrams in, datagrams out, one re-armed loop timer,
events into an :class:`asyncio.Queue`. It used to live in :mod:`voicelab.calls`, which
re-exports it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import PeerTimeoutError
from .ua import UserAgent

__all__ = ["AsyncUserAgent"]


class AsyncUserAgent:
    """Drive a sans-IO :class:`UserAgent` from an asyncio SIP transport.

    Parameters
    ----------
    ua : UserAgent
    transport : voicelab.sip.transport.SipTransport
        Already listening; created with ``parse=False`` (the UA parses).
    """

    def __init__(self, ua: UserAgent, transport: Any, *, capture: list | None = None) -> None:
        self.ua = ua
        self.transport = transport
        self.capture = capture  # (time, src, dst, bytes) of every datagram, for pcap
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._sends: set[asyncio.Task] = set()
        transport.on_message = self._on_message

    def _on_message(self, data: Any, addr: Any, transport: Any) -> None:
        if self.capture is not None:
            self.capture.append((self.loop.time(), tuple(addr[:2]), self.ua.local_addr, bytes(data)))
        self.ua.receive(bytes(data), tuple(addr[:2]), self.loop.time())
        self.flush()

    def flush(self) -> None:
        """Send what the UA queued, deliver its events, re-arm its timer."""
        for data, addr in self.ua.datagrams_to_send(self.loop.time()):
            if self.capture is not None:
                self.capture.append((self.loop.time(), self.ua.local_addr, tuple(addr[:2]), data))
            task = self.loop.create_task(self.transport.send(data, tuple(addr[:2])))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        while (ev := self.ua.next_event()) is not None:
            self.events.put_nowait(ev)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        nt = self.ua.next_timer()
        if nt is not None:
            self._timer = self.loop.call_at(nt, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.ua.handle_timer(self.loop.time())
        self.flush()

    async def wait_for(self, *types: type, timeout: float = 10.0) -> Any:
        """The next event of one of ``types`` (others are skipped).

        Raises
        ------
        PeerTimeoutError
            None arrived within ``timeout`` seconds.
        """
        async def _get():
            while True:
                ev = await self.events.get()
                if isinstance(ev, types):
                    return ev

        try:
            return await asyncio.wait_for(_get(), timeout)
        except asyncio.TimeoutError:
            names = " or ".join(t.__name__ for t in types)
            raise PeerTimeoutError(f"no {names} within {timeout:g} s: the peer did not answer") from None

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
        await self.transport.close()
