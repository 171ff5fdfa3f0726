"""RFC 3550 receiver statistics for one RTP source, sans-IO.

Feed every RTP packet of one SSRC to :meth:`ReceiverStats.update` with its arrival
time (seconds, any epoch, from the caller's clock); read the counters at any time and
call :meth:`ReceiverStats.report` whenever an RTCP receiver report block is due. No
I/O, no clock: the same object serves the simulator (virtual time) and the live stacks.

What is implemented, with the RFC's own algorithms (RFC 3550 Appendix A):

* A.1 source validation and sequence-number bookkeeping: probation of
  ``MIN_SEQUENTIAL = 2`` in-order packets before a source is valid, ``MAX_DROPOUT =
  3000``, ``MAX_MISORDER = 100``, 16-bit wrap-around counted in ``cycles``, and
  re-synchronisation after a big jump once two sequential packets confirm it
  (``bad_seq``). As in the RFC, the first packet of the probation is not counted: a
  loss-free stream of N packets reports ``received == expected == N - 1``.
* A.3 expected / lost / fraction lost: ``cumulative_lost`` is ``expected - received``
  clamped to the 24-bit signed range of an RR block; duplicates count as received, so it
  can be negative, exactly as the RFC specifies. ``fraction_lost`` is per reporting
  interval (8-bit fixed point, 0 when the interval saw no loss or net duplicates).
* A.8 interarrival jitter: ``J += (|D| - J) / 16`` in RTP timestamp units, where ``D``
  compares consecutive packets in arrival order (not sequence order). RTP timestamps
  are compared modulo 2**32, so timestamp wrap-around does not disturb it.

Why our own code: aiortc keeps equivalent counters inside its RTP receiver, but they are
tied to its asyncio transport; the lab needs them on packets from its own network
models and captures.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from dataclasses import dataclass

from ..errors import ParameterError

__all__ = ["ReceiverStats", "ReportBlock", "MIN_SEQUENTIAL", "MAX_DROPOUT", "MAX_MISORDER"]

#: Sequential packets needed before a source is declared valid (RFC 3550 A.1).
MIN_SEQUENTIAL = 2
#: Largest forward jump treated as loss rather than a restart (RFC 3550 A.1).
MAX_DROPOUT = 3000
#: Largest backward step treated as reordering/duplication (RFC 3550 A.1).
MAX_MISORDER = 100
RTP_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32
_LOST_MAX = 0x7FFFFF
_LOST_MIN = -0x800000
_SEEN_WINDOW = 2 * MAX_DROPOUT


@dataclass(frozen=True)
class ReportBlock:
    """The receiver-report figures for one interval (RFC 3550 section 6.4.1).

    Attributes
    ----------
    fraction_lost : int
        Packets lost in the interval / expected in the interval, 8-bit fixed point
        (0..255), as carried in an RR block.
    fraction : float
        The same fraction as a float (``fraction_lost / 256``).
    cumulative_lost : int
        Packets lost since the start, 24-bit signed (negative with duplicates).
    extended_highest_sequence : int
        Highest sequence number received, with the wrap-around count in the top 16 bits.
    jitter : int
        Interarrival jitter in RTP timestamp units, truncated to an integer.
    jitter_ms : float
        Interarrival jitter in ms.
    expected_interval : int
        Packets expected in the interval.
    received_interval : int
        Packets received in the interval.
    time : float or None
        The ``now`` given to :meth:`ReceiverStats.report` (seconds), if any.
    """

    fraction_lost: int
    fraction: float
    cumulative_lost: int
    extended_highest_sequence: int
    jitter: int
    jitter_ms: float
    expected_interval: int
    received_interval: int
    time: float | None


class ReceiverStats:
    """RFC 3550 reception statistics of one RTP source (one SSRC).

    Parameters
    ----------
    clock_rate : int
        RTP timestamp clock rate in Hz (8000 for PCMU and G.722, 48000 for Opus).

    Examples
    --------
    >>> st = ReceiverStats(8000)
    >>> for i in range(50):
    ...     st.update(i, i * 160, i * 0.020)
    >>> st.received, st.cumulative_lost, round(st.jitter, 6)
    (49, 0, 0.0)
    """

    def __init__(self, clock_rate: int) -> None:
        if isinstance(clock_rate, bool) or not isinstance(clock_rate, int) or clock_rate <= 0:
            raise ParameterError(f"clock_rate must be a positive integer in Hz, got {clock_rate!r}")
        self.clock_rate = clock_rate
        self._started = False
        self._probation = MIN_SEQUENTIAL
        self._max_seq = 0
        self._base_seq = 0
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._valid = False
        self._jitter = 0.0
        self._last_ts: int | None = None
        self._last_arrival = 0.0
        self._duplicates = 0
        self._reordered = 0
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()

    # ------------------------------------------------------------------ input
    def update(self, sequence_number: int, rtp_timestamp: int, arrival_time: float) -> None:
        """Account for one received RTP packet.

        Parameters
        ----------
        sequence_number : int
            RTP sequence number, 0..65535.
        rtp_timestamp : int
            RTP timestamp, 0..2**32-1.
        arrival_time : float
            Arrival time in seconds on the receiver's clock (any epoch).

        Raises
        ------
        ParameterError
            A field outside its wire range, or a non-finite arrival time.
        """
        seq = _wire_int("sequence_number", sequence_number, RTP_SEQ_MOD)
        ts = _wire_int("rtp_timestamp", rtp_timestamp, _TS_MOD)
        if isinstance(arrival_time, bool):
            raise ParameterError(f"arrival_time must be seconds (float), got {arrival_time!r}")
        try:
            now = float(arrival_time)
        except (TypeError, ValueError):
            raise ParameterError(f"arrival_time must be seconds (float), got {arrival_time!r}") from None
        if not math.isfinite(now):
            raise ParameterError(f"arrival_time must be finite, got {arrival_time!r}")

        if not self._started:
            # A.1: a new source starts on probation, with max_seq just before it.
            self._started = True
            self._init_seq(seq)
            self._max_seq = (seq - 1) % RTP_SEQ_MOD
            self._probation = MIN_SEQUENTIAL
        if self._update_seq(seq):
            self._update_jitter(ts, now)

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._seen.clear()
        self._seen_order.clear()

    def _update_seq(self, seq: int) -> bool:
        """RFC 3550 A.1 ``update_seq``; True when the packet counts as received."""
        udelta = (seq - self._max_seq) % RTP_SEQ_MOD
        if self._probation:
            if seq == (self._max_seq + 1) % RTP_SEQ_MOD:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    self._valid = True
                    self._count(seq)
                    return True
            else:
                self._probation = MIN_SEQUENTIAL - 1
                self._max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            # In order, with a permissible gap.
            if seq < self._max_seq:
                self._cycles += RTP_SEQ_MOD  # sequence number wrapped
            self._max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            # A very large jump: restart if two sequential packets confirm it.
            if seq == self._bad_seq:
                self._init_seq(seq)
                # Jitter continuity is lost with the old sequence space.
                self._last_ts = None
            else:
                self._bad_seq = (seq + 1) % RTP_SEQ_MOD
                return False
        # else: duplicate or reordered packet; counted as received (RFC 3550 A.1).
        self._count(seq)
        return True

    def _count(self, seq: int) -> None:
        self._received += 1
        ext = self._cycles + seq
        if ext > self._cycles + self._max_seq:
            ext -= RTP_SEQ_MOD  # a late packet from before the last wrap
        if ext in self._seen:
            self._duplicates += 1
            return
        if ext < self._cycles + self._max_seq:
            self._reordered += 1
        self._seen.add(ext)
        self._seen_order.append(ext)
        if len(self._seen_order) > _SEEN_WINDOW:
            self._seen.discard(self._seen_order.popleft())

    def _update_jitter(self, ts: int, now: float) -> None:
        """RFC 3550 A.8, in timestamp units; D from consecutive arrivals."""
        if self._last_ts is not None:
            dts = (ts - self._last_ts) % _TS_MOD
            if dts >= _TS_MOD // 2:
                dts -= _TS_MOD
            d = (now - self._last_arrival) * self.clock_rate - dts
            self._jitter += (abs(d) - self._jitter) / 16.0
        self._last_ts = ts
        self._last_arrival = now

    # ------------------------------------------------------------------ output
    @property
    def valid(self) -> bool:
        """True once the source has passed probation (RFC 3550 A.1)."""
        return self._valid

    @property
    def received(self) -> int:
        """Packets counted as received since validation (duplicates included)."""
        return self._received

    @property
    def extended_highest_sequence(self) -> int | None:
        """Highest sequence number seen plus ``65536 x`` wraps; None before validation."""
        if not self._valid:
            return None
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        """Packets expected: ``extended highest - base + 1`` (0 before validation)."""
        if not self._valid:
            return 0
        return self._cycles + self._max_seq - self._base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        """``expected - received`` clamped to 24-bit signed; negative with duplicates."""
        lost = self.expected - self._received
        return max(_LOST_MIN, min(_LOST_MAX, lost))

    @property
    def loss_rate(self) -> float:
        """``cumulative_lost / expected`` (0 when nothing is expected yet).

        Like the RFC counter it is based on, it goes negative when duplicates
        outnumber losses.
        """
        expected = self.expected
        return self.cumulative_lost / expected if expected > 0 else 0.0

    @property
    def jitter(self) -> float:
        """Interarrival jitter in RTP timestamp units."""
        return self._jitter

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in ms."""
        return 1000.0 * self._jitter / self.clock_rate

    @property
    def duplicates(self) -> int:
        """Packets whose extended sequence number was already received (recent window)."""
        return self._duplicates

    @property
    def reordered(self) -> int:
        """Packets that arrived after a higher sequence number (not duplicates)."""
        return self._reordered

    def report(self, now: float | None = None) -> ReportBlock:
        """Figures for an RR block, and start a new reporting interval (RFC 3550 A.3).

        Parameters
        ----------
        now : float, optional
            Time of the report in seconds (only recorded in the block).

        Returns
        -------
        ReportBlock
        """
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self._received - self._received_prior
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            fraction_lost = 0
        else:
            fraction_lost = min(255, (lost_interval << 8) // expected_interval)
        ext = self.extended_highest_sequence
        return ReportBlock(
            fraction_lost=fraction_lost,
            fraction=fraction_lost / 256.0,
            cumulative_lost=self.cumulative_lost,
            extended_highest_sequence=0 if ext is None else ext,
            jitter=int(self._jitter),
            jitter_ms=self.jitter_ms,
            expected_interval=expected_interval,
            received_interval=received_interval,
            time=None if now is None else float(now),
        )


def _wire_int(name: str, value: int, modulus: int) -> int:
    if isinstance(value, bool):
        raise ParameterError(f"{name} must be an integer 0..{modulus - 1}, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise ParameterError(f"{name} must be an integer 0..{modulus - 1}, got {value!r}") from None
    if not 0 <= v < modulus:
        raise ParameterError(f"{name} must be an integer 0..{modulus - 1}, got {value!r}")
    return v
