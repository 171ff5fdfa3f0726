"""One media pacer per event loop: a single timer drives every live stream's clock.

Each :class:`~voicelab.rtp.live.LiveAudioStream` has periodic work: a playout slot every
frame (which also sends the echo of the previous slot), a send tick every frame when it
plays a source, and an RTCP report every few seconds. With one asyncio timer per job, N
calls cost N timer handles in the loop's heap and, when their phases differ, up to N
loop wake-ups (``epoll_wait`` plus a process wake-up) per 20 ms. pjmedia's conference
bridge and baresip's audio thread do the opposite: one clock tick services every port.

:class:`MediaPacer` is that clock for an asyncio loop. Streams hand it ``(when,
callback)`` jobs; it keeps them in one heap and arms *one* loop timer, at the earliest
deadline (``early`` seconds ahead, as the per-stream timers were: asyncio's selector
rounds a timeout up to whole milliseconds). When it fires, it runs every job already due,
in deadline order (FIFO at equal deadlines), in that one loop iteration.

A job may return a callable: its *second phase*, run after the first phase of every job
due in the tick. A playout slot uses it to send (the time-critical part: a datagram built
in the previous slot, and only the socket send) for every stream first, and to count that
packet, decode and conceal afterwards, so that the k-th stream's send waits only for
k - 1 socket sends, not for k - 1 decoders or k - 1 streams' bookkeeping.

Batching needs streams whose deadlines coincide. :meth:`MediaPacer.align` rounds a
stream's clock origin (its playout start, the start of a paced source) *up* to the
pacer's tick grid (``tick_s``, default :data:`DEFAULT_TICK_S` on a real-time loop): all
20 ms streams then fall due on at most ``20 / tick_s`` phases, and the pacer wakes the
loop at most that often per frame, whatever the number of calls. The cost is at most
``tick_s`` of extra playout delay, paid once per stream. On a virtual-clock loop
(:mod:`voicelab.net.vclock`) the grid is off by default (``tick_s = 0``): wake-ups cost
nothing there, and streams keep their exact times, so simulated results do not depend on
the pacer.

**Reading in the tick** (``read_in_tick``, off by default: an experimental capacity setting). Normally a
stream's socket is read by the event loop as each datagram arrives: one more loop wake-up
per received packet, unless the loop happens to be awake. With ``read_in_tick`` a playing
stream stops the loop from watching its RTP socket and drains it in its own playout job,
after the tick's sends and just before it pops its jitter buffer: the process then wakes
only on the pacer's ticks (one per frame with a 20 ms grid, whatever the number of calls).
Each datagram keeps its true arrival time (the kernel's receive timestamp,
``SO_TIMESTAMPNS``, moved onto the loop clock), so the jitter buffer, RTCP jitter and RTT
see what they saw before; what waits (up to one frame) is the *handling* of a packet:
``on_packet`` and tap callbacks, and RTCP reports on the RTP socket, run at the stream's
next slot instead of on arrival (:class:`~voicelab.rtp.live.LiveAudioStream`).

What the per-stream timers did in a loop stall is kept: a tick runs the jobs due when it
started, once each, in order; jobs those callbacks schedule (the next slot) wait for the
next loop iteration even when they are already due, so received datagrams are read
between catch-up slots exactly as before: no slot is skipped, none runs twice, and
nothing runs before its deadline minus ``early``.

This module is an asyncio adapter (it reads only ``loop.time()``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import os
import weakref
from typing import Any, Callable

from ..errors import ParameterError, VoicelabError
from ..net.vclock import early_s, is_virtual

__all__ = ["MediaPacer", "PacerJob", "DEFAULT_TICK_S", "pacer_for"]

#: Tick grid of a real-time loop's pacer, seconds: stream clocks start on multiples of it,
#: so 20 ms streams share at most 20 wake-ups per frame (at most 1 ms of extra playout
#: delay) however many calls run. A coarser grid wakes the loop less often but makes the
#: streams of one tick wait for each other: the k-th job of a tick starts after the work
#: of the k - 1 before it (see docs/benchmarks.md, "Concurrent PCMU calls").
DEFAULT_TICK_S = 0.001

_PACERS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaPacer]" = weakref.WeakKeyDictionary()


class PacerJob:
    """A scheduled callback of a :class:`MediaPacer` (like :class:`asyncio.TimerHandle`)."""

    __slots__ = ("when", "callback", "arg", "cancelled")

    def __init__(self, when: float, callback: Callable[[Any], Any], arg: Any) -> None:
        self.when = when
        self.callback = callback
        self.arg = arg
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run it (it leaves the heap when its deadline comes)."""
        self.cancelled = True


class MediaPacer:
    """Runs timed media jobs of many streams from one event-loop timer.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop
    tick_s : float, optional
        Grid that :meth:`align` rounds stream clocks up to, seconds; 0 switches
        alignment off. Default: :data:`DEFAULT_TICK_S` on a real-time loop, 0 on a
        virtual clock.
    read_in_tick : bool, optional
        Playing streams read their RTP socket in their playout job instead of on each
        datagram's arrival (default False; see the module's docstring).
    early : float, optional
        How far ahead of a deadline the loop timer is armed, seconds (default
        :func:`voicelab.net.vclock.early_s`: 0.5 ms real, 0 virtual). A job runs when
        ``loop.time() >= when - early``.

    Attributes
    ----------
    wakeups : int
        Loop timer firings so far.
    jobs_run : int
        Jobs run so far (``jobs_run / wakeups`` is the batching factor).
    reads_in_tick : int
        Datagrams the loop's streams read in their ticks (``read_in_tick``) so far.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, tick_s: float | None = None, early: float | None = None,
                 read_in_tick: bool = False) -> None:  # fmt: skip
        self.loop = loop
        #: playing streams drain their RTP socket in their playout job (a capacity setting)
        self.read_in_tick = bool(read_in_tick)
        self._rx_buffer: memoryview | None = None
        self.early = early_s(loop) if early is None else float(early)
        if tick_s is None:
            tick_s = 0.0 if is_virtual(loop) else DEFAULT_TICK_S
        self.tick_s = tick_s
        self._heap: list[tuple[float, int, PacerJob]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None  # deadline the loop timer is armed for
        self._ticking = False  # inside _tick: it arms the timer once at its end
        self.wakeups = 0
        self.jobs_run = 0
        self.reads_in_tick = 0
        #: the loop's native media engine (:meth:`enable_native`), None: every slot runs here
        self.native: Any = None

    @property
    def tick_s(self) -> float:
        """Alignment grid, seconds (0: off)."""
        return self._tick_s

    @tick_s.setter
    def tick_s(self, value: float) -> None:
        v = float(value)
        if not v >= 0 or v == float("inf"):
            raise ParameterError(f"pacer tick_s must be seconds >= 0, got {value!r}")
        self._tick_s = v

    def rx_buffer(self) -> memoryview:
        """One receive buffer (64 KiB, any UDP datagram fits) shared by the streams of this loop.

        Streams reading in the tick receive into it (``recvmsg_into``) and copy out only
        the bytes that arrived: no 64 KiB allocation per datagram.
        """
        if self._rx_buffer is None:
            self._rx_buffer = memoryview(bytearray(65536))
        return self._rx_buffer

    def __len__(self) -> int:
        """Jobs in the heap (cancelled ones included until their deadline)."""
        return len(self._heap)

    def align(self, t: float) -> float:
        """``t`` rounded up to the tick grid (``t`` itself when the grid is off), seconds."""
        q = self._tick_s
        if q <= 0:
            return t
        return math.ceil(t / q - 1e-9) * q

    def schedule(self, when: float, callback: Callable[[Any], Any], arg: Any = None) -> PacerJob:
        """Run ``callback(arg)`` at loop time ``when`` (seconds); returns the cancellable job.

        When the callback returns a callable, that is called (no argument) after the
        first phase of every job due in the same tick.
        """
        job = PacerJob(when, callback, arg)
        heapq.heappush(self._heap, (when, next(self._seq), job))
        if not self._ticking and (self._armed_for is None or when < self._armed_for):
            self._arm(when)
        return job

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_for = when
        self._handle = self.loop.call_at(when - self.early, self._tick)

    def _tick(self) -> None:
        self._handle, self._armed_for = None, None
        self._ticking = True
        self.wakeups += 1
        heap = self._heap
        limit = self.loop.time() + self.early + 1e-9
        due = []
        while heap and heap[0][0] <= limit:
            due.append(heapq.heappop(heap)[2])
        later = []
        try:
            for job in due:
                if job.cancelled:
                    continue
                job.cancelled = True  # ran: a late cancel() is harmless
                self.jobs_run += 1
                try:
                    rest = job.callback(job.arg)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:  # noqa: BLE001 - one stream's error must not stop the others
                    self._report(job.callback, exc)
                else:
                    if rest is not None:
                        later.append(rest)
            for rest in later:  # second phases, once every due job's first phase is done
                try:
                    rest()
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:  # noqa: BLE001
                    self._report(rest, exc)
        finally:
            self._ticking = False
            while heap and heap[0][2].cancelled:
                heapq.heappop(heap)
            if heap:
                self._arm(heap[0][0])


    def enable_native(self, *, threshold_slots: int | None = None) -> bool:
        """Let steady G.711 echo streams of this loop be played by the native engine.

        See :mod:`voicelab.rtp.native`. Returns False (and changes nothing) where the
        engine is not built, disabled (``VOICELAB_NO_EXTENSIONS=1``) or cannot keep this
        loop's time (a virtual clock, a loop whose clock is not ``CLOCK_MONOTONIC``).
        """
        if self.native is not None and not self.native.closed:
            return True
        from .native import AVAILABLE, DEFAULT_THRESHOLD_SLOTS, NativeMedia

        if not AVAILABLE or is_virtual(self.loop):
            return False
        try:
            self.native = NativeMedia(self.loop, threshold_slots=threshold_slots or DEFAULT_THRESHOLD_SLOTS)
        except VoicelabError:
            return False
        return True

    def disable_native(self) -> None:
        """Play every slot in Python again (streams the engine plays are taken back first)."""
        native, self.native = self.native, None
        if native is not None:
            native.close()

    def _report(self, fn: Any, exc: BaseException) -> None:
        self.loop.call_exception_handler({"message": f"exception in media pacer job {fn!r}", "exception": exc})


def pacer_for(loop: asyncio.AbstractEventLoop) -> MediaPacer:
    """The :class:`MediaPacer` of ``loop`` (made on first use; one per loop).

    ``VOICELAB_NATIVE_MEDIA=1`` in the environment enables the native media engine
    (:meth:`MediaPacer.enable_native`) on every real-time loop's pacer.
    """
    p = _PACERS.get(loop)
    if p is None:
        p = _PACERS[loop] = MediaPacer(loop)
        if os.environ.get("VOICELAB_NATIVE_MEDIA", "") not in ("", "0"):
            p.enable_native()
    return p
