"""A virtual-clock asyncio event loop: voicelab's own stacks faster than real time.

:class:`VirtualClockLoop` is an ordinary asyncio selector event loop whose clock
(``loop.time()``) is virtual. Whenever the loop has nothing to run now and would
otherwise sleep until its next timer, it *jumps* the clock to that timer instead. A 60 s
exchange of 20 ms RTP packets therefore takes as long as the CPU needs for the packets,
not 60 s, and every run of the same scenario sees exactly the same times.

Everything that keeps time on the loop clock works unchanged: ``asyncio.sleep``,
``wait_for``, ``asyncio.timeout``, ``call_later`` / ``call_at``. This covers voicelab's
own stacks (SIP transactions, :class:`~voicelab.rtp.live.LiveAudioStream`, the virtual
network), which by the architecture's "one clock" rule read only ``loop.time()``. It does
not cover code that reads the wall clock (``time.time()``, ``time.monotonic()``) or runs
its own threads, such as aiortc's media pacing: run that on a real-time loop.

Rules of the virtual clock
--------------------------
* The clock starts at ``start`` (0.0 by default) and only moves forward, and only when
  nothing is ready to run: callbacks take zero virtual time.
* Timers due at the same instant run in the order they were scheduled (FIFO). asyncio's
  own timer heap compares deadlines only, so equal deadlines may come out in any order;
  here each timer also carries a sequence number. Together with seeded randomness this
  makes two runs of one scenario produce identical event sequences.
* Work handed to an executor (``run_in_executor``, ``asyncio.to_thread``,
  ``getaddrinfo``) is waited for in real time with the clock *frozen*: the loop never
  jumps past pending executor work, so executor work takes zero virtual time, whatever
  the CPU speed. Futures resolved by other threads can be registered with
  :meth:`VirtualClockLoop.hold_clock` to get the same treatment.
* Real file descriptors still work (the loop's own self-pipe is one): they are polled on
  every iteration and, when no timer is scheduled at all, waited on in real time. While
  timers are pending the clock jumps without waiting for real I/O, so timing against a
  real peer in another process means nothing on this loop.
* Deadlock detection: when nothing is ready, no timer is scheduled, no executor work is
  pending and no real I/O is registered, the program can only be woken by another
  thread. The loop waits ``stall_timeout`` real seconds for that and then raises
  :class:`~voicelab.errors.VoicelabError` naming the tasks that wait forever, instead of
  hanging. ``max_time`` optionally bounds the virtual clock (a guard against timers that
  re-arm forever while the awaited result never comes).
* In debug mode asyncio's slow-callback warning measures callbacks on ``loop.time()``,
  which does not move during a callback here; the loop instead logs a warning when one
  iteration ran callbacks for more than ``slow_callback_duration`` *real* seconds (a
  ``time.sleep`` or blocking I/O inside a coroutine: the virtual clock did not advance
  during it).

Why our own: asyncio has no virtual clock, and the packages that fake one are test
tools that patch an existing loop (``looptime``, a pytest plugin; ``aiofastforward``,
which patches ``loop.time``/``call_at``/``asyncio.sleep`` and moves time by hand). The
lab needs a loop object it can pass in (the clock is injected, never patched), that runs
whole scenarios outside pytest, with FIFO order at equal deadlines and a deadlock error.
The loop is the standard selector loop with two small overrides (``time`` and
``call_at``) and a selector wrapper; asyncio's scheduling code is reused as it is.

This module is an I/O adapter, like :mod:`voicelab.net.iface`: it imports
:mod:`asyncio` and reads the wall clock (only to measure speed-up and to bound real
waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import math
import os
import selectors
import time as _time
from typing import Any, Coroutine, Iterator, TypeVar

from ..errors import ParameterError, VoicelabError

__all__ = [
    "VirtualClockLoop",
    "run_virtual",
    "run_virtual_in_thread",
    "virtual_time",
    "is_virtual",
    "WallRatio",
    "wall_ratio",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: asyncio caps one select() timeout at a day; a longer sleep is jumped in one-day steps.
_MAX_SELECT_TIMEOUT = 24 * 3600.0


def _check_time(value: Any, name: str, *, allow_none: bool = False, positive: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number of seconds, got {value!r}")
    if positive and value <= 0:
        raise ParameterError(f"{name} must be > 0 seconds, got {value!r}")
    if not positive and value < 0:
        raise ParameterError(f"{name} must be >= 0 seconds, got {value!r}")
    return float(value)


class _OrderedTimerHandle(asyncio.TimerHandle):
    """A timer handle ordered by (deadline, scheduling sequence): FIFO at equal deadlines."""

    __slots__ = ("_seq",)

    def __init__(self, when: float, callback: Any, args: tuple, loop: Any, context: Any, seq: int) -> None:
        super().__init__(when, callback, args, loop, context)
        self._seq = seq

    # The heap compares handles on every push and pop: keep these lean. A plain
    # TimerHandle (not scheduled through our call_at; should not happen) sorts first at a tie.
    def __lt__(self, other: Any) -> bool:
        try:
            w, ow = self._when, other._when
        except AttributeError:
            return NotImplemented
        return w < ow if w != ow else self._seq < getattr(other, "_seq", -1)

    def __gt__(self, other: Any) -> bool:
        try:
            w, ow = self._when, other._when
        except AttributeError:
            return NotImplemented
        return w > ow if w != ow else self._seq > getattr(other, "_seq", -1)

    def __le__(self, other: Any) -> bool:
        r = self.__gt__(other)
        return r if r is NotImplemented else not r

    def __ge__(self, other: Any) -> bool:
        r = self.__lt__(other)
        return r if r is NotImplemented else not r


class _VirtualSelector(selectors.BaseSelector):
    """Wraps a real selector; where the loop would sleep, it jumps the virtual clock.

    asyncio's loop asks its selector to wait ``timeout`` seconds (0: poll, None: until
    I/O, else: until the next timer). That single call is where a real loop sleeps, so
    it is the one place the virtual clock needs to move.
    """

    def __init__(self, inner: selectors.BaseSelector) -> None:
        self._inner = inner
        self._loop: VirtualClockLoop | None = None
        self._internal: frozenset = frozenset()
        self._left_at: float | None = None  # wall clock when the last select returned

    def attach(self, loop: "VirtualClockLoop") -> None:
        self._loop = loop
        # what the loop registered for itself (its self-pipe) is not "real I/O" of the program
        self._internal = frozenset(self._inner.get_map().keys())

    # -- delegation ---------------------------------------------------------------------
    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:  # noqa: D102
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:  # noqa: D102
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:  # noqa: D102
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:  # noqa: D102
        return self._inner.get_key(fileobj)

    def get_map(self) -> Any:  # noqa: D102
        return self._inner.get_map()

    def close(self) -> None:  # noqa: D102
        self._inner.close()

    def has_real_io(self) -> bool:
        """True when the program registered file descriptors beyond the loop's own."""
        return any(fd not in self._internal for fd in self._inner.get_map().keys())

    # -- the one place a loop sleeps --------------------------------------------------------
    def select(self, timeout: float | None = None) -> list:  # noqa: D102
        loop = self._loop
        if loop is None:  # before attach (never in practice): behave like the real selector
            return self._inner.select(timeout)
        if loop._debug and self._left_at is not None:
            busy = _time.perf_counter() - self._left_at
            if busy >= loop.slow_callback_duration:
                logger.warning(
                    "virtual-clock loop: callbacks ran %.3f s of real time at virtual time %.6f s without "
                    "the clock moving (a blocking call such as time.sleep inside a coroutine?)", busy, loop.time(),
                )
        try:
            return self._select(loop, timeout)
        finally:
            self._left_at = _time.perf_counter()

    def _select(self, loop: "VirtualClockLoop", timeout: float | None) -> list:
        if timeout is not None and timeout <= 0:
            return self._inner.select(0)
        # nothing is ready: a real loop would sleep now. First take any real I/O that is there.
        ready = self._inner.select(0)
        if ready:
            return ready
        if loop._holding():
            # executor work (or a held future) pending: wait for it in real time, clock frozen
            loop.real_waits += 1
            return self._inner.select(None)
        if timeout is not None:
            loop._jump(timeout)
            return []
        # no timer at all
        if self.has_real_io() or loop.stall_timeout is None:
            loop.real_waits += 1
            return self._inner.select(None)
        ready = self._inner.select(loop.stall_timeout)  # only another thread can wake us now
        if ready:
            return ready
        raise VoicelabError(loop._stall_message())


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose clock jumps to the next timer instead of sleeping.

    Parameters
    ----------
    start : float, default 0.0
        Virtual time at creation, seconds (``loop.time()`` answers this until the first
        jump).
    stall_timeout : float or None, default 2.0
        Real seconds to wait for another thread to wake the loop when nothing is ready,
        no timer is scheduled, no executor work is pending and no real I/O is registered.
        After that the loop raises :class:`~voicelab.errors.VoicelabError` (deadlock).
        ``None`` waits forever, as a real loop does (e.g. a loop in a thread that other
        threads feed with ``call_soon_threadsafe``).
    max_time : float or None, default None
        Virtual time, seconds, the clock may not pass: a jump beyond it raises
        :class:`~voicelab.errors.VoicelabError` (livelock guard). ``None``: no bound.

    Attributes
    ----------
    jumps : int
        How many times the clock jumped forward.
    real_waits : int
        How many times the loop waited in real time (executor work, real I/O).

    Examples
    --------
    >>> import asyncio
    >>> loop = VirtualClockLoop()
    >>> loop.run_until_complete(asyncio.sleep(3600.0))
    >>> loop.time()
    3600.0
    >>> loop.close()

    See Also
    --------
    run_virtual : the ``asyncio.run`` of this loop.
    """

    def __init__(self, *, start: float = 0.0, stall_timeout: float | None = 2.0, max_time: float | None = None) -> None:
        try:
            _loop_factory(start, stall_timeout, max_time)  # checks the options
        except ParameterError:
            self._closed = True  # nothing was opened; keeps BaseEventLoop.__del__ quiet
            raise
        start_f = float(start)
        self.stall_timeout = None if stall_timeout is None else float(stall_timeout)
        self.max_time = None if max_time is None else float(max_time)
        self._now: float = start_f  # type: ignore[assignment]
        self._seq = itertools.count()
        self._held: set[asyncio.Future] = set()
        self._hold_count = 0
        self.jumps = 0
        self.real_waits = 0
        self._base_resolution = 1e-9
        selector = _VirtualSelector(selectors.DefaultSelector())
        super().__init__(selector)
        selector.attach(self)

    # -- the clock --------------------------------------------------------------------------
    def time(self) -> float:
        """The virtual time, seconds."""
        return self._now

    @property
    def _clock_resolution(self) -> float:  # read by asyncio's _run_once
        # timers within one resolution of "now" are due; it must stay above the float
        # spacing at "now", or a timer due exactly now would never count as due
        return max(self._base_resolution, 2.0 * math.ulp(self._now))

    @_clock_resolution.setter
    def _clock_resolution(self, value: float) -> None:  # set by BaseEventLoop.__init__
        self._base_resolution = float(value)

    def _jump(self, timeout: float) -> None:
        """Move the clock to the next timer (``timeout`` is asyncio's wait until it)."""
        sched = self._scheduled  # asyncio's timer heap; its head is not cancelled here
        if sched and timeout < _MAX_SELECT_TIMEOUT:
            target = sched[0].when()  # exact: now + (when - now) may miss it by one ulp
        else:
            target = self._now + timeout
        if self.max_time is not None and target > self.max_time:
            raise VoicelabError(
                f"virtual clock would pass max_time={self.max_time:g} s (next timer at {target:g} s, now "
                f"{self._now:g} s); something keeps re-arming timers while the awaited result never comes, "
                "or raise max_time"
            )
        if target > self._now:
            self._now = target
            self.jumps += 1

    # -- deterministic timers ---------------------------------------------------------------
    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        """Like :meth:`asyncio.loop.call_at`; equal deadlines run in scheduling order."""
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        timer = _OrderedTimerHandle(when, callback, args, self, context, next(self._seq))
        if timer._source_traceback:
            del timer._source_traceback[-1]
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer

    # -- real-time work ---------------------------------------------------------------------
    def hold_clock(self, fut: asyncio.Future) -> asyncio.Future:
        """Do not jump the clock while ``fut`` is pending; returns ``fut``.

        For futures that another thread resolves (through ``call_soon_threadsafe``):
        the loop then waits for them in real time with the clock frozen, instead of
        jumping past them. Executor work is held automatically. Do not hold a future
        that only this loop's own timers resolve: the loop would wait for it forever.
        """
        if not isinstance(fut, asyncio.Future):
            raise ParameterError(f"hold_clock needs an asyncio.Future, got {type(fut).__name__}")
        if not fut.done():
            self._held.add(fut)
            fut.add_done_callback(self._held.discard)
        return fut

    def _holding(self) -> bool:
        if self._hold_count:
            return True
        for f in list(self._held):
            if f.done():
                self._held.discard(f)
            else:
                return True
        return False

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future:
        """Like :meth:`asyncio.loop.run_in_executor`; the clock waits for the result."""
        return self.hold_clock(super().run_in_executor(executor, func, *args))

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        """Like the base method, with the clock frozen while the executor's threads finish."""
        self._hold_count += 1
        try:
            await super().shutdown_default_executor(*args, **kwargs)
        finally:
            self._hold_count -= 1

    # -- deadlock report --------------------------------------------------------------------
    def _stall_message(self) -> str:
        tasks = [t for t in asyncio.all_tasks(self) if not t.done()]
        shown = []
        for t in tasks:
            coro = t.get_coro()
            name = getattr(coro, "__qualname__", None) or repr(coro)
            frame = getattr(coro, "cr_frame", None)
            where = f" at {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}" if frame is not None else ""
            waiter = getattr(t, "_fut_waiter", None)  # what the task awaits (asyncio internals)
            on = f" awaiting {type(waiter).__name__}" if waiter is not None else ""
            shown.append(f"{name}(){where}{on}")
        shown = sorted(shown)[:3]  # all_tasks is a set: sort for a stable message
        more = f" and {len(tasks) - 3} more" if len(tasks) > 3 else ""
        which = ", ".join(shown) + more if shown else "none"
        return (
            f"virtual-clock loop deadlocked at virtual time {self._now:g} s: nothing is ready, no timer is "
            f"scheduled, no executor work or real I/O is pending, and no other thread woke the loop within "
            f"{self.stall_timeout:g} s; {len(tasks)} task(s) wait forever: {which}. Something awaits an event "
            "nobody will set (a peer that was never started, a missing timer); fix that, or pass "
            "stall_timeout=None if another thread feeds this loop"
        )

    def __repr__(self) -> str:
        return f"<VirtualClockLoop time={self._now:g} running={self.is_running()} closed={self.is_closed()}>"


# ---------------------------------------------------------------------------------------
# Running code on it
# ---------------------------------------------------------------------------------------


def is_virtual(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """True when ``loop`` (default: the running loop, if any) has a virtual clock.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop, optional
        Default: the loop running in this thread; False when none is running.

    Examples
    --------
    >>> import asyncio
    >>> async def where():
    ...     return is_virtual()
    >>> run_virtual(where()), asyncio.run(where())
    (True, False)
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
    return isinstance(loop, VirtualClockLoop)


def _no_running_loop(what: str, coro: Any = None) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    if asyncio.iscoroutine(coro):
        coro.close()  # it will never run: no "never awaited" warning on top of the error
    raise ParameterError(
        f"{what} cannot be called while an event loop is running in this thread (e.g. in a notebook "
        "cell); use `await run_virtual_in_thread(coro)` there"
    )


def _loop_factory(start: Any, stall_timeout: Any, max_time: Any) -> Any:
    """A checked ``VirtualClockLoop`` factory (options are checked now, not at first use)."""
    start_f = _check_time(start, "start")
    _check_time(stall_timeout, "stall_timeout", allow_none=True, positive=True)
    mt = _check_time(max_time, "max_time", allow_none=True)
    if mt is not None and mt < start_f:  # type: ignore[operator]
        raise ParameterError(f"max_time ({max_time!r} s) is before start ({start!r} s)")
    return functools.partial(VirtualClockLoop, start=start, stall_timeout=stall_timeout, max_time=max_time)


@contextlib.contextmanager
def virtual_time(
    *, start: float = 0.0, debug: bool = False, stall_timeout: float | None = 2.0, max_time: float | None = None,
) -> Iterator[asyncio.Runner]:
    """An :class:`asyncio.Runner` on a fresh :class:`VirtualClockLoop`, closed on exit.

    Several ``runner.run(coro)`` calls share one loop and its clock. On exit leftover
    tasks are cancelled, async generators and the default executor shut down and the
    loop closed, as :func:`asyncio.run` does.

    Parameters
    ----------
    start, stall_timeout, max_time
        As for :class:`VirtualClockLoop` (seconds).
    debug : bool, default False
        asyncio debug mode.

    Yields
    ------
    asyncio.Runner
        ``runner.get_loop()`` is the virtual-clock loop.

    Examples
    --------
    >>> import asyncio
    >>> with virtual_time() as runner:
    ...     runner.run(asyncio.sleep(10.0))
    ...     runner.run(asyncio.sleep(5.0))
    ...     runner.get_loop().time()
    15.0
    """
    _no_running_loop("virtual_time()")
    factory = _loop_factory(start, stall_timeout, max_time)
    with asyncio.Runner(debug=bool(debug), loop_factory=factory) as runner:  # as asyncio.run(debug=False)
        yield runner


def run_virtual(
    coro: Coroutine[Any, Any, T], *, start: float = 0.0, debug: bool = False,
    stall_timeout: float | None = 2.0, max_time: float | None = None,
) -> T:
    """Run a coroutine on a fresh :class:`VirtualClockLoop` and close it (like :func:`asyncio.run`).

    Parameters
    ----------
    coro : coroutine
        The coroutine object (``main()``, not ``main``).
    start : float, default 0.0
        Virtual time at start, seconds.
    debug : bool, default False
        asyncio debug mode (plus the real-time slow-iteration warning).
    stall_timeout, max_time : float or None
        As for :class:`VirtualClockLoop` (seconds).

    Returns
    -------
    The coroutine's result.

    Raises
    ------
    ParameterError
        ``coro`` is not a coroutine, an option is out of range, or a loop is already
        running in this thread.
    VoicelabError
        The program deadlocked (see :class:`VirtualClockLoop`) or passed ``max_time``.

    Examples
    --------
    >>> import asyncio
    >>> async def main():
    ...     await asyncio.sleep(3600.0)
    ...     return asyncio.get_running_loop().time()
    >>> run_virtual(main())
    3600.0
    """
    if not asyncio.iscoroutine(coro):
        raise ParameterError(
            f"run_virtual needs a coroutine object, got {type(coro).__name__}; call the async function: run_virtual(main())"
        )
    _no_running_loop("run_virtual()", coro)
    try:
        _loop_factory(start, stall_timeout, max_time)
    except ParameterError:
        coro.close()
        raise
    with virtual_time(start=start, debug=debug, stall_timeout=stall_timeout, max_time=max_time) as runner:
        return runner.run(coro)


async def run_virtual_in_thread(coro: Coroutine[Any, Any, T], **options: Any) -> T:
    """Await :func:`run_virtual` from inside a running loop (a notebook cell, a server).

    The virtual-clock loop runs in a worker thread of the current loop's default
    executor; ``options`` are those of :func:`run_virtual`.

    Examples
    --------
    In a Jupyter cell (which already runs an event loop)::

        result = await run_virtual_in_thread(main())
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(run_virtual, coro, **options))


# ---------------------------------------------------------------------------------------
# How much faster than real time
# ---------------------------------------------------------------------------------------


class WallRatio:
    """Loop time and wall time elapsed over a stretch of code: how much faster than real time.

    Use as a context manager (or call :meth:`start` / :meth:`stop`). Works on any loop; on
    a real-time loop the two durations are about equal.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop, optional
        The loop whose clock counts as "virtual"; default: the running loop at
        :meth:`start`.

    Attributes
    ----------
    virtual_s : float
        Loop-clock seconds elapsed.
    wall_s : float
        Real seconds elapsed (``time.perf_counter``).

    Examples
    --------
    >>> import asyncio
    >>> async def main():
    ...     with wall_ratio() as m:
    ...         await asyncio.sleep(60.0)
    ...     return m.virtual_s, m.wall_fraction < 0.01
    >>> run_virtual(main())
    (60.0, True)
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.virtual_s = 0.0
        self.wall_s = 0.0
        self._v0: float | None = None
        self._w0 = 0.0

    def start(self) -> "WallRatio":
        """Start measuring (again)."""
        if self.loop is None:
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                raise ParameterError("wall_ratio() needs a loop: pass loop=, or use it inside a coroutine") from None
        self._v0 = self.loop.time()
        self._w0 = _time.perf_counter()
        return self

    def stop(self) -> "WallRatio":
        """Stop measuring; :attr:`virtual_s` and :attr:`wall_s` now hold the durations."""
        if self._v0 is None:
            raise ParameterError("WallRatio.stop() called before start()")
        self.virtual_s = self.loop.time() - self._v0  # type: ignore[union-attr]
        self.wall_s = _time.perf_counter() - self._w0
        return self

    @property
    def speedup(self) -> float:
        """Virtual seconds per wall second (inf when no wall time was measurable)."""
        return self.virtual_s / self.wall_s if self.wall_s > 0 else math.inf

    @property
    def wall_fraction(self) -> float:
        """Wall seconds per virtual second (e.g. 0.05: a 60 s call took 3 s); nan for no virtual time."""
        return self.wall_s / self.virtual_s if self.virtual_s > 0 else math.nan

    def __enter__(self) -> "WallRatio":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"WallRatio(virtual_s={self.virtual_s:.6g}, wall_s={self.wall_s:.6g}, speedup={self.speedup:.4g})"


def wall_ratio(loop: asyncio.AbstractEventLoop | None = None) -> WallRatio:
    """A :class:`WallRatio` meter (use with ``with``); ``loop`` defaults to the running loop."""
    return WallRatio(loop)


#: asyncio's selector rounds timeouts up to whole milliseconds, so a real-time timer fires
#: between 0 and 1 ms late (plus wake-up latency). Paced senders arm their timers half of
#: that early, which centres their timing error on zero.
SELECTOR_EARLY_S = 0.0005


def early_s(loop: asyncio.AbstractEventLoop) -> float:
    """How early a paced sender should arm a timer on ``loop`` (s).

    :data:`SELECTOR_EARLY_S` on a real loop; 0 on a virtual clock, whose timers fire
    exactly on time (arming early there would make every send 0.5 ms early).
    """
    return 0.0 if is_virtual(loop) else SELECTOR_EARLY_S
