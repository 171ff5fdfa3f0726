"""The native media engine: a C thread plays the steady state of G.711 echo, play and record streams.

Why. On a process woken every 20 ms, CPython pays about 100-300 us per wake-up before it
does any work (docs/benchmarks.md, "Where one call's CPU goes"): for one call that alone
is about what baresip's whole call costs. baresip and pjmedia run their media in a native
thread. This engine does the same for the part of a call that needs no decision: a G.711
echo stream whose packets arrive in sequence and in time.

How. A stream hands itself over at the end of a played slot once it is *steady* (see
:meth:`LiveAudioStream._native_steady`): fixed jitter buffer, G.711, echo mode, no SRTP,
capture, tap or hooks, RTP sent straight to its socket, and the packets it holds the next
of a gap-free sequence. From then on the engine's thread (``voicelab/rtp/_mediac.c``), at
each slot (the stream's own slot times, computed as the stream computes them): sends the
datagram built in the previous slot, reads the socket (kernel receive timestamps), plays
the next packet of the sequence if it arrived by the slot time, and builds the next echo
datagram from it with the codec's own tables. Anything else (a missing, late, reordered,
duplicated or foreign datagram, another payload size or type, a marker bit, a send that
would block) makes it stop at that slot and hand the stream back ("bail").

Play and record streams (a prompt from :meth:`LiveAudioStream.send`, silence from
``send_live("silence")``) run in *queue mode*: their outgoing frames do not depend on what
arrives, so Python hands the thread the next datagrams (built as the Python path builds
them) and the stream's send clock, and tops the queue up at each replay; the thread sends
one per send slot, and plays the arriving packets as for an echo (nothing to build). The
last datagram of a prompt ends the sends (the stream goes on receiving); a queue that runs
dry, or a send that would block, hands the stream back. The replay builds each frame again
and compares it with the datagram the thread sent.

Python keeps the state. The thread logs what it did, in order (each datagram read with its
arrival time, each send with its time, each slot played with the datagram it built); when
woken (an ``eventfd`` on the event loop: every ``threshold_slots`` slots, or at once on a
bail) Python replays the log through the stream's own objects: RTP session, jitter buffer,
decoder and PLC, packetizer, recordings and statistics. The stream's state is therefore
the pure-Python path's state for the same arrivals and send times, by construction, and
each datagram the thread built is compared with the one the replay builds
(:attr:`LiveAudioStream.native_mismatches`, 0 unless something is wrong: the stream then
returns to Python). Reading a stream's recordings or statistics first replays what is
pending (:meth:`LiveAudioStream._native_sync`).

What differs from the Python path: sends happen at the slot time on the native clock
(not up to ``MediaPacer.early`` before it), datagrams are read in the slot (as with
``read_in_tick``, with kernel timestamps), and the Python process wakes a few times a
second instead of 50-100 times per call.

The engine is optional (``pip install`` builds it when a C compiler is there;
``VOICELAB_NO_EXTENSIONS=1`` disables it) and opt-in per loop
(:meth:`voicelab.rtp.pacer.MediaPacer.enable_native`, ``voicelab agent serve --native-media``).
It never runs on a virtual clock. This module is an asyncio adapter.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any

from ..errors import ParameterError, ToolUnavailableError
from ..net.vclock import is_virtual

__all__ = ["AVAILABLE", "NativeMedia", "DEFAULT_THRESHOLD_SLOTS", "DEFAULT_STALE_SLOTS"]

if os.environ.get("VOICELAB_NO_EXTENSIONS", "") not in ("", "0"):
    _mediac = None
else:
    try:
        from . import _mediac  # type: ignore[attr-defined, no-redef]
    except ImportError:  # pragma: no cover - built by pip install when a compiler is there
        _mediac = None

#: True when the native engine is built and not disabled (``VOICELAB_NO_EXTENSIONS``)
AVAILABLE: bool = _mediac is not None

#: slots a stream's log may hold before the thread wakes Python to replay it (25: 0.5 s of
#: 20 ms slots; Python then wakes about twice a second however many streams run)
DEFAULT_THRESHOLD_SLOTS = 25
#: slots without a replay after which the thread stops playing a stream and leaves it to
#: Python (500: 10 s of 20 ms slots): the loop stalled, or the stream was dropped unclosed
DEFAULT_STALE_SLOTS = 500


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[bytes, bytes, bytes, bytes]:
    from ..codecs import g711

    return (g711._ULAW_DEC.astype("<i2").tobytes(), g711._ULAW_ENC_U16.astype("u1").tobytes(),
            g711._ALAW_DEC.astype("<i2").tobytes(), g711._ALAW_ENC_U16.astype("u1").tobytes())


class NativeMedia:
    """The native engine of one event loop (see the module docstring).

    The thread and its ``eventfd`` exist while at least one stream is played natively:
    made at the first hand-over, closed when the last stream leaves.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop
        A real-time loop whose clock is ``CLOCK_MONOTONIC`` (asyncio's default).
    threshold_slots : int, optional
        Slots a stream's log may hold before Python is woken to replay it.
    stale_slots : int, optional
        Slots without a replay after which the thread stops playing a stream (Python's
        loop stalled, or the stream was dropped without ``close()``); Python plays it again
        when it replays the log.

    Raises
    ------
    ToolUnavailableError
        When the engine is not built (:data:`AVAILABLE`).
    ParameterError
        When the loop is virtual or its clock is not the monotonic clock
        (:meth:`voicelab.rtp.pacer.MediaPacer.enable_native` returns False instead).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, threshold_slots: int = DEFAULT_THRESHOLD_SLOTS,
                 stale_slots: int = DEFAULT_STALE_SLOTS) -> None:
        if _mediac is None:
            raise ToolUnavailableError("the native media engine is not built: install gcc and libc6-dev (Debian) and "
                                       "reinstall voicelab, and unset VOICELAB_NO_EXTENSIONS")
        if is_virtual(loop):
            raise ParameterError("the native media engine runs on the real clock, not a virtual one")
        self.loop = loop
        self.threshold_slots = int(threshold_slots)
        self.stale_slots = int(stale_slots)
        self.engine: Any = None
        self.offset = 0.0
        self.streams: dict[int, Any] = {}
        #: times Python was woken to replay logs
        self.wakeups = 0
        self.closed = False
        self._totals: dict[str, int] = {}
        self._start()  # checks the clock now; the thread itself starts at the first hand-over
        self._stop()

    def _start(self) -> None:
        engine = _mediac.Engine(*_tables())
        offset = self.loop.time() - engine.now()
        if abs(offset) > 0.01:
            engine.close()
            raise ParameterError("the loop's clock is not CLOCK_MONOTONIC: the native engine cannot keep its time")
        self.engine, self.offset = engine, offset
        self.loop.add_reader(engine.fileno(), self._on_signal)

    def _stop(self) -> None:
        engine, self.engine = self.engine, None
        if engine is None:
            return
        for key, value in engine.stats().items():
            if key != "streams":
                self._totals[key] = self._totals.get(key, 0) + value
        try:
            self.loop.remove_reader(engine.fileno())
        except (RuntimeError, ValueError, OSError):  # the loop is closed already
            pass
        engine.close()

    def attach(self, stream: Any, **params: Any) -> int:
        """Serve ``stream`` from its next slot on (parameters: ``_mediac.Engine.add``); returns its id."""
        if self.closed:
            raise OSError("the native media engine is closed")
        if self.engine is None:
            self._start()
        try:
            sid = int(self.engine.add(threshold=self.threshold_slots, stale=self.stale_slots, offset=self.offset, **params))
        except BaseException:
            if not self.streams:
                self._stop()
            raise
        self.streams[sid] = stream
        return sid

    def feed(self, sid: int, datagrams: list, end: bool = False) -> bool:
        """Queue more datagrams for stream ``sid`` to send (queue mode), ``end`` when the last one is among them.

        Returns False when the stream is no longer served (it bailed; its log says so).
        """
        return bool(self.engine.feed(sid, datagrams, bool(end))) if self.engine is not None else False

    def drain(self, sid: int) -> list:
        """The log of stream ``sid`` so far (the engine forgets a stream once its bail is drained)."""
        return self.engine.drain(sid) if self.engine is not None else []

    def detach(self, sid: int) -> list:
        """Stop serving stream ``sid`` (the thread no longer touches it) and return the rest of its log."""
        records = self.engine.remove(sid) if self.engine is not None else []
        self.forget(sid)
        return records

    def forget(self, sid: int) -> None:
        """The stream left the engine (it bailed): no more replays for it; the last one out stops the thread."""
        self.streams.pop(sid, None)
        if not self.streams:
            self._stop()

    def stats(self) -> dict:
        """The thread's counters (ticks, slots played, sends, reads, bails, signals; streams now) and Python's wake-ups."""
        d = dict(self._totals)
        for key, value in (self.engine.stats() if self.engine is not None else {"streams": 0}).items():
            d[key] = d.get(key, 0) + value
        d["python_wakeups"] = self.wakeups
        return d

    def _on_signal(self) -> None:
        if self.engine is None:
            return
        self.engine.ack()
        self.wakeups += 1
        for sid, stream in list(self.streams.items()):
            try:
                stream._native_sync()
            except Exception as exc:  # noqa: BLE001 - one stream's error must not stop the others
                self.loop.call_exception_handler({"message": "replaying a native media log failed", "exception": exc})

    def close(self) -> None:
        """Stop the thread and close its descriptors; streams still served are returned to Python first."""
        if self.closed:
            return
        self.closed = True
        for stream in list(self.streams.values()):
            stream._native_detach()
        self._stop()
