"""A userspace TCP impairment relay: loss on a TCP path shows up as delay, not as lost bytes.

Two parts, as everywhere in the lab:

:class:`TcpImpairment` (sans-IO, no clock, seeded)
    One direction of a TCP connection seen from the application. Bytes handed to
    :meth:`TcpImpairment.submit` at ``now`` are cut into segments (at most ``mss``
    bytes) and each segment goes through the :class:`~voicelab.net.ChannelConfig`'s
    models: serialization on ``bandwidth_kbps``, the loss model, and delay + jitter.
    A lost transmission is **not dropped**: the sender sends it again (below: when), and
    the retransmission goes through the loss and delay models again. The receiver hands
    bytes to the application strictly in order, so every segment behind a lost one waits
    for its retransmission (head-of-line blocking):
    ``deliver_i = max(arrive_i, deliver_{i-1})``. The result is a delivery time per
    segment, with byte order preserved and nothing lost.

    **When a lost segment is sent again** (``recovery="linux"``, the default) follows
    what Linux does (``net/ipv4/tcp_recovery.c``, ``tcp_output.c``) and the RFCs it
    implements. The receiver (S)ACKs every segment on arrival; the ACK takes
    ``ack_delay_ms`` back. A segment whose transmission at ``t`` was lost is resent at
    the earliest of:

    - **RACK** (RFC 8985 6.2, fast retransmit): once a segment sent after it has been
      (S)ACKed at ``a`` with round trip ``rtt``, at ``max(a, t + rtt + reo_wnd)`` with the
      reordering window ``reo_wnd = min(min_RTT/4, SRTT)``; at the ACK of the third
      later segment at the latest (DupThresh 3, RFC 5681 3.2: with no reordering seen
      Linux then uses ``reo_wnd = 0``). At 50 packets/s this is one packet interval plus
      one RTT after the loss, not an RTO.
    - **Tail loss probe** (RFC 8985 7): when nothing is sent after it, the last segment
      is probed ``PTO`` after its transmission, ``PTO = 2 SRTT`` (at least
      ``tlp_min_ms``, 10 ms; Linux adds two jiffies instead), plus ``wc_delack_ms``
      (WCDelAckT, 200 ms) when it is the only segment in flight, and at most the RTO.
      The probe's ACK in turn lets RACK repair earlier losses (two losses in a row on a
      short path: ~30 ms and ~10 ms late).
    - **RTO** (RFC 6298): ``SRTT + max(G, 4 RTTVAR)``, 1 s before the first sample, at
      least ``rto_min_ms`` (200 ms, as Linux; RFC 6298 says 1 s) and at most
      ``rto_max_ms``, doubled on each further expiry for the same segment (5.5). A
      **lost retransmission** is repaired only by the RTO: in recovery Linux's
      proportional rate reduction (RFC 6937) lets no new data out while only the
      retransmission is in flight, so nothing later gets ACKed for RACK to see; the
      kernel cross-check shows exactly this (one RTO, ~210 ms, after the fast
      retransmit). Probes are not sent in recovery (Linux probes in the Open state
      only).

    ``recovery="rto"`` is the lab's first model, kept to compare against: every loss
    waits one RTO (doubling on repeated loss) and nothing else. RTT samples (both
    modes) are the forward time of a segment sent once (Karn's rule) plus
    ``ack_delay_ms`` for the ACK's way back (default: the configured ``delay_ms``),
    taken into account once the ACK would have arrived.

    Because a repair can depend on later writes, :meth:`TcpImpairment.submit` returns
    only the deliveries decided so far; :attr:`TcpImpairment.next_event_s` says when the
    next repair is due and :meth:`TcpImpairment.poll` (at that time) or
    :meth:`TcpImpairment.flush` (at the end) returns the rest. Everything is decided on
    the caller's clock, in time order, so a seed gives one schedule.

    **Cross-checked** against Linux TCP (:mod:`voicelab.net.tcpkernel`,
    ``tests/test_tcp_kernel_check.py``): a 50 messages/s stream between two network
    namespaces with random drops from iptables' ``statistic`` match; at 2 % and 5 %
    loss the kernel's delayed fraction, the median delay of delayed messages (~20 ms)
    and the p99 lie within the model's run-to-run range (+-10 ms for timer
    granularity); the ``"rto"`` model's (120-140 ms median) do not.

    Simplifications, stated: the receiver ACKs every segment at once (Linux's receiver
    does on this stream; a delayed ACK would only change the flight size the probe
    timeout sees); no congestion window (a voice stream of a few kbit/s never fills
    one), so new data is never held at the sender, also during recovery, and after a
    timeout slow start is not modelled; retransmissions do not queue behind later
    segments on the ``bandwidth_kbps`` link; no spurious-retransmission undo (DSACK) and
    no growth of ``reo_wnd`` (the model never reorders); reordering and duplication of
    the config are ignored (TCP hides both); timers are exact (Linux rounds to jiffies:
    4 ms at HZ=250).

:class:`TcpRelay` (asyncio, through the network interface)
    Accepts connections on a front address, opens one connection to the target per
    accepted one, and forwards each direction through its own :class:`TcpImpairment`
    (seeded per connection and direction), writing each segment at its delivery time
    on the loop clock; one loop timer per direction fires at the next delivery or the
    core's next repair (:attr:`TcpImpairment.next_event_s`), whichever is first. The
    relay's own kernel sockets on 127.0.0.1 are lossless; all
    loss is the model's.

Why our own: netem is not available on every machine the lab runs on (and works on
packets, below TCP); a userspace TCP proxy that turns the lab's channel model into TCP
behaviour is small and deterministic.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validate import nonneg_ms, positive
from ..errors import ParameterError
from .channel import ChannelConfig, _seed_sequence

__all__ = ["TcpImpairment", "TcpDelivery", "TcpImpairmentStats", "TcpRelay", "RECOVERY_MODES"]

#: Timers fire 0-1 ms late on asyncio's selector loop; deliveries are armed half of that
#: early (as in :mod:`voicelab.net.relay`).
_EARLY_S = 0.0005
#: RFC 6298 clock granularity G, seconds.
_G_S = 0.001


@dataclass(frozen=True)
class TcpDelivery:
    """When one segment reaches the receiving application.

    Attributes
    ----------
    deliver_at : float
        Time the bytes are handed to the application (s), after any head-of-line wait.
    data : bytes
        The segment's bytes (in stream order across deliveries).
    sent_at : float
        ``now`` of the :meth:`TcpImpairment.submit` call (s).
    arrived_at : float
        Time the copy that got through reached the receiver (s), before waiting for
        earlier segments.
    retransmissions : int
        How many times this segment was lost and sent again.
    segment : int
        Ordinal of the segment in the stream (0-based).
    """

    deliver_at: float
    data: bytes
    sent_at: float
    arrived_at: float
    retransmissions: int
    segment: int

    @property
    def transit_s(self) -> float:
        """``deliver_at - sent_at``: what the application sees, in seconds."""
        return self.deliver_at - self.sent_at

    @property
    def head_of_line_s(self) -> float:
        """Time spent waiting for earlier segments, in seconds (0 when not blocked)."""
        return self.deliver_at - self.arrived_at


@dataclass
class TcpImpairmentStats:
    """Counters of one direction.

    Attributes
    ----------
    chunks : int
        :meth:`TcpImpairment.submit` calls.
    segments : int
    bytes : int
    transmissions : int
        Segment transmissions including retransmissions.
    retransmissions : int
    head_of_line_blocked : int
        Segments that arrived but had to wait for an earlier one.
    fast_retransmits, tail_loss_probes, timeouts : int
        Retransmissions by cause (``recovery="linux"``): RACK / DupThresh, a tail loss
        probe, the retransmission timer. With ``recovery="rto"`` all are timeouts.
    transit_s : list of float
        Per segment, delivery time minus submit time (s), in stream order.
    """

    chunks: int = 0
    segments: int = 0
    bytes: int = 0
    transmissions: int = 0
    retransmissions: int = 0
    head_of_line_blocked: int = 0
    transit_s: list = field(default_factory=list)
    fast_retransmits: int = 0
    tail_loss_probes: int = 0
    timeouts: int = 0

    def merge(self, other: "TcpImpairmentStats") -> "TcpImpairmentStats":
        """A new object with both sets of counters added (lists concatenated)."""
        return TcpImpairmentStats(
            self.chunks + other.chunks, self.segments + other.segments, self.bytes + other.bytes,
            self.transmissions + other.transmissions, self.retransmissions + other.retransmissions,
            self.head_of_line_blocked + other.head_of_line_blocked, self.transit_s + other.transit_s,
            self.fast_retransmits + other.fast_retransmits, self.tail_loss_probes + other.tail_loss_probes,
            self.timeouts + other.timeouts,
        )


class _Seg:
    """One segment of the stream until it is delivered (``recovery="linux"``)."""

    __slots__ = ("index", "data", "sent_at", "departure", "ser", "tries", "timeouts", "arrived")

    def __init__(self, index: int, data: bytes, sent_at: float, departure: float, ser: float) -> None:
        self.index, self.data, self.sent_at, self.departure, self.ser = index, data, sent_at, departure, ser
        self.tries = 0  # retransmissions so far
        self.timeouts = 0  # consecutive RTO expiries (the backoff exponent)
        self.arrived: float | None = None


class _Pending:
    """A segment whose latest transmission was lost, and the candidate times of its repair."""

    __slots__ = ("seg", "kind", "sent", "rack_at", "tlp_at", "rto_at", "sacked")

    def __init__(self, seg: _Seg, kind: str, sent: float, *, rto_at: float, tlp_at: float = math.inf) -> None:
        self.seg, self.kind, self.sent = seg, kind, sent  # kind: "first" transmission or a "retx"
        self.rack_at, self.tlp_at, self.rto_at = math.inf, tlp_at, rto_at
        self.sacked = 0  # later transmissions (S)ACKed so far

    @property
    def due(self) -> float:
        return min(self.rack_at, self.tlp_at, self.rto_at)


RECOVERY_MODES = ("linux", "rto")


class TcpImpairment:
    """One direction of a TCP connection over an impaired path, sans-IO (see module docstring).

    Parameters
    ----------
    config : ChannelConfig
        Delay, jitter, bandwidth and loss of the path (``reorder`` and
        ``duplicate_rate`` are ignored: TCP hides them).
    seed : None, int, numpy.random.Generator or numpy.random.SeedSequence
        Randomness of loss and delay; same seed, same schedule.
    rto_min_ms, rto_max_ms : float
        Bounds of the retransmission timeout (default 200 ms, as Linux; 60 s).
    initial_rto_ms : float
        RTO before the first RTT sample (RFC 6298: 1 s).
    ack_delay_ms : float, optional
        Time of the ACK's way back, added to RTT samples (default ``config.delay_ms``).
    mss : int
        Largest segment in bytes (default 1448: Ethernet MTU minus IP/TCP headers
        with timestamps).
    header_bytes : int
        IP + TCP header bytes per segment, counted on the ``bandwidth_kbps`` link.
    recovery : {"linux", "rto"}
        How a loss is repaired: RACK / tail loss probe / RTO as Linux (default), or
        only by the RTO (the lab's first model). See the module docstring.
    tlp_min_ms : float
        Smallest probe timeout (default 10 ms).
    wc_delack_ms : float
        Worst-case delayed-ACK time added to the probe timeout when one segment is in
        flight (RFC 8985 WCDelAckT, default 200 ms).
    dupthresh : int
        Later segments (S)ACKed that trigger a fast retransmit at once (default 3).

    Examples
    --------
    >>> cfg = ChannelConfig(delay_ms=10.0, loss_trace=(1,))
    >>> tcp = TcpImpairment(cfg, seed=0, initial_rto_ms=200)
    >>> [round(d.deliver_at, 3) for d in tcp.submit(b"a", 0.0) + tcp.submit(b"b", 0.02) + tcp.submit(b"c", 0.04) + tcp.flush()]
    [0.01, 0.07, 0.07]
    >>> tcp = TcpImpairment(cfg, seed=0, initial_rto_ms=200, recovery="rto")
    >>> [round(d.deliver_at, 3) for d in tcp.submit(b"a", 0.0) + tcp.submit(b"b", 0.02) + tcp.submit(b"c", 0.04)]
    [0.01, 0.23, 0.23]
    """

    def __init__(
        self,
        config: ChannelConfig,
        *,
        seed: Any = None,
        rto_min_ms: float = 200.0,
        rto_max_ms: float = 60_000.0,
        initial_rto_ms: float = 1000.0,
        ack_delay_ms: float | None = None,
        mss: int = 1448,
        header_bytes: int = 52,
        recovery: str = "linux",
        tlp_min_ms: float = 10.0,
        wc_delack_ms: float = 200.0,
        dupthresh: int = 3,
    ) -> None:
        if recovery not in RECOVERY_MODES:
            raise ParameterError(f"recovery must be one of {', '.join(RECOVERY_MODES)}, got {recovery!r}")
        self.recovery = recovery
        self.tlp_min_s = nonneg_ms(tlp_min_ms, "tlp_min_ms") / 1000.0
        self.wc_delack_s = nonneg_ms(wc_delack_ms, "wc_delack_ms") / 1000.0
        if isinstance(dupthresh, bool) or not isinstance(dupthresh, (int, np.integer)) or dupthresh < 1:
            raise ParameterError(f"dupthresh must be an integer >= 1, got {dupthresh!r}")
        self.dupthresh = int(dupthresh)
        if not isinstance(config, ChannelConfig):
            raise ParameterError(f"config must be a ChannelConfig, got {type(config).__name__}")
        self.config = config
        self.rto_min_s = positive(rto_min_ms, "rto_min_ms") / 1000.0
        self.rto_max_s = positive(rto_max_ms, "rto_max_ms") / 1000.0
        if self.rto_max_s < self.rto_min_s:
            raise ParameterError(f"rto_max_ms {rto_max_ms:g} is below rto_min_ms {rto_min_ms:g}")
        self.initial_rto_s = positive(initial_rto_ms, "initial_rto_ms") / 1000.0
        self.ack_delay_s = (config.delay_ms if ack_delay_ms is None else nonneg_ms(ack_delay_ms, "ack_delay_ms")) / 1000.0
        for name, v, lo in (("mss", mss, 1), ("header_bytes", header_bytes, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ParameterError(f"{name} must be an integer >= {lo}, got {v!r}")
        self.mss, self.header_bytes = int(mss), int(header_bytes)
        loss_ss, delay_ss = _seed_sequence(seed).spawn(2)
        self._loss_rng = np.random.default_rng(loss_ss)
        self._delay_rng = np.random.default_rng(delay_ss)
        self._loss = config.loss_model()
        self._delay = config.delay_model()
        self._rate_bps = None if config.bandwidth_kbps is None else config.bandwidth_kbps * 1000.0
        self._t_free = -math.inf
        self._attempts = 0  # transmissions so far: the loss model's packet ordinal
        self._last_deliver = -math.inf
        self._last_now = -math.inf
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._min_rtt: float | None = None
        self._segs: deque[_Seg] = deque()  # sent, not yet delivered (recovery="linux")
        self._pending: list[_Pending] = []
        self._unacked: deque[float] = deque()  # ACK times of delivered transmissions (for the flight size)
        self._next_index = 0
        self._pending_samples: deque[tuple[float, float]] = deque()  # (ack time, rtt sample)
        self.stats = TcpImpairmentStats()

    @property
    def rto_s(self) -> float:
        """The current retransmission timeout in seconds (before any backoff)."""
        if self._srtt is None:
            return min(max(self.initial_rto_s, self.rto_min_s), self.rto_max_s)
        rto = self._srtt + max(_G_S, 4.0 * self._rttvar)
        return min(max(rto, self.rto_min_s), self.rto_max_s)

    @property
    def srtt_s(self) -> float | None:
        """Smoothed RTT in seconds (None before the first sample)."""
        return self._srtt

    def _take_samples(self, now: float) -> None:
        while self._pending_samples and self._pending_samples[0][0] <= now:
            _, r = self._pending_samples.popleft()
            self._min_rtt = r if self._min_rtt is None else min(self._min_rtt, r)
            if self._srtt is None:  # RFC 6298 2.2
                self._srtt, self._rttvar = r, r / 2.0
            else:  # 2.3, alpha 1/8, beta 1/4
                self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - r)
                self._srtt = 0.875 * self._srtt + 0.125 * r

    def _transmit(self, t: float) -> tuple[bool, float]:
        lost = self._loss.lost(self._loss_rng, self._attempts)
        self._attempts += 1
        self.stats.transmissions += 1
        return lost, self._delay.sample_ms(self._delay_rng) / 1000.0

    def _check(self, data: Any, now: Any) -> tuple[bytes, float]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ParameterError(f"data must be bytes, got {type(data).__name__}")
        now = self._check_now(now)
        return bytes(data), now

    def _check_now(self, now: Any) -> float:
        try:
            now = float(now)
        except (TypeError, ValueError):
            raise ParameterError(f"now must be a time in seconds, got {now!r}") from None
        if not math.isfinite(now) or now < self._last_now - 1e-9:
            raise ParameterError(f"now must be finite and nondecreasing, got {now!r} after {self._last_now!r}")
        self._last_now = max(self._last_now, now)
        return now

    def submit(self, data: bytes, now: float) -> list[TcpDelivery]:
        """The application writes ``data`` at ``now``; which bytes come out, and when?

        Parameters
        ----------
        data : bytes
            Bytes written (may be empty: nothing to deliver).
        now : float
            Seconds, nondecreasing across calls (also across :meth:`poll`).

        Returns
        -------
        list of TcpDelivery
            The segments whose delivery time is now known, in stream order:
            ``deliver_at`` never decreases across all calls, and is never before ``now``
            when :meth:`poll` was called at each :attr:`next_event_s` (otherwise a repair
            that fell due before ``now`` is decided late, at its own time, and its
            delivery may lie before ``now``).
            With ``recovery="rto"`` that is every segment of ``data``; with ``"linux"``
            a lost segment (and everything behind it) is known only once its repair is
            decided, which can depend on later writes: call :meth:`poll` at
            :attr:`next_event_s` (or :meth:`flush` at the end) for the rest.

        Raises
        ------
        ParameterError
            ``data`` is not bytes or ``now`` is not finite or goes backwards.
        """
        data, now = self._check(data, now)
        self._take_samples(now)
        self.stats.chunks += 1
        if self.recovery == "rto":
            return self._submit_rto(data, now)
        out = self._advance(now)
        for off in range(0, len(data), self.mss):
            self._send_new(data[off : off + self.mss], now)
        return out + self._emit()

    def poll(self, now: float) -> list[TcpDelivery]:
        """Let time pass to ``now``: repairs due by then happen; the deliveries this decides.

        Parameters
        ----------
        now : float
            Seconds, nondecreasing across calls.

        Returns
        -------
        list of TcpDelivery
            As :meth:`submit` (always empty with ``recovery="rto"``).
        """
        now = self._check_now(now)
        if self.recovery == "rto":
            return []
        return self._advance(now)

    def flush(self) -> list[TcpDelivery]:
        """No more writes: run every pending repair to its end; the remaining deliveries."""
        if self.recovery == "rto":
            return []
        return self._advance(math.inf)

    @property
    def next_event_s(self) -> float | None:
        """When the next repair (retransmission) is due, in seconds; None when none is pending."""
        if not self._pending:
            return None
        return min(p.due for p in self._pending)

    # --- recovery="linux" ------------------------------------------------------------
    def _reo_wnd(self) -> float:
        # RFC 8985 6.2 step 4 / Linux tcp_rack_reo_wnd: min_RTT/4, at most SRTT
        if self._srtt is None or self._min_rtt is None:
            return 0.0
        return min(self._min_rtt / 4.0, self._srtt)

    def _pto(self, flight: int) -> float:
        """RFC 8985 7.2: 2 SRTT (+ WCDelAckT with one segment in flight), at least tlp_min, at most the RTO."""
        if self._srtt is None:
            return self.rto_s
        pto = 2.0 * self._srtt + (self.wc_delack_s if flight <= 1 else 0.0)
        return min(max(pto, self.tlp_min_s), self.rto_s)

    def _rack(self, sent: float, index: int, ack: float) -> None:
        """Segment ``index`` sent at ``sent`` is (S)ACKed at ``ack``: RACK for older lost ones (RFC 8985 6.2).

        "Older" is RACK_sent_after: an earlier send time, or the same time and a lower sequence.
        """
        rtt = ack - sent
        reo = self._reo_wnd()
        for p in self._pending:
            if p.kind != "first" or (p.sent, p.seg.index) >= (sent, index):
                continue
            p.sacked += 1
            cand = max(ack, p.sent + rtt + reo)
            if p.sacked >= self.dupthresh:  # DupThresh: with no reordering seen, reo_wnd = 0
                cand = min(cand, max(ack, p.sent + rtt))
            if cand < p.rack_at:
                p.rack_at = cand

    def _transmit_seg(self, seg: "_Seg", t: float, *, first: bool, flight: int) -> None:
        lost, delay = self._transmit(t)
        if not first:
            seg.tries += 1
        if lost:
            if first:
                in_recovery = any(q.kind == "retx" for q in self._pending)  # Linux probes only in the Open state
                tlp = math.inf if in_recovery else t + self._pto(flight)
                p = _Pending(seg, "first", t, tlp_at=tlp, rto_at=t + self.rto_s)
            else:  # a lost retransmission: only the RTO repairs it (module docstring)
                p = _Pending(seg, "retx", t, rto_at=t + min(self.rto_s * (2 ** seg.timeouts), self.rto_max_s))
            self._pending.append(p)
            if seg.tries > 64:
                raise ParameterError("more than 64 retransmissions of one segment: the configured loss is too high for TCP")
            return
        seg.arrived = t + delay
        ack = seg.arrived + self.ack_delay_s
        self._unacked.append(ack)
        if seg.tries == 0:  # Karn: sample only segments sent once
            self._pending_samples.append((ack, ack - seg.departure + seg.ser))
        self._rack(t, seg.index, ack)

    def _send_new(self, data: bytes, now: float) -> None:
        ser = 0.0 if self._rate_bps is None else (len(data) + self.header_bytes) * 8.0 / self._rate_bps
        departure = (max(now, self._t_free) + ser) if self._rate_bps is not None else now
        if self._rate_bps is not None:
            self._t_free = departure
        for p in self._pending:  # new data goes out: the probe timer moves to it
            p.tlp_at = math.inf
        seg = _Seg(self._next_index, data, now, departure, ser)
        self._next_index += 1
        self._segs.append(seg)
        while self._unacked and self._unacked[0] <= departure:
            self._unacked.popleft()
        # in flight when it leaves: itself, the lost ones not yet repaired, those not yet ACKed
        flight = 1 + len(self._pending) + sum(1 for a in self._unacked if a > departure)
        self._transmit_seg(seg, departure, first=True, flight=flight)

    def _advance(self, now: float) -> list[TcpDelivery]:
        out: list[TcpDelivery] = []
        while self._pending:
            p = min(self._pending, key=lambda q: (q.due, q.seg.index))
            t = p.due
            if t > now:
                break
            self._pending.remove(p)
            self._take_samples(t)
            if t == p.rto_at and p.rto_at < min(p.rack_at, p.tlp_at):
                p.seg.timeouts += 1  # RFC 6298 5.5: back off the timer
                self.stats.timeouts += 1
            elif p.kind == "first" and t == p.tlp_at and p.tlp_at < p.rack_at:
                self.stats.tail_loss_probes += 1
            else:
                self.stats.fast_retransmits += 1
            self._transmit_seg(p.seg, t, first=False, flight=0)
            out += self._emit()
        return out

    def _emit(self) -> list[TcpDelivery]:
        out: list[TcpDelivery] = []
        while self._segs and self._segs[0].arrived is not None:
            s = self._segs.popleft()
            deliver = max(s.arrived, self._last_deliver)
            if deliver > s.arrived + 1e-12:
                self.stats.head_of_line_blocked += 1
            self._last_deliver = deliver
            self.stats.segments += 1
            self.stats.bytes += len(s.data)
            self.stats.retransmissions += s.tries
            self.stats.transit_s.append(deliver - s.sent_at)
            out.append(TcpDelivery(deliver, s.data, s.sent_at, s.arrived, s.tries, s.index))
        return out

    # --- recovery="rto": the lab's first model, kept for comparison -------------------
    def _submit_rto(self, data: bytes, now: float) -> list[TcpDelivery]:
        out: list[TcpDelivery] = []
        for off in range(0, len(data), self.mss):
            seg = data[off : off + self.mss]
            ser = 0.0 if self._rate_bps is None else (len(seg) + self.header_bytes) * 8.0 / self._rate_bps
            departure = (max(now, self._t_free) + ser) if self._rate_bps is not None else now
            if self._rate_bps is not None:
                self._t_free = departure
            rto = self.rto_s
            send_t, tries = departure, 0
            while True:
                lost, delay = self._transmit(send_t)
                if not lost:
                    break
                # timeout, retransmit with exponential backoff (RFC 6298 5.5-5.6)
                send_t = send_t + min(rto * (2 ** tries), self.rto_max_s) + ser
                tries += 1
                if tries > 64:  # a path that loses (almost) everything: give up growing
                    raise ParameterError("more than 64 retransmissions of one segment: the configured loss is too high for TCP")
            arrived = send_t + delay
            if tries == 0:  # Karn: sample only segments sent once
                self._pending_samples.append((arrived + self.ack_delay_s, arrived - departure + ser + self.ack_delay_s))
            deliver = max(arrived, self._last_deliver)
            if deliver > arrived + 1e-12:
                self.stats.head_of_line_blocked += 1
            self._last_deliver = deliver
            self.stats.segments += 1
            self.stats.bytes += len(seg)
            self.stats.retransmissions += tries
            self.stats.timeouts += tries
            self.stats.transit_s.append(deliver - now)
            out.append(TcpDelivery(deliver, seg, now, arrived, tries, self.stats.segments - 1))
        return out


# ---------------------------------------------------------------------------------------
# asyncio relay
# ---------------------------------------------------------------------------------------


class _Side(asyncio.Protocol):
    """One socket of a relayed connection (front: accepted; back: to the target)."""

    def __init__(self, conn: "_Conn", name: str) -> None:
        self.conn = conn
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        if self.name == "front":
            self.conn.front_made(self)

    def data_received(self, data: bytes) -> None:
        self.conn.received(self.name, data)

    def eof_received(self) -> bool:
        self.conn.eof(self.name)
        return True  # keep our writing half open until the queued bytes are out

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        self.conn.eof(self.name)
        if not self.lost.done():
            self.lost.set_result(None)


class _Pipe:
    """One direction: the impairment core, a FIFO of deliveries and one loop timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, core: TcpImpairment) -> None:
        self.loop = loop
        self.core = core
        self.queue: deque[TcpDelivery] = deque()
        self.handle: asyncio.TimerHandle | None = None
        self.out: _Side | None = None  # where bytes go (None until connected)
        self.eof = False
        self.wrote_transit_s: list[float] = []

    def submit(self, data: bytes) -> None:
        self.queue.extend(self.core.submit(data, self.loop.time()))
        self.rearm()

    def rearm(self) -> None:
        """The core's next repair may be earlier than the armed timer: re-arm."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.arm()

    def arm(self) -> None:
        if self.handle is not None or self.out is None:
            return
        repair = self.core.next_event_s
        at = min(self.queue[0].deliver_at - _EARLY_S if self.queue else math.inf, math.inf if repair is None else repair)
        if at < math.inf:
            self.handle = self.loop.call_at(at, self.fire)
        elif self.eof:
            self.finish()

    def fire(self) -> None:
        self.handle = None
        now = self.loop.time()
        self.queue.extend(self.core.poll(now))
        tr = self.out.transport if self.out is not None else None
        while self.queue and self.queue[0].deliver_at <= now + _EARLY_S + 1e-9:
            d = self.queue.popleft()
            if tr is not None and not tr.is_closing():
                tr.write(d.data)
                self.wrote_transit_s.append(now - d.sent_at)
        self.arm()

    def finish(self) -> None:
        tr = self.out.transport if self.out is not None else None
        if tr is not None and not tr.is_closing():
            tr.close()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.queue.clear()


class _Conn:
    """One relayed connection: front socket, back socket, a pipe each way."""

    def __init__(self, relay: "TcpRelay", index: int) -> None:
        self.relay = relay
        loop = asyncio.get_running_loop()
        s_up, s_down = np.random.SeedSequence([relay.seed, index]).spawn(2)
        self.up = _Pipe(loop, TcpImpairment(relay.uplink_config, seed=s_up, **relay.tcp_options))
        self.down = _Pipe(loop, TcpImpairment(relay.downlink_config, seed=s_down, **relay.tcp_options))
        self.front: _Side | None = None
        self.back: _Side | None = None

    def front_made(self, side: _Side) -> None:
        self.front = side
        self.down.out = side
        side.transport.pause_reading()  # type: ignore[union-attr]
        self.relay._spawn(self._connect_back())

    async def _connect_back(self) -> None:
        host, port = self.relay.target
        try:
            _, back = await self.relay.iface.create_connection(lambda: _Side(self, "back"), host, port)
        except OSError:
            self.relay.refused += 1
            if self.front is not None and self.front.transport is not None:
                self.front.transport.close()
            return
        self.back = back
        self.relay._sides.add(back)
        self.up.out = back
        self.up.arm()
        if self.front is not None and self.front.transport is not None and not self.front.transport.is_closing():
            self.front.transport.resume_reading()

    def received(self, name: str, data: bytes) -> None:
        (self.up if name == "front" else self.down).submit(data)

    def eof(self, name: str) -> None:
        pipe = self.up if name == "front" else self.down
        if not pipe.eof:
            pipe.eof = True
            pipe.arm()

    def close(self) -> None:
        for p in (self.up, self.down):
            p.close()
        for s in (self.front, self.back):
            if s is not None and s.transport is not None:
                s.transport.abort()


class TcpRelay:
    """Relay TCP connections to ``target`` through a TCP impairment model each way.

    Parameters
    ----------
    iface : NetworkInterface
        Opens the listening socket and the connections to the target.
    target : (host, port)
        Where accepted connections are relayed to.
    uplink, downlink : ChannelConfig
        Client -> target and target -> client path (see :class:`TcpImpairment`).
    listen : (host, port)
        Front address (port 0: any free port; read :attr:`front_address`).
    seed : int
        Seed; connection ``i`` uses ``SeedSequence([seed, i])`` split into up and down.
    **tcp_options
        ``recovery``, ``rto_min_ms``, ``rto_max_ms``, ``initial_rto_ms``,
        ``ack_delay_ms``, ``mss``, ``header_bytes``, ``tlp_min_ms``, ``wc_delack_ms``,
        ``dupthresh`` for :class:`TcpImpairment`.

    Attributes
    ----------
    refused : int
        Accepted connections whose onward connection to the target failed (closed).

    Examples
    --------
    >>> relay = await TcpRelay(iface, server_addr, uplink=ChannelConfig(loss_rate=0.02)).start()  # doctest: +SKIP
    >>> relay.front_address, relay.up.retransmissions                                         # doctest: +SKIP
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
        **tcp_options: Any,
    ) -> None:
        if not (isinstance(target, tuple) and len(target) == 2):
            raise ParameterError(f"relay target must be a (host, port) pair, got {target!r}")
        known = {"rto_min_ms", "rto_max_ms", "initial_rto_ms", "ack_delay_ms", "mss", "header_bytes", "recovery",
                 "tlp_min_ms", "wc_delack_ms", "dupthresh"}
        unknown = set(tcp_options) - known
        if unknown:
            raise ParameterError(f"unknown TCP option(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ParameterError(f"seed must be an integer >= 0, got {seed!r}")
        self.iface = iface
        self.target = target
        self.listen = listen
        self.uplink_config = uplink or ChannelConfig()
        self.downlink_config = downlink or ChannelConfig()
        self.seed = int(seed)
        self.tcp_options = dict(tcp_options)
        TcpImpairment(self.uplink_config, **self.tcp_options)  # validate the options now
        self.connections: list[_Conn] = []
        self.refused = 0
        self._server: Any = None
        self._sides: set[_Side] = set()
        self._tasks: set[asyncio.Task] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _accept(self) -> _Side:
        conn = _Conn(self, len(self.connections))
        self.connections.append(conn)
        side = _Side(conn, "front")
        self._sides.add(side)
        return side

    async def start(self) -> "TcpRelay":
        """Listen; returns self."""
        self._server = await self.iface.create_server(self._accept, self.listen[0], self.listen[1])
        return self

    @property
    def front_address(self) -> tuple[str, int]:
        """Where clients connect."""
        return tuple(self._server.sockets[0].getsockname()[:2])  # type: ignore[return-value]

    def _stats(self, which: str) -> TcpImpairmentStats:
        total = TcpImpairmentStats()
        for c in self.connections:
            total = total.merge(getattr(c, which).core.stats)
        return total

    @property
    def up(self) -> TcpImpairmentStats:
        """Client -> target counters, summed over connections (model transit times)."""
        return self._stats("up")

    @property
    def down(self) -> TcpImpairmentStats:
        """Target -> client counters, summed over connections."""
        return self._stats("down")

    def measured_transit_s(self, which: str = "up") -> list[float]:
        """Write time minus receive time of every segment the relay forwarded (s), measured on the loop clock."""
        if which not in ("up", "down"):
            raise ParameterError(f"which must be 'up' or 'down', got {which!r}")
        return [t for c in self.connections for t in getattr(c, which).wrote_transit_s]

    async def close(self) -> None:
        """Stop listening, abort every relayed connection, wait until all sockets are closed."""
        if self._server is not None:
            self._server.close()
        for c in self.connections:
            c.close()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for c in self.connections:  # a back connection that completed during the gather
            c.close()
        waits = [s.lost for s in self._sides if s.transport is not None]
        if waits:
            await asyncio.wait(waits, timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> "TcpRelay":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()
