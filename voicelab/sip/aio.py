"""asyncio adapter of the sans-IO SIP user agent: :class:`AsyncUserAgent`.

Drives a :class:`voicelab.sip.ua.UserAgent` from a SIP transport
(:mod:`voicelab.sip.transport`): datagrams in, datagrams out, one re-armed loop timer,
events into an :class:`asyncio.Queue`. A send that fails fails its request's transaction
with the cause (RFC 3261 8.1.3.1) or counts the undeliverable response, in one log line.
It used to live in :mod:`voicelab.calls`, which re-exports it.
"""

from __future__ import annotations

import asyncio
import math
import logging
import ssl
from typing import Any, Callable

from ..errors import PeerTimeoutError, VoicelabError
from .ua import UserAgent

__all__ = ["AsyncUserAgent", "describe_send_error"]

log = logging.getLogger("voicelab.calls")


def describe_send_error(exc: BaseException) -> str:
    """A one-line cause of a failed send: ``"connection refused"``, ``"TLS certificate not trusted: ..."``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message or exc.reason}); pass the CA that signed it (--ca-file)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    if isinstance(exc, asyncio.TimeoutError):
        return "connecting timed out"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


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
        self.capture = capture  # (time, src, dst, bytes[, "tcp"]) of every message, for pcap
        self._stream = ("tcp",) if getattr(transport, "reliable", False) else ()  # SIP on a stream: pcap as TCP
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # the deadline self._timer was scheduled for (its when())
        self._sends: set[asyncio.Task] = set()
        #: messages the transport could not send (requests fail their transaction with
        #: the cause; responses are counted), and the last cause
        self.send_failures = 0
        self.last_send_failure: str | None = None
        self._closed = False
        #: Optional synchronous event handler: called with each event after a flush (the
        #: timer re-armed, the datagrams sent); returns True when it handled the event,
        #: False to queue it on :attr:`events`. Saves a task wake-up per event for hosts
        #: whose handling never awaits (the agent's signalling-only mode).
        self.on_event: Callable[[Any], bool] | None = None
        #: Seconds (>= 0) the UA's timers may run late so that deadlines falling in the
        #: same slot of this width fire in one loop callback (deadlines are rounded up to
        #: the slot grid). 0 (default): each deadline on time. A server at hundreds of
        #: calls/s has thousands of transaction deadlines a second (RFC 3261 Timers
        #: G-L, 32 s after each call); 10 ms (2 % of T1) makes them 100 callbacks/s.
        self.timer_slack = 0.0
        transport.on_message = self._on_message

    def _on_message(self, data: Any, addr: Any, transport: Any) -> None:
        if self.capture is not None:
            self.capture.append((self.loop.time(), tuple(addr[:2]), self.ua.local_addr, bytes(data), *self._stream))
        self.ua.receive(bytes(data), tuple(addr[:2]), self.loop.time())
        self.flush()

    def flush(self) -> None:
        """Send what the UA queued, deliver its events, re-arm its timer."""
        if self._closed:
            return
        send_now = getattr(self.transport, "send_now", None)  # UDP: a datagram needs no task
        for data, addr in self.ua.datagrams_to_send():
            addr = tuple(addr[:2])
            if self.capture is not None:
                self.capture.append((self.loop.time(), self.ua.local_addr, addr, data, *self._stream))
            try:
                if send_now is not None and send_now(data, addr):
                    continue
            except VoicelabError:  # reported with its cause by the task path below
                pass
            task = self.loop.create_task(self.transport.send(data, addr))
            self._sends.add(task)
            task.add_done_callback(lambda t, d=data, a=tuple(addr[:2]): self._sent(t, d, a))
        handler = self.on_event
        now_events = []
        while (ev := self.ua.next_event()) is not None:
            if handler is None:
                self.events.put_nowait(ev)
            else:
                now_events.append(ev)
        nt = self.ua.next_timer()
        slack = self.timer_slack
        if slack and nt is not None:
            slot = math.ceil(nt / slack) * slack
            nt = slot if slot >= nt else slot + slack  # (never before the deadline, whatever the rounding)
        timer = self._timer
        if timer is not None and (nt is None or self._timer_at != nt):
            timer.cancel()
            self._timer = timer = None
        if nt is not None and timer is None:
            self._timer = self.loop.call_at(nt, self._on_timer)
            self._timer_at = nt
        for ev in now_events:  # after the flush: a handler may answer (and flush) at once
            if not handler(ev):
                self.events.put_nowait(ev)

    def _sent(self, task: asyncio.Task, data: bytes, addr: tuple) -> None:
        """A send finished: a failure fails the request's transaction (RFC 3261 8.1.3.1)
        or counts the undeliverable response, logged in one line, never a traceback."""
        self._sends.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved: no "Task exception was never retrieved"
        if exc is None or self._closed:
            return
        reason = describe_send_error(exc)
        self.send_failures += 1
        self.last_send_failure = f"{addr[0]}:{addr[1]}: {reason}"
        try:
            what = self.ua.transport_error(data, addr, reason, self.loop.time())
        except VoicelabError:
            what = None
        if self.send_failures <= 10 or self.send_failures % 100 == 0:  # one line each, rate-limited
            log.warning("SIP %s to %s:%s not sent: %s (%d send failures so far)", what or "message", addr[0], addr[1],
                        reason, self.send_failures)
        self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        self.ua.handle_timer(self.loop.time())
        self.flush()

    async def wait_for(self, *types: type, timeout: float = 10.0, what: str | None = None) -> Any:
        """The next event of one of ``types`` (others are skipped).

        Raises
        ------
        PeerTimeoutError
            None arrived within ``timeout`` seconds; the message says ``what`` was
            awaited (e.g. ``"an answer to the INVITE"``), not the event classes.
        """
        async def _get():
            while True:
                ev = await self.events.get()
                if isinstance(ev, types):
                    return ev

        try:
            return await asyncio.wait_for(_get(), timeout)
        except asyncio.TimeoutError:
            raise PeerTimeoutError(f"no {what or _describe(types)} within {timeout:g} s: the peer did not answer") from None

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
        await self.transport.close()


_EVENT_WORDS = {"CallEstablished": "answer", "CallFailed": "final response", "CallEnded": "end of the call (BYE answered)",
                "OptionsAnswered": "answer to OPTIONS", "CallCancelled": "answer to our CANCEL"}


def _describe(types: tuple) -> str:
    words = []
    for t in types:
        w = _EVENT_WORDS.get(t.__name__, t.__name__)
        if w not in words:
            words.append(w)
    return " or ".join(words)
