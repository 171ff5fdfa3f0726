"""Sans-IO jitter buffers, shared by the offline simulator and the live RTP stack.

A jitter buffer sits between the network and the decoder. Packets go in with
:meth:`JitterBuffer.push` (packet + arrival time); a playout clock calls
:meth:`JitterBuffer.pop` once every ``frame_ms``, starting at
:meth:`JitterBuffer.start_time`, and gets a :class:`Playout` telling it what to do with
that slot. Nothing here reads a clock: every time is passed in, in seconds.

Why our own: aiortc's jitter buffer is fixed-size, unaware of DTX and not adaptive;
libwebrtc's NetEq is C++. The lab needs one small, deterministic implementation used
the same way in ``sim`` and live modes, so that their results agree.

Timeline
--------
Slots are indexed by RTP timestamp, not by sequence number: slot ``j`` holds the
packet whose (extended) timestamp is ``base + j * timestamp_increment``, where ``base``
is the timestamp of the first packet to arrive. So DTX pauses (timestamp jumps with
consecutive sequence numbers) leave empty slots but are not mistaken for loss, and a
sequence gap is a loss.

Arrival times are honoured exactly: a pushed packet only enters the buffer at the
first :meth:`pop` whose ``now`` is at or after its arrival time. A caller may therefore
push packets as they arrive, or push them ahead of time (an offline simulator that
already knows every arrival time): the result is the same. A packet whose slot has
already been played when it enters is **late**: it is counted and dropped.

What each slot can be (:attr:`Playout.kind`)
--------------------------------------------
``"frame"``
    Decode and play ``payload``.
``"lost"``
    No packet for this slot: conceal (PLC), or decode ``next_payload`` with in-band FEC
    (Opus LBRR) when it is given. ``sequence_number`` is the missing packet's number when
    it is known (a later packet is already buffered and the sequence gap shows it), else
    None. ``dtx=True`` means no packet was missing here: the sender paused (DTX), so
    play comfort noise / silence; this is known only when the next packet is already
    buffered, otherwise the slot is reported as plain ``"lost"`` and the statistics are
    corrected once the next packet is played.
``"expand"``
    (Adaptive buffer only) the buffer grows by one frame: play one concealed frame; no
    sequence number and no timestamp is consumed (the same packet is due at the next
    slot).
``"skip"``
    (Adaptive buffer only) the buffer shrinks by one frame: the frame due in this slot
    was discarded unplayed and ``payload`` is the one after it. Decode and play
    ``payload`` exactly as for ``"frame"``; one slot is still one ``frame_ms`` of output.
``"empty"``
    Nothing to play yet (before the first slot) or any more: the buffer is dry and no
    packet has arrived for ``end_timeout_ms`` (end of stream, or a sender that stopped
    sending during silence). Play silence. Empty slots after the start still advance the
    timeline, and are counted as loss or DTX like ``"lost"`` slots once the stream resumes.

Counting
--------
``lost`` counts slots whose packet did not arrive in time (including late ones) and
``dtx`` slots with no packet where no sequence number was missing. Both are settled
when the next packet is played, so slots after the last packet ever received (the
tail of a stream) count as neither.
"""

from __future__ import annotations

import heapq
import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass

import numpy as np

from .._validate import nonneg_ms, positive
from ..errors import ParameterError
from .packet import RtpPacket

__all__ = [
    "Playout",
    "JitterBufferStats",
    "JitterBuffer",
    "FixedJitterBuffer",
    "AdaptiveJitterBuffer",
    "parse_jitter_buffer",
    "canonical_jitter_buffer",
    "AUTO_JITTER_BUFFER",
]

_EPS = 1e-9  # seconds of tolerance when comparing arrival and slot times
PLAYOUT_KINDS = ("frame", "lost", "expand", "skip", "empty")


@dataclass(frozen=True)
class Playout:
    """What the playout clock should do in one slot.

    Attributes
    ----------
    kind : {"frame", "lost", "expand", "skip", "empty"}
        See the module docstring.
    sequence_number : int or None
        16-bit RTP sequence number of the packet played (``frame``, ``skip``) or missing
        (``lost``, when known).
    payload : bytes or None
        Payload to decode (``frame``, ``skip``).
    next_payload : bytes or None
        Payload of the packet for the following slot, if it is already buffered; lets the
        decoder rebuild a ``lost`` slot from in-band FEC.
    delay_ms : float
        Buffering delay of this slot in ms: playout time minus arrival time for
        ``frame``/``skip``, the current target delay for the other kinds.
    timestamp : int or None
        32-bit RTP timestamp of the slot (None for ``expand`` and ``empty``).
    dtx : bool
        For ``lost``: True when the slot is known to be a DTX pause, not a loss.
    """

    kind: str
    sequence_number: int | None = None
    payload: bytes | None = None
    next_payload: bytes | None = None
    delay_ms: float = 0.0
    timestamp: int | None = None
    dtx: bool = False


@dataclass(frozen=True)
class JitterBufferStats:
    """Counters of a jitter buffer.

    Attributes
    ----------
    received : int
        Packets that entered the buffer in time (duplicates and late ones not included).
    played : int
        Slots that played a payload (``frame`` and ``skip``).
    late : int
        Packets that arrived after their slot had been played (dropped).
    lost : int
        Slots whose packet had not arrived by then (includes late packets' slots).
    dtx : int
        Empty slots where no packet was missing (DTX pauses).
    concealed : int
        Slots the decoder had to make up: ``lost`` slots (DTX ones included) and ``expand``.
    expanded : int
        ``expand`` slots (buffer grew by one frame).
    accelerated : int
        Frames discarded to shrink the buffer (one per ``skip`` slot).
    duplicates : int
        Packets whose sequence number (or timestamp slot) had already been received.
    late_loss_rate : float
        ``late / (received + late)``: fraction of arriving packets dropped as late.
    playout_delay_ms : float
        Mean buffering delay of the played frames, in ms: slot time minus arrival time.
        Codec, packetization and network delay are not included. NaN before any frame.
    target_delay_ms : float
        Current target delay in ms: the fixed delay for a fixed buffer; for the adaptive
        buffer, the target lag of playout behind the fastest recent packet (see
        :class:`AdaptiveJitterBuffer`), which is larger than the mean buffering delay
        ``playout_delay_ms`` because most packets are slower than the fastest one.
    """

    received: int
    played: int
    late: int
    lost: int
    dtx: int
    concealed: int
    expanded: int
    accelerated: int
    duplicates: int
    late_loss_rate: float
    playout_delay_ms: float
    target_delay_ms: float


class _Unwrapper:
    """Extend a wrapping counter (RTP sequence number or timestamp) to a plain integer."""

    def __init__(self, bits: int) -> None:
        self._mod = 1 << bits
        self._half = 1 << (bits - 1)
        self._highest: int | None = None

    def __call__(self, value: int) -> int:
        if self._highest is None:
            self._highest = value
            return value
        delta = (value - self._highest + self._half) % self._mod - self._half
        ext = self._highest + delta
        if ext > self._highest:
            self._highest = ext
        return ext


@dataclass
class _Entry:
    ext_seq: int
    ext_ts: int
    packet: RtpPacket
    arrival: float


class JitterBuffer(ABC):
    """Common machinery of the jitter buffers (see the module docstring).

    Parameters
    ----------
    frame_ms : float
        Duration of one slot (one packet) in ms.
    clock_rate : int
        RTP clock rate in Hz.
    timestamp_increment : int
        RTP timestamp units per packet; ``1000 * timestamp_increment / clock_rate`` must
        equal ``frame_ms``.
    end_timeout_ms : float, optional
        After this long without any arrival, with the buffer dry, slots are ``"empty"``
        instead of ``"lost"``.

    Raises
    ------
    ParameterError
        On non-positive or inconsistent values.
    """

    def __init__(
        self,
        *,
        frame_ms: float,
        clock_rate: int,
        timestamp_increment: int,
        end_timeout_ms: float = 500.0,
    ) -> None:
        self.frame_ms = positive(frame_ms, "frame_ms")
        for name, value in (("clock_rate", clock_rate), ("timestamp_increment", timestamp_increment)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        self.clock_rate = int(clock_rate)
        self.timestamp_increment = int(timestamp_increment)
        implied = 1000.0 * self.timestamp_increment / self.clock_rate
        if abs(implied - self.frame_ms) > 1e-6 * max(1.0, self.frame_ms):
            raise ParameterError(
                f"frame_ms {self.frame_ms:g} does not match timestamp_increment "
                f"{self.timestamp_increment} at clock_rate {self.clock_rate} Hz ({implied:g} ms): "
                "give the duration of one packet"
            )
        self.end_timeout_ms = nonneg_ms(end_timeout_ms, "end_timeout_ms")
        self._frame_s = self.frame_ms / 1000.0
        self._pending: list[tuple[float, int, RtpPacket]] = []
        self._push_count = 0
        self._first_arrival: float | None = None
        self._seq = _Unwrapper(16)
        self._ts = _Unwrapper(32)
        self._buffer: dict[int, _Entry] = {}
        self._seen: set[int] = set()
        self._base_ts: int | None = None
        self._started = False
        self._start: float | None = None
        self._cursor = 0
        self._expected_seq: int | None = None  # next sequence number not yet accounted for
        self._last_seq: int | None = None  # last consumed (played or discarded) sequence number
        self._provisional = 0  # empty slots since the last consumed packet, not yet classified
        self._last_now = -math.inf
        self._last_arrival = -math.inf
        self._n = {
            "received": 0,
            "played": 0,
            "late": 0,
            "lost": 0,
            "dtx": 0,
            "concealed": 0,
            "expanded": 0,
            "accelerated": 0,
            "duplicates": 0,
        }
        self._delay_sum = 0.0

    # --- hooks for subclasses -----------------------------------------------------
    @abstractmethod
    def _initial_delay_ms(self) -> float:
        """Delay of the first slot after the first arrival, in ms."""

    @abstractmethod
    def target_delay_ms(self) -> float:
        """Current target buffering delay in ms."""

    def _on_arrival(self, ext_ts: int, arrival: float) -> None:
        """Called for every new (non-duplicate) packet, late ones included."""

    def _action(self, now: float) -> str:
        """``"normal"``, ``"expand"`` or ``"accelerate"`` for the slot at ``now``."""
        return "normal"

    # --- input ----------------------------------------------------------------------
    def push(self, packet: RtpPacket, arrival_time: float) -> None:
        """Hand over a packet that arrives at ``arrival_time`` (seconds).

        The packet enters the buffer at the first :meth:`pop` with ``now >= arrival_time``.
        Duplicates are counted and ignored, late packets counted and dropped.

        Raises
        ------
        ParameterError
            If ``packet`` is not an :class:`~voicelab.rtp.RtpPacket` or the time is not
            a finite number.
        """
        if not isinstance(packet, RtpPacket):
            raise ParameterError(f"push expects an RtpPacket, got {type(packet).__name__}")
        try:
            t = float(arrival_time)
        except (TypeError, ValueError):
            raise ParameterError(f"arrival_time must be a time in seconds, got {arrival_time!r}") from None
        if not math.isfinite(t):
            raise ParameterError(f"arrival_time must be finite, got {arrival_time!r}")
        heapq.heappush(self._pending, (t, self._push_count, packet))
        self._push_count += 1
        if self._first_arrival is None or (not self._started and t < self._first_arrival):
            self._first_arrival = t

    def start_time(self) -> float | None:
        """When the first slot should be played (seconds), or None before any packet.

        First arrival plus the initial buffering delay. Fixed once the first slot has been
        played.
        """
        if self._started:
            return self._start
        if self._first_arrival is None:
            return None
        return self._first_arrival + self._initial_delay_ms() / 1000.0

    # --- output ---------------------------------------------------------------------
    def pop(self, now: float) -> Playout:
        """What to play in the slot that starts at ``now`` (seconds).

        Call once every ``frame_ms``, from :meth:`start_time` on, with nondecreasing
        times. Calls before the start return ``"empty"``.

        Raises
        ------
        ParameterError
            If ``now`` is not finite or goes backwards.
        """
        try:
            now = float(now)
        except (TypeError, ValueError):
            raise ParameterError(f"now must be a time in seconds, got {now!r}") from None
        if not math.isfinite(now):
            raise ParameterError(f"now must be finite, got {now!r}")
        if now < self._last_now - _EPS:
            raise ParameterError(f"time went backwards: pop({now!r}) after pop({self._last_now!r})")
        self._last_now = max(self._last_now, now)
        self._deliver_until(now)
        if not self._started:
            start = self.start_time()
            if start is None or now < start - _EPS or self._base_ts is None:
                return Playout("empty", delay_ms=self._initial_delay_ms())
            self._started = True
            self._start = start
        action = self._action(now)
        if action == "expand":
            self._n["expanded"] += 1
            self._n["concealed"] += 1
            return Playout("expand", delay_ms=self.target_delay_ms())
        if action == "accelerate":
            entry = self._buffer.pop(self._cursor)
            self._consume(entry)
            self._cursor += 1
            self._n["accelerated"] += 1
            return self._take_slot(now, "skip")
        return self._take_slot(now, "frame")

    @property
    def stats(self) -> JitterBufferStats:
        """A snapshot of the counters (see :class:`JitterBufferStats`)."""
        n = self._n
        heard = n["received"] + n["late"]
        return JitterBufferStats(
            received=n["received"],
            played=n["played"],
            late=n["late"],
            lost=n["lost"],
            dtx=n["dtx"],
            concealed=n["concealed"],
            expanded=n["expanded"],
            accelerated=n["accelerated"],
            duplicates=n["duplicates"],
            late_loss_rate=n["late"] / heard if heard else 0.0,
            playout_delay_ms=1000.0 * self._delay_sum / n["played"] if n["played"] else math.nan,
            target_delay_ms=self.target_delay_ms(),
        )

    @property
    def buffered_packets(self) -> int:
        """Packets in the buffer (arrived, not yet played)."""
        return len(self._buffer)

    def drop_buffered(self, now: float) -> int:
        """Drop every packet that has arrived by ``now`` and is not played yet (a ``clear``).

        A media-streams platform empties its playout queue when the agent sends
        ``clear`` (barge-in). The dropped packets count as neither played nor lost: the
        sequence accounting continues after the last one dropped, so the next packet
        (the agent's next reply) is not taken for a loss. Returns how many were dropped.
        """
        self._deliver_until(float(now))
        dropped = list(self._buffer.values())
        self._buffer.clear()
        if dropped:
            last = max(e.ext_seq for e in dropped)
            if self._expected_seq is not None:
                self._settle(min(e.ext_seq for e in dropped))  # empty slots before them: lost or DTX
            self._last_seq = last
            self._expected_seq = last + 1
            self._provisional = 0
        return len(dropped)

    # --- internals ----------------------------------------------------------------
    def _deliver_until(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now + _EPS:
            arrival, _, packet = heapq.heappop(self._pending)
            self._deliver(packet, arrival)

    def _deliver(self, packet: RtpPacket, arrival: float) -> None:
        ext_seq = self._seq(packet.sequence_number)
        ext_ts = self._ts(packet.timestamp)
        if self._base_ts is None:
            self._base_ts = ext_ts
            self._expected_seq = ext_seq
        self._last_arrival = max(self._last_arrival, arrival)
        if ext_seq in self._seen:
            self._n["duplicates"] += 1
            return
        self._seen.add(ext_seq)
        if len(self._seen) > 8192 and self._last_seq is not None:
            self._seen = {s for s in self._seen if s > self._last_seq - 4096}
        self._on_arrival(ext_ts, arrival)
        index = round((ext_ts - self._base_ts) / self.timestamp_increment)
        if index < self._cursor or (self._last_seq is not None and ext_seq <= self._last_seq):
            self._n["late"] += 1
            return
        if index in self._buffer:
            self._n["duplicates"] += 1
            return
        self._buffer[index] = _Entry(ext_seq, ext_ts, packet, arrival)
        self._n["received"] += 1

    def _slot_timestamp(self, index: int) -> int:
        assert self._base_ts is not None
        return (self._base_ts + index * self.timestamp_increment) & 0xFFFFFFFF

    def _settle(self, next_seq: int) -> int:
        """Classify provisional empty slots now that ``next_seq`` is the next known packet.

        Missing sequence numbers are given to the earliest empty slots; the rest of the
        empty slots were DTX. Returns how many sequence numbers are still unaccounted for.
        """
        assert self._expected_seq is not None
        missing = max(0, next_seq - self._expected_seq)
        as_lost = min(self._provisional, missing)
        self._n["lost"] += as_lost
        self._n["dtx"] += self._provisional - as_lost
        self._provisional = 0
        self._expected_seq += as_lost
        return missing - as_lost

    def _consume(self, entry: _Entry) -> None:
        """Account for a packet leaving the buffer (played or discarded)."""
        self._settle(entry.ext_seq)
        self._last_seq = entry.ext_seq
        self._expected_seq = entry.ext_seq + 1

    def _take_slot(self, now: float, kind: str) -> Playout:
        j = self._cursor
        self._cursor += 1
        entry = self._buffer.pop(j, None)
        following = self._buffer.get(j + 1)
        next_payload = following.packet.payload if following is not None else None
        if entry is not None:
            self._consume(entry)
            delay = now - entry.arrival
            self._n["played"] += 1
            self._delay_sum += delay
            return Playout(
                kind,
                sequence_number=entry.packet.sequence_number,
                payload=entry.packet.payload,
                next_payload=next_payload,
                delay_ms=1000.0 * delay,
                timestamp=entry.packet.timestamp,
            )
        # Nothing for this slot.
        target = self.target_delay_ms()
        ts = self._slot_timestamp(j)
        if self._buffer:
            nxt = self._buffer[min(self._buffer)]
            unaccounted = self._settle(nxt.ext_seq)
            self._n["concealed"] += 1
            if unaccounted > 0:
                assert self._expected_seq is not None
                seq = self._expected_seq
                self._expected_seq += 1
                self._n["lost"] += 1
                return Playout(
                    "lost", sequence_number=seq & 0xFFFF, next_payload=next_payload, delay_ms=target, timestamp=ts
                )
            self._n["dtx"] += 1
            return Playout("lost", next_payload=next_payload, delay_ms=target, timestamp=ts, dtx=True)
        self._provisional += 1
        if (now - self._last_arrival) * 1000.0 > self.end_timeout_ms:
            return Playout("empty", delay_ms=target)
        self._n["concealed"] += 1
        return Playout("lost", delay_ms=target, timestamp=ts)


class FixedJitterBuffer(JitterBuffer):
    """A jitter buffer with a constant delay.

    The first slot plays the first packet to arrive, ``delay_ms`` after its arrival;
    slot ``k`` plays the packet with timestamp ``first + k * timestamp_increment``
    (normally sequence ``first_seq + k``) at ``start_time() + k * frame_ms``. A packet
    arriving after its slot time is late.

    Parameters
    ----------
    frame_ms, clock_rate, timestamp_increment, end_timeout_ms
        See :class:`JitterBuffer`.
    delay_ms : float, optional
        Buffering delay in ms, >= 0.

    Examples
    --------
    >>> from voicelab.rtp import Packetizer
    >>> pk = Packetizer(payload_type=0, clock_rate=8000, timestamp_increment=160, rng=0)
    >>> jb = FixedJitterBuffer(frame_ms=20, clock_rate=8000, timestamp_increment=160, delay_ms=60)
    >>> for i in range(3):
    ...     jb.push(pk.packetize(bytes([i])), arrival_time=0.1 + 0.02 * i)
    >>> start = jb.start_time()
    >>> [jb.pop(start + 0.02 * k).kind for k in range(4)]
    ['frame', 'frame', 'frame', 'lost']
    >>> round(jb.stats.playout_delay_ms, 6)
    60.0
    """

    def __init__(
        self,
        *,
        frame_ms: float,
        clock_rate: int,
        timestamp_increment: int,
        delay_ms: float = 60.0,
        end_timeout_ms: float = 500.0,
    ) -> None:
        super().__init__(
            frame_ms=frame_ms,
            clock_rate=clock_rate,
            timestamp_increment=timestamp_increment,
            end_timeout_ms=end_timeout_ms,
        )
        self.delay_ms = nonneg_ms(delay_ms, "delay_ms")

    def _initial_delay_ms(self) -> float:
        return self.delay_ms

    def target_delay_ms(self) -> float:
        return self.delay_ms


class AdaptiveJitterBuffer(JitterBuffer):
    """A jitter buffer that follows the network's delay variation (a simplified NetEq).

    Delay estimate
        For each arriving packet (late ones included) the buffer records its transit
        offset ``d = arrival - timestamp / clock_rate`` (seconds, up to a constant). Over
        the last ``window_packets`` packets, the relative delay of a packet is ``d`` minus
        the smallest ``d`` in the window (the fastest packet). The **target delay** is the
        ``percentile``-th percentile of the relative delays plus one frame, clamped to
        ``[min_delay_ms, max_delay_ms]``. Until the window is full, the target is at
        least ``initial_delay_ms``.
    Buffer level
        The playout lag of the current slot behind the fastest packet:
        ``now - (min d + slot timestamp / clock_rate)``. A packet whose relative delay is
        below the lag is in time.
    Control (one decision per slot)
        lag < target - frame_ms -> ``"expand"`` (play a concealed frame, lag grows by one
        frame); lag > target + frame_ms and the next two packets are buffered ->
        ``"skip"`` (discard one frame, lag shrinks by one frame); otherwise play the slot.
        Since the lag moves in whole frames, it settles in ``[target - frame_ms, target +
        frame_ms]``; the lower edge is the chosen percentile itself (hence "+ one frame"
        in the target), so in steady jitter at most about ``100 - percentile`` % of
        packets are late (usually fewer: the level sits anywhere in the band).

    The window counts packets rather than using NetEq's forgetting-factor histogram;
    the behaviour is the same in kind (grow fast under jitter, shrink after
    ``window_packets`` calm packets).

    Self-sizing (``headroom_ms`` given; the ``"auto"`` spec)
        The target is the percentile plus ``headroom_ms`` (a few ms instead of one
        frame), and the band is ``[target, target + 1.5 * frame_ms]``: expand when the
        lag is below the target, skip when it is above the upper edge (the half frame
        of hysteresis keeps an expansion from being undone by the next small change of
        the target). The lower edge covers the chosen percentile with the headroom to
        spare, so on a clean path (relative delays of a few ms) the buffer holds a few
        ms rather than a frame or more, and it grows as soon as the measured spread
        grows.

    Parameters
    ----------
    frame_ms, clock_rate, timestamp_increment, end_timeout_ms
        See :class:`JitterBuffer`.
    min_delay_ms, max_delay_ms : float, optional
        Bounds of the target delay in ms, ``0 <= min <= max``.
    percentile : float, optional
        Percentile of the relative delay to cover, in (0, 100].
    window_packets : int, optional
        Number of recent packets in the delay estimate, >= 2.
    initial_delay_ms : float, optional
        Delay of the first slot after the first arrival, in ms (clamped into
        ``[min_delay_ms, max_delay_ms]``).
    headroom_ms : float, optional
        None (default): the classic control above (target = percentile + one frame,
        band of two frames). A number of ms >= 0: the self-sizing control.
    """

    def __init__(
        self,
        *,
        frame_ms: float,
        clock_rate: int,
        timestamp_increment: int,
        min_delay_ms: float = 20.0,
        max_delay_ms: float = 400.0,
        percentile: float = 95.0,
        window_packets: int = 100,
        initial_delay_ms: float = 40.0,
        end_timeout_ms: float = 500.0,
        headroom_ms: float | None = None,
    ) -> None:
        super().__init__(
            frame_ms=frame_ms,
            clock_rate=clock_rate,
            timestamp_increment=timestamp_increment,
            end_timeout_ms=end_timeout_ms,
        )
        self.min_delay_ms = nonneg_ms(min_delay_ms, "min_delay_ms")
        self.max_delay_ms = nonneg_ms(max_delay_ms, "max_delay_ms")
        if self.min_delay_ms > self.max_delay_ms:
            raise ParameterError(
                f"min_delay_ms {self.min_delay_ms:g} is above max_delay_ms {self.max_delay_ms:g}"
            )
        try:
            pct = float(percentile)
        except (TypeError, ValueError):
            raise ParameterError(f"percentile must be a number in (0, 100], got {percentile!r}") from None
        if not 0.0 < pct <= 100.0:
            raise ParameterError(f"percentile {pct:g} is outside (0, 100]")
        self.percentile = pct
        if isinstance(window_packets, bool) or not isinstance(window_packets, (int, np.integer)) or window_packets < 2:
            raise ParameterError(f"window_packets must be an integer >= 2, got {window_packets!r}")
        self.window_packets = int(window_packets)
        initial = nonneg_ms(initial_delay_ms, "initial_delay_ms")
        self.initial_delay_ms = min(max(initial, self.min_delay_ms), self.max_delay_ms)
        self.headroom_ms = None if headroom_ms is None else nonneg_ms(headroom_ms, "headroom_ms")
        self._window: deque[float] = deque(maxlen=self.window_packets)
        self._target_cache: float | None = None

    def _initial_delay_ms(self) -> float:
        return self.initial_delay_ms

    def _on_arrival(self, ext_ts: int, arrival: float) -> None:
        assert self._base_ts is not None
        self._window.append(arrival - (ext_ts - self._base_ts) / self.clock_rate)
        self._target_cache = None

    def target_delay_ms(self) -> float:
        if self._target_cache is not None:
            return self._target_cache
        if not self._window:
            target = self.initial_delay_ms
        else:
            # the percentile of d - min(d), with numpy's default (linear) interpolation,
            # on a sorted list: this runs once per arriving packet
            d = sorted(self._window)
            pos = (len(d) - 1) * self.percentile / 100.0
            lo = int(math.floor(pos))
            hi = min(lo + 1, len(d) - 1)
            q = d[lo] + (d[hi] - d[lo]) * (pos - lo)
            pad = self.frame_ms if self.headroom_ms is None else self.headroom_ms
            target = 1000.0 * (q - d[0]) + pad
            if len(self._window) < self.window_packets:
                target = max(target, self.initial_delay_ms)
        target = min(max(target, self.min_delay_ms), self.max_delay_ms)
        self._target_cache = target
        return target

    def lag_ms(self, now: float) -> float | None:
        """Playout lag of the slot at ``now`` behind the fastest recent packet, in ms.

        None before any packet has arrived.
        """
        if not self._window or self._base_ts is None:
            return None
        slot_s = self._cursor * self.timestamp_increment / self.clock_rate
        return 1000.0 * (now - (min(self._window) + slot_s))

    def _action(self, now: float) -> str:
        lag = self.lag_ms(now)
        if lag is None:
            return "normal"
        target = self.target_delay_ms()
        if self.headroom_ms is None:  # classic: band [target - frame, target + frame]
            low, high = target - self.frame_ms, target + self.frame_ms
        else:  # self-sizing: band [target, target + 1.5 frames]
            low, high = target, target + 1.5 * self.frame_ms
        if lag < low - 1e-6:
            return "expand"
        if (
            lag > high + 1e-6
            and self._cursor in self._buffer
            and self._cursor + 1 in self._buffer
        ):
            return "accelerate"
        return "normal"


# --- jitter-buffer specs (strings such as "fixed:60", used by scenarios and live calls) ---

#: Parameters of the ``"auto"`` (self-sizing) buffer: an :class:`AdaptiveJitterBuffer`
#: with no floor, a small start and ``headroom_ms`` instead of one frame of padding.
AUTO_JITTER_BUFFER = {"min_delay_ms": 0.0, "max_delay_ms": 400.0, "percentile": 98.0, "window_packets": 100,
                      "initial_delay_ms": 10.0, "headroom_ms": 3.0}


def canonical_jitter_buffer(spec: str) -> str:
    """One spelling per jitter buffer: ``"FIXED:60.0"`` -> ``"fixed:60"``."""
    kind, params = parse_jitter_buffer(spec)
    if kind == "fixed":
        return f"fixed:{params['delay_ms']:g}"
    if "headroom_ms" in params:
        if (params["min_delay_ms"], params["max_delay_ms"]) == (AUTO_JITTER_BUFFER["min_delay_ms"],
                                                                AUTO_JITTER_BUFFER["max_delay_ms"]):
            return "auto"
        return f"auto:{params['min_delay_ms']:g}:{params['max_delay_ms']:g}"
    if params:
        return f"adaptive:{params['min_delay_ms']:g}:{params['max_delay_ms']:g}"
    return "adaptive"


def parse_jitter_buffer(spec: str) -> tuple[str, dict[str, float]]:
    """Parse a jitter-buffer spec.

    Parameters
    ----------
    spec : str
        ``"fixed:MS"`` (a fixed buffer of MS milliseconds, e.g. ``"fixed:60"``),
        ``"adaptive"`` or ``"adaptive:MIN:MAX"`` (bounds in ms), ``"auto"`` or
        ``"auto:MIN:MAX"`` (the self-sizing adaptive buffer, :data:`AUTO_JITTER_BUFFER`:
        a few ms on a clean path, growing with the measured jitter).

    Returns
    -------
    kind : {"fixed", "adaptive"}
        ``"auto"`` is an :class:`AdaptiveJitterBuffer` too (kind ``"adaptive"``; its
        params carry ``headroom_ms``).
    params : dict
        Keyword arguments for the buffer class.
    """
    if not isinstance(spec, str) or not spec:
        raise ParameterError(f"jitter buffer spec must be 'fixed:MS', 'adaptive' or 'auto', got {spec!r}")
    parts = spec.strip().lower().split(":")
    try:
        if parts[0] == "fixed":
            if len(parts) == 1:
                return "fixed", {"delay_ms": 60.0}
            if len(parts) == 2:
                delay_ms = float(parts[1])
                if not 0 <= delay_ms <= 2000:
                    raise ParameterError(
                        f"fixed jitter buffer delay {delay_ms:g} ms is outside 0..2000 ms"
                    )
                return "fixed", {"delay_ms": delay_ms}
        elif parts[0] == "adaptive":
            if len(parts) == 1:
                return "adaptive", {}
            if len(parts) == 3:
                lo, hi = float(parts[1]), float(parts[2])
                if not 0 <= lo <= hi <= 2000:
                    raise ParameterError(
                        f"adaptive jitter buffer bounds {lo:g}:{hi:g} ms need 0 <= MIN <= MAX <= 2000"
                    )
                return "adaptive", {"min_delay_ms": lo, "max_delay_ms": hi}
        elif parts[0] == "auto":
            if len(parts) == 1:
                return "adaptive", dict(AUTO_JITTER_BUFFER)
            if len(parts) == 3:
                lo, hi = float(parts[1]), float(parts[2])
                if not 0 <= lo <= hi <= 2000:
                    raise ParameterError(
                        f"auto jitter buffer bounds {lo:g}:{hi:g} ms need 0 <= MIN <= MAX <= 2000"
                    )
                return "adaptive", {**AUTO_JITTER_BUFFER, "min_delay_ms": lo, "max_delay_ms": hi}
    except ValueError as exc:
        if isinstance(exc, ParameterError):
            raise
        raise ParameterError(f"jitter buffer spec {spec!r}: numbers expected ({exc})") from None
    raise ParameterError(
        f"jitter buffer spec {spec!r} not understood: use 'fixed:MS' (e.g. fixed:60), "
        "'adaptive', 'adaptive:MIN:MAX', 'auto' or 'auto:MIN:MAX'"
    )
