"""Overload control for a SIP server: admit the new calls it can serve, refuse the rest early.

Past its capacity a server that accepts every INVITE collapses (RFC 6357 section 3): its
queues grow, its answers come after the caller's Timer A, retransmissions add load, and
goodput falls towards zero. Telephony servers instead refuse the excess *before it costs
anything* with ``503 Service Unavailable`` and ``Retry-After`` (RFC 3261 21.5.4, 20.33;
RFC 7339 adds Via ``oc`` parameters between servers) and keep serving what they accepted.
:meth:`OverloadControl.feedback` is the share of new calls RFC 7339 clients are asked to
shed before sending them (:mod:`voicelab.sip.occ`).

:class:`OverloadControl` is sans-IO: the host feeds it measurements (event-loop lag with
:meth:`~OverloadControl.observe_lag`) and asks :meth:`~OverloadControl.admit` for every
new out-of-dialog INVITE with ``now`` and its current load; the answer is None (admit)
or an :class:`Refusal` to send. Requests within dialogs (ACK, BYE, re-INVITE) never pass
through it: they are never starved by new calls.

Rules, in order:

1. ``active_calls >= max_calls``: 486 Busy Here (the callee is busy, not the server).
2. lag above ``4 * max_lag``, queue above ``4 * max_queue`` or queueing delay above
   ``4 * max_queue_delay``: 503 (emergency).

   A server on a shared machine is descheduled now and then: one late timer, or the
   queue that built up meanwhile, is not overload. So the lag counts (here and in rule
   3) only when samples above ``max_lag`` keep coming for ``sustain`` seconds (a sample
   at or below it ends the run), and a long queue only once every admission for
   ``sustain`` s saw it over its limit, or at once while it grows with no late lag
   sample in the last ``sustain`` s (a queue that grew while the process was
   descheduled is caught up with afterwards).
3. more than the admitted-rate limit (token bucket of ``burst`` calls): 503. The limit
   is ``max_rate`` (if set) and, once the server has been overloaded, an *adaptive*
   rate (AIMD, as rate-based overload control does, RFC 7415): every ``interval`` s in
   which the smoothed lag exceeded ``max_lag``, the queue ``max_queue`` or the
   queueing delay ``max_queue_delay``, the limit becomes ``decrease`` times the rate
   admitted in that interval or, if higher, over about the last second (an interval
   spent descheduled admits nearly nothing and must not pull the limit to the floor, and
   one with a late lag sample is left out of that second's measure); every interval
   without overload *in which the limit refused calls* it grows by ``increase`` (a
   fraction, at least 1 call/s), by a tenth of that just above the rate of the last
   decrease (1-1.1x). A limit above the offered load
   does not grow (it cannot show that the server could take more: grown unchecked to
   2-3x the capacity, it let a surge fill the socket before the queue signal reacted,
   and the cut that followed undershot). Decreases are at least
   ``3 * interval`` apart, and a long queue counts only while it grows (one that drains
   is already served faster than it fills: cutting again undershoots capacity). Binary
   refusal while the queue is long would refuse nearly everything: the refused traffic
   itself keeps the queue long, and goodput falls far below capacity.

Examples
--------
>>> oc = OverloadControl(max_calls=2, max_rate=10.0, burst=2)
>>> oc.admit(0.0, active_calls=0) is None, oc.admit(0.0, active_calls=1) is None
(True, True)
>>> oc.admit(0.0, active_calls=2).status
486
>>> r = oc.admit(0.0, active_calls=0)  # the bucket (2 calls) is empty at t=0
>>> r.status, r.retry_after, r.reason
(503, 1, 'rate')
>>> oc.admit(0.1, active_calls=0) is None  # 0.1 s at 10/s refilled one token
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ParameterError

__all__ = ["OverloadControl", "Refusal"]


@dataclass(frozen=True)
class Refusal:
    """What to answer a refused INVITE with.

    Attributes
    ----------
    status : int
        503 (overload) or 486 (call limit).
    retry_after : int or None
        Seconds for the ``Retry-After`` header (RFC 3261 20.33), None for none.
    reason : str
        ``"calls"``, ``"lag"``, ``"queue"`` or ``"rate"``.
    """

    status: int
    retry_after: int | None
    reason: str

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Extra response headers: ``[("Retry-After", "N")]`` or ``[]``."""
        return [] if self.retry_after is None else [("Retry-After", str(self.retry_after))]


def _positive(name: str, value: object, *, allow_none: bool = True, integer: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ParameterError(f"{name} must be a finite number > 0{' or None' if allow_none else ''}, got {value!r}")
    if integer and int(value) != value:
        raise ParameterError(f"{name} must be a whole number, got {value!r}")
    return float(value)


@dataclass
class OverloadControl:
    """Admission policy for new calls (see the module docstring).

    Parameters
    ----------
    max_calls : int, optional
        Concurrent calls; at or above it new INVITEs get 486 Busy Here. None: no limit.
    max_rate : float, optional
        New calls admitted per second (sustained). None: no rate limit.
    burst : int, optional
        Token-bucket depth in calls (default: a tenth of a second of ``max_rate``, >= 1).
    max_lag : float, optional
        Smoothed event-loop lag (s) above which the server counts as overloaded. Default 0.25 s.
        None: lag is not used.
    lag_halflife : float, optional
        Half-life (s) of the lag smoothing (decay after a late sample). Default 0.1 s.
    max_queue : int, optional
        Waiting events above which the server counts as overloaded. None (default): not
        used. A count is a poor signal when most of what waits is cheap to refuse.
    max_queue_delay : float, optional
        Estimated queueing delay (s: waiting messages times their mean service time)
        above which the server counts as overloaded. Default 0.1 s; None: not used.
    retry_after : int, optional
        Base ``Retry-After`` seconds for a 503 (default 1); lag refusals scale it with
        how far over ``max_lag`` the lag is, up to ``max_retry_after``.
    max_retry_after : int, optional
        Upper bound (s) for ``Retry-After``. Default 32.
    adaptive : bool, optional
        Adapt the admitted rate to overload (default True).
    interval : float, optional
        Control interval (s) of the adaptive rate. Default 0.1.
    decrease, increase : float, optional
        Multiplicative decrease (default 0.8) and additive increase as a fraction of the
        limit (default 0.1) of the adaptive rate.
    min_rate : float, optional
        Floor of the adaptive rate (calls/s). Default 1.
    sustain : float, optional
        Seconds a load signal (lag, queue, queueing delay) must stay over its limit
        before it counts (default 0.5; 0: at once). One scheduling stall of a shared
        machine then refuses nothing.
    """

    max_calls: int | None = None
    max_rate: float | None = None
    burst: int | None = None
    max_lag: float | None = 0.25
    lag_halflife: float = 0.1
    max_queue: int | None = None
    max_queue_delay: float | None = 0.1
    retry_after: int = 1
    max_retry_after: int = 32
    adaptive: bool = True
    interval: float = 0.1
    decrease: float = 0.8
    increase: float = 0.1
    min_rate: float = 1.0
    sustain: float = 0.5
    #: Admitted and refused INVITEs, by reason (``"admitted"``, ``"calls"``, ``"lag"``, ...).
    counts: dict[str, int] = field(default_factory=dict)
    #: Highest share (%) of new requests :meth:`feedback` asks a client to shed: a client
    #: that shed everything would send nothing that could show the overload is over.
    max_feedback_percent: int = 95
    #: How fast (percentage points per second) the feedback falls once nothing is refused.
    feedback_decay: float = 50.0

    def __post_init__(self) -> None:
        if self.max_calls is not None:
            _positive("max_calls", self.max_calls, integer=True)
        _positive("max_rate", self.max_rate)
        if self.burst is not None:
            _positive("burst", self.burst, integer=True)
        _positive("max_lag", self.max_lag)
        _positive("lag_halflife", self.lag_halflife, allow_none=False)
        if self.max_queue is not None:
            _positive("max_queue", self.max_queue, integer=True)
        _positive("max_queue_delay", self.max_queue_delay)
        _positive("retry_after", self.retry_after, allow_none=False, integer=True)
        _positive("max_retry_after", self.max_retry_after, allow_none=False, integer=True)
        if self.burst is None and self.max_rate is not None:
            self.burst = max(1, int(self.max_rate / 10))
        self._tokens = float(self.burst or 0)
        self._bucket_time: float | None = None
        self._lag = 0.0
        self._lag_time: float | None = None
        _positive("interval", self.interval, allow_none=False)
        _positive("min_rate", self.min_rate, allow_none=False)
        if not 0 < self.decrease < 1 or not 0 < self.increase <= 1:
            raise ParameterError(f"decrease must be in (0, 1) and increase in (0, 1], got {self.decrease!r}, {self.increase!r}")
        #: The adaptive admitted-rate limit (calls/s); None until the first overload.
        self.adaptive_rate: float | None = None
        self._window_start: float | None = None
        self._window_admitted = 0
        self._window_overloaded = False
        self._window_limited = False  # the adaptive limit refused a call in this interval
        self._atokens = 1.0
        self._abucket_time: float | None = None
        self._last_now = -math.inf
        if isinstance(self.sustain, bool) or not isinstance(self.sustain, (int, float)) or not (
                math.isfinite(self.sustain) and self.sustain >= 0):
            raise ParameterError(f"sustain must be a finite number of seconds >= 0, got {self.sustain!r}")
        self._lag_over_since: float | None = None  # first of the current run of samples over max_lag
        self._queue_over_since: float | None = None  # first admission of the current run that saw the queue over
        self._queue_last: tuple[int, float] = (0, 0.0)
        self._queue_rising = False
        self._late_at: float | None = None  # the last lag sample over max_lag
        self._long_rate: float | None = None  # admitted calls/s, smoothed over ~1 s (AIMD decrease base)
        self._cut_at: float | None = None  # when the adaptive rate was last decreased
        self._ceiling: float | None = None  # the admitted rate it was decreased from
        if (isinstance(self.max_feedback_percent, bool) or not isinstance(self.max_feedback_percent, int)
                or not 0 <= self.max_feedback_percent <= 100):  # fmt: skip
            raise ParameterError(f"max_feedback_percent must be an int 0..100, got {self.max_feedback_percent!r}")
        _positive("feedback_decay", self.feedback_decay, allow_none=False)
        self._fb = 0.0  # RFC 7339 feedback: the share of new requests clients should shed (0..1)
        self._fb_start: float | None = None  # the feedback's window: start, received (not 486), admitted, 503s
        self._fb_received = self._fb_admitted = self._fb_refused = 0

    # -- measurements ----------------------------------------------------------------
    @property
    def lag(self) -> float:
        """The smoothed event-loop lag (s)."""
        return self._lag

    def observe_lag(self, lag: float, now: float) -> None:
        """One event-loop lag sample: how late (s) a timer due at ``now - lag`` ran.

        Smoothed exponentially with ``lag_halflife``; a sample above the current value
        counts at once (the loop is late *now*), lower ones decay it.

        Raises
        ------
        ParameterError
            A negative or non-finite lag, or time going backwards.
        """
        now = self._tick(now)
        if isinstance(lag, bool) or not isinstance(lag, (int, float)) or not math.isfinite(lag) or lag < 0:
            raise ParameterError(f"lag must be a finite number of seconds >= 0, got {lag!r}")
        if self.max_lag is not None and lag > self.max_lag:
            self._late_at = now
            if self._lag_over_since is None:
                self._lag_over_since = now
        else:
            self._lag_over_since = None
        if self._lag_time is None or lag >= self._lag:
            self._lag = float(lag)
        else:
            w = 0.5 ** ((now - self._lag_time) / self.lag_halflife)
            self._lag = w * self._lag + (1.0 - w) * float(lag)
        self._lag_time = now

    # -- decisions -------------------------------------------------------------------
    def admit(self, now: float, *, active_calls: int = 0, queue_depth: int = 0, queue_delay: float = 0.0) -> Refusal | None:
        """Decide on one new out-of-dialog INVITE arriving at ``now`` (s).

        Parameters
        ----------
        now : float
            Current time (s), monotonic.
        active_calls : int
            Calls the server holds now.
        queue_depth : int
            Events or requests waiting to be served.
        queue_delay : float
            Estimated time (s) the waiting work takes to serve.

        Returns
        -------
        Refusal or None
            None: admit (a rate token is taken).
        """
        now = self._tick(now)
        refusal = self._decide(now, active_calls, queue_depth, queue_delay)
        key = "admitted" if refusal is None else refusal.reason
        self.counts[key] = self.counts.get(key, 0) + 1
        self._feedback_window(now)
        if refusal is None:
            self._fb_received += 1
            self._fb_admitted += 1
        elif refusal.status == 503:  # (486: the call limit, the callee is busy; not overload)
            self._fb_received += 1
            self._fb_refused += 1
        return refusal

    # -- RFC 7339 feedback -----------------------------------------------------------
    def feedback(self, now: float) -> tuple[int, int]:
        """What to tell a client that supports RFC 7339 overload control, at ``now`` (s).

        The share of new requests it should shed before sending them (loss-based
        scheme, :mod:`voicelab.sip.occ`), estimated once per ``interval``: in an
        interval in which the server refused calls with 503, the clients' whole offered
        load is what reached the server divided by ``1 - p`` (they shed ``p`` already),
        so ``p`` becomes ``1 - (1 - p) * admitted / received``; in one without refusals
        it falls by ``feedback_decay`` points per second. At most ``max_feedback_percent``.

        Returns
        -------
        (percent, validity_ms)
            ``percent`` 0-100; ``validity_ms``
            :data:`voicelab.sip.occ.DEFAULT_VALIDITY_MS` while it is above 0, else 0 (the
            server is not in overload: clients stop shedding).
        """
        from .occ import DEFAULT_VALIDITY_MS

        now = self._tick(now)
        self._feedback_window(now)
        p = self._fb
        if self._fb_start is not None and self._fb_refused == 0:  # no refusal yet in this window: falling
            p = max(0.0, p - self.feedback_decay / 100.0 * (now - self._fb_start))
        percent = min(self.max_feedback_percent, int(math.floor(p * 100.0 + 0.5)))
        return percent, (DEFAULT_VALIDITY_MS if percent > 0 else 0)

    def _feedback_window(self, now: float) -> None:
        if self._fb_start is None:
            self._fb_start = now
            return
        elapsed = now - self._fb_start
        if elapsed < self.interval:
            return
        if self._fb_refused and self._fb_received:
            p = 1.0 - (1.0 - self._fb) * self._fb_admitted / self._fb_received
        else:
            p = self._fb - self.feedback_decay / 100.0 * elapsed
        self._fb = min(self.max_feedback_percent / 100.0, max(0.0, p))
        self._fb_start, self._fb_received, self._fb_admitted, self._fb_refused = now, 0, 0, 0

    def _decide(self, now: float, active_calls: int, queue_depth: int, queue_delay: float) -> Refusal | None:
        if self.max_calls is not None and active_calls >= self.max_calls:
            return Refusal(486, self.retry_after, "calls")
        lag_sustained = not self.sustain or (self._lag_over_since is not None and now - self._lag_over_since >= self.sustain)
        lagging = self.max_lag is not None and self._lag > self.max_lag and lag_sustained
        queued = (self.max_queue is not None and queue_depth > self.max_queue) or (
            self.max_queue_delay is not None and queue_delay > self.max_queue_delay
        )
        if not queued:
            self._queue_over_since = None
        elif self._queue_over_since is None:
            self._queue_over_since = now
        queue_sustained = queued and now - self._queue_over_since >= self.sustain  # type: ignore[operator]
        # a queue that grows is overload at once; one that shrinks (catching up after the
        # process was descheduled) only once it has stayed long for ``sustain`` s
        load = (queue_depth, queue_delay)
        if load != self._queue_last:
            self._queue_rising = load > self._queue_last
            self._queue_last = load
        stalled = self._late_at is not None and now - self._late_at < self.sustain  # a late sample just now
        if self.adaptive:
            # a long queue that is draining already gets less than it can serve: hold the
            # rate there (cutting again would overshoot below capacity), cut while it grows
            # or stays long
            self._control(now, lagging or (queue_sustained and self._queue_rising) or (queued and self._queue_rising and not stalled))
        if self.max_lag is not None and lag_sustained and (self._lag > 4 * self.max_lag or (lagging and not self.adaptive)):
            factor = self._lag / self.max_lag
            return Refusal(503, min(self.max_retry_after, math.ceil(self.retry_after * factor)), "lag")
        if queue_sustained and (not self.adaptive or (self.max_queue is not None and queue_depth > 4 * self.max_queue)
                                or (self.max_queue_delay is not None and queue_delay > 4 * self.max_queue_delay)):
            return Refusal(503, self.retry_after, "queue")
        if self.max_rate is not None:
            if self._bucket_time is not None:
                self._tokens = min(float(self.burst or 1), self._tokens + (now - self._bucket_time) * self.max_rate)
            self._bucket_time = now
            if self._tokens < 1.0:
                return Refusal(503, self.retry_after, "rate")
        if self.adaptive_rate is not None:
            depth = max(1.0, self.adaptive_rate * self.interval / 2)
            if self._abucket_time is not None:
                self._atokens = min(depth, self._atokens + (now - self._abucket_time) * self.adaptive_rate)
            self._abucket_time = now
            if self._atokens < 1.0:
                self._window_limited = True
                return Refusal(503, self.retry_after, "overload")
            self._atokens -= 1.0
        if self.max_rate is not None:
            self._tokens -= 1.0
        self._window_admitted += 1
        return None

    def _control(self, now: float, overloaded: bool) -> None:
        """AIMD on the admitted rate, once per ``interval``.

        A decrease at most once per ``3 * interval`` (the queue and lag measurements
        need that long to show its effect; cutting on every interval while the queue
        drains went far below capacity), none while a long queue is draining. An increase
        only after an interval in which the limit refused calls; just above the rate of the
        last decrease (1-1.1x) a tenth of ``increase`` (back quickly to where overload
        began, just past it slowly).
        """
        if self._window_start is None:
            self._window_start = now
        self._window_overloaded |= overloaded
        elapsed = now - self._window_start
        if elapsed < self.interval:
            return
        admitted_rate = self._window_admitted / elapsed
        # the admitted rate over about the last second: a window in which the process
        # was descheduled admitted next to nothing, and is no measure of its capacity
        # (a window with a late lag sample, one it spent partly descheduled, is left out)
        w = 0.5 ** (elapsed / 1.0)
        if self._long_rate is None:
            self._long_rate = admitted_rate
        elif self._late_at is None or self._late_at < self._window_start:
            self._long_rate = w * self._long_rate + (1 - w) * admitted_rate
        if self._window_overloaded:
            if self._cut_at is None or now - self._cut_at >= 3 * self.interval:
                measured = max(admitted_rate, self._long_rate)
                base = measured if self.adaptive_rate is None else min(self.adaptive_rate, measured)
                self._ceiling = base
                self.adaptive_rate = max(self.min_rate, self.decrease * base)
                self._cut_at = now
        elif self.adaptive_rate is not None and self._window_limited:
            # only a limit that refused calls grows: one above what is offered cannot show
            # whether the server could take more, and grown unchecked (round 6 traces: to
            # 1.7-2.6x what the agent served, at 2x load) it lets the next surge fill the
            # socket before the queue signal reacts, then the cut undershoots
            step = self.increase
            if self._ceiling is not None and self._ceiling <= self.adaptive_rate <= 1.1 * self._ceiling:
                # just past the rate overload began at: probe slowly. (Slower probing further
                # past it, a third of the step, kept the limit nearer the capacity in the model
                # of tests/test_overload.py but in the agent, after a cut measured while it
                # served a backlog, left it idle for 2-3 s: round 6, docs/benchmarks.md)
                step = self.increase / 10
            self.adaptive_rate += max(1.0, step * self.adaptive_rate)
        self._window_start, self._window_admitted, self._window_overloaded = now, 0, False
        self._window_limited = False

    def _tick(self, now: float) -> float:
        if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
            raise ParameterError(f"now must be a finite time in seconds, got {now!r}")
        if now < self._last_now:
            raise ParameterError(f"time went backwards: now={now!r} s after {self._last_now!r} s")
        self._last_now = float(now)
        return float(now)
