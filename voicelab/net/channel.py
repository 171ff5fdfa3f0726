"""A one-way network path as a sans-IO model: packets in at ``now``, arrival times out.

:class:`ChannelConfig` is one flat, frozen description of a link, shaped like
libwebrtc's ``BuiltInNetworkBehaviorConfig`` (queue delay and its spread, capacity,
queue length, loss and mean burst length, reordering allowed or not, plus duplication and
trace replay). :class:`Channel` applies it to packets one at a time::

    channel = Channel(ChannelConfig(delay_ms=40, jitter_ms=10, loss_rate=0.02), seed=1)
    arrivals = channel.transmit(now=0.020, size_bytes=200)   # [] if lost, 2 times if duplicated

What happens to a packet, in order
----------------------------------
1. **Capacity queue** (only with ``bandwidth_kbps``): the link sends one packet at a
   time, each taking ``size_bytes * 8 / (bandwidth_kbps * 1000)`` seconds. A packet that
   finds the link busy waits in a FIFO queue; with ``queue_packets`` set and that many
   packets already waiting (not counting the one being sent), it is dropped (drop-tail,
   reason ``"queue"``).
2. **Loss model** (Bernoulli, Gilbert-Elliott or a trace): reason ``"loss"``.
3. **Delay**: ``delay_ms`` + jitter is added to the time the packet left the link.
   Without ``reorder`` a packet never overtakes the previous one:
   ``arrival_i = max(candidate_i, last_arrival)`` (libwebrtc's ``allow_reordering=false``).
4. **Duplication**: with probability ``duplicate_rate`` a second copy arrives, with its
   own delay draw.

Randomness: the seed is split (``SeedSequence.spawn``) into independent streams for loss,
delay, duplication and the duplicate's delay. Each stream is consumed the same way for
every packet whatever happens to it (a lost packet still draws its delay; a packet
dropped by the queue still asks the loss model), so changing the jitter or the bandwidth
does not change which packets the loss model drops, and changing the loss does not change
the delays. Same config + same seed = identical :attr:`Channel.fates`.

Why our own: libwebrtc's network emulation and netem do this in C++ / the kernel; the lab
needs the same behaviour as a deterministic Python object for the offline simulator and
the in-process virtual network.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validate import nonneg_ms
from ..errors import ParameterError
from .delay import JITTER_DISTRIBUTIONS, DelayModel
from .loss import BernoulliLoss, GilbertElliottLoss, LossModel, NoLoss, TraceLoss, check_loss_rate

__all__ = ["ChannelConfig", "Channel", "ChannelStats", "PacketFate"]

_EPS = 1e-12


@dataclass(frozen=True)
class ChannelConfig:
    """One direction of a network path (flat, like libwebrtc's BuiltInNetworkBehaviorConfig).

    Parameters
    ----------
    delay_ms : float
        Fixed one-way delay in ms (>= 0).
    jitter_ms : float
        Random delay variation in ms (>= 0); see :class:`~voicelab.net.DelayModel` for
        what it means under each distribution.
    jitter_distribution : {"normal", "uniform", "pareto"}
        Shape of the jitter.
    reorder : bool
        Whether a packet may overtake an earlier one. False keeps arrivals in sending
        order (``arrival_i = max(candidate_i, last_arrival)``).
    loss_rate : float
        Long-run fraction of packets lost by the loss model, ``0 <= loss_rate < 1``.
    burst_length : float or None
        None: independent (Bernoulli) loss. A number: Gilbert-Elliott loss with that mean
        burst length in packets (libwebrtc's ``avg_burst_loss_length``; 1.0 is allowed and
        gives isolated single losses).
    loss_trace : tuple of int or None
        Replay these lost packet ordinals instead of a random model (then ``loss_rate``
        must be 0 and ``burst_length`` None).
    bandwidth_kbps : float or None
        Link capacity in kbit/s (1 kbit = 1000 bit); None = unlimited (no serialization
        delay, no queue).
    queue_packets : int or None
        Drop-tail limit on packets waiting for the link; None = unlimited. Only matters
        with ``bandwidth_kbps``.
    duplicate_rate : float
        Probability that a delivered packet arrives twice, ``0 <= duplicate_rate < 1``.

    Raises
    ------
    ParameterError
        On any out-of-range value, with a message naming the field and the value.

    Examples
    --------
    >>> cfg = ChannelConfig(delay_ms=40, jitter_ms=10, loss_rate=0.02, burst_length=2)
    >>> cfg.with_(loss_rate=0.05).loss_rate
    0.05
    >>> ChannelConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    jitter_distribution: str = "normal"
    reorder: bool = False
    loss_rate: float = 0.0
    burst_length: float | None = None
    loss_trace: tuple[int, ...] | None = None
    bandwidth_kbps: float | None = None
    queue_packets: int | None = None
    duplicate_rate: float = 0.0

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "delay_ms", nonneg_ms(self.delay_ms, "delay_ms"))
        put(self, "jitter_ms", nonneg_ms(self.jitter_ms, "jitter_ms"))
        if self.jitter_distribution not in JITTER_DISTRIBUTIONS:
            raise ParameterError(
                f"jitter_distribution {self.jitter_distribution!r} is unknown: use one of "
                + ", ".join(repr(d) for d in JITTER_DISTRIBUTIONS)
            )
        if not isinstance(self.reorder, (bool, np.bool_)):
            raise ParameterError(f"reorder must be True or False, got {self.reorder!r}")
        put(self, "reorder", bool(self.reorder))
        put(self, "loss_rate", check_loss_rate(self.loss_rate, name="loss_rate"))
        if self.burst_length is not None:
            if isinstance(self.burst_length, bool):
                raise ParameterError(f"burst_length must be a number of packets or None, got {self.burst_length!r}")
            GilbertElliottLoss(self.loss_rate, self.burst_length)  # validates, names the minimum
            put(self, "burst_length", float(self.burst_length))
        if self.loss_trace is not None:
            if isinstance(self.loss_trace, (str, bytes)):
                raise ParameterError("loss_trace must be a sequence of packet ordinals, not a string")
            trace = TraceLoss(self.loss_trace)
            if self.loss_rate != 0.0 or self.burst_length is not None:
                raise ParameterError(
                    "give either loss_trace or loss_rate/burst_length, not both "
                    f"(loss_rate={self.loss_rate:g}, burst_length={self.burst_length!r})"
                )
            put(self, "loss_trace", tuple(sorted(trace.lost_indices)))
        if self.bandwidth_kbps is not None:
            if isinstance(self.bandwidth_kbps, bool):
                raise ParameterError(f"bandwidth_kbps must be a number or None, got {self.bandwidth_kbps!r}")
            try:
                bw = float(self.bandwidth_kbps)
            except (TypeError, ValueError):
                raise ParameterError(
                    f"bandwidth_kbps must be a number of kbit/s or None, got {self.bandwidth_kbps!r}"
                ) from None
            if not math.isfinite(bw) or bw <= 0:
                raise ParameterError(
                    f"bandwidth_kbps {bw:g} must be above 0 (use None for an unlimited link)"
                )
            put(self, "bandwidth_kbps", bw)
        if self.queue_packets is not None:
            q = self.queue_packets
            if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 0:
                raise ParameterError(
                    f"queue_packets must be an integer >= 0 or None (unlimited), got {q!r}"
                )
            put(self, "queue_packets", int(q))
        put(self, "duplicate_rate", check_loss_rate(self.duplicate_rate, name="duplicate_rate"))

    # --- conversions -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict of the fields (``loss_trace`` as a list), e.g. for JSON."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if d["loss_trace"] is not None:
            d["loss_trace"] = list(d["loss_trace"])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ChannelConfig":
        """Build a config from a mapping such as :meth:`to_dict` returns.

        Raises
        ------
        ParameterError
            If a key is not a field name (the message lists the valid ones) or a value is
            out of range.
        """
        if not isinstance(data, Mapping):
            raise ParameterError(f"channel config must be a mapping, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ParameterError(
                f"unknown channel setting(s) {', '.join(map(repr, unknown))}: valid names are "
                + ", ".join(names)
            )
        kwargs = dict(data)
        if kwargs.get("loss_trace") is not None and not isinstance(kwargs["loss_trace"], (str, bytes)):
            try:
                kwargs["loss_trace"] = tuple(kwargs["loss_trace"])
            except TypeError:
                raise ParameterError("loss_trace must be a sequence of packet ordinals") from None
        return cls(**kwargs)

    def with_(self, **changes: Any) -> "ChannelConfig":
        """A copy with some fields changed (:func:`dataclasses.replace`), validated again.

        Raises
        ------
        ParameterError
            If a name is not a field or a new value is out of range.
        """
        names = [f.name for f in dataclasses.fields(self)]
        unknown = [k for k in changes if k not in names]
        if unknown:
            raise ParameterError(
                f"unknown channel setting(s) {', '.join(map(repr, unknown))}: valid names are "
                + ", ".join(names)
            )
        return dataclasses.replace(self, **changes)

    # --- models --------------------------------------------------------------------
    def loss_model(self) -> LossModel:
        """A fresh loss model for this config (trace, Gilbert-Elliott, Bernoulli or none)."""
        if self.loss_trace is not None:
            return TraceLoss(self.loss_trace)
        if self.burst_length is not None:
            return GilbertElliottLoss(self.loss_rate, self.burst_length)
        if self.loss_rate > 0:
            return BernoulliLoss(self.loss_rate)
        return NoLoss()

    def delay_model(self) -> DelayModel:
        """The :class:`~voicelab.net.DelayModel` for this config."""
        return DelayModel(self.delay_ms, self.jitter_ms, self.jitter_distribution)

    @property
    def expected_loss_rate(self) -> float:
        """Long-run loss fraction of the loss model (queue drops not included)."""
        return self.loss_model().expected_loss_rate


@dataclass(frozen=True)
class PacketFate:
    """What the channel did with one packet.

    Attributes
    ----------
    index : int
        Ordinal of the packet (0-based, in sending order).
    send_time : float
        ``now`` passed to :meth:`Channel.transmit`, in seconds.
    size : int
        Packet size in bytes, as passed in.
    lost : bool
        True when no copy arrives.
    reason : str or None
        ``"loss"`` (the loss model), ``"queue"`` (drop-tail) or None when delivered.
    arrivals : tuple of float
        Arrival times in seconds (empty when lost, two when duplicated).
    """

    index: int
    send_time: float
    size: int
    lost: bool
    reason: str | None
    arrivals: tuple[float, ...]


@dataclass(frozen=True)
class ChannelStats:
    """Counters of a :class:`Channel` (packets).

    Attributes
    ----------
    sent : int
        Packets handed to :meth:`Channel.transmit`.
    lost_by_model : int
        Packets dropped by the loss model.
    dropped_by_queue : int
        Packets dropped because the queue was full.
    duplicated : int
        Packets that arrived twice.
    delivered : int
        Packets with at least one arrival (copies not counted twice).
    """

    sent: int = 0
    lost_by_model: int = 0
    dropped_by_queue: int = 0
    duplicated: int = 0
    delivered: int = 0

    @property
    def loss_rate(self) -> float:
        """Fraction of sent packets that never arrived (model + queue), 0 if none sent."""
        return (self.lost_by_model + self.dropped_by_queue) / self.sent if self.sent else 0.0


def _seed_sequence(seed: None | int | np.random.Generator | np.random.SeedSequence) -> np.random.SeedSequence:
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(seed.integers(0, 2**63, size=4).tolist())
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed < 0:
            raise ParameterError(f"seed {seed} is negative: use an integer >= 0")
        return np.random.SeedSequence(int(seed))
    raise ParameterError(
        f"seed must be None, an integer >= 0 or a numpy.random.Generator, got {type(seed).__name__}"
    )


class Channel:
    """A one-way link that decides, packet by packet, if and when each packet arrives.

    Sans-IO: it never reads a clock; the caller passes ``now`` (seconds, nondecreasing).

    Parameters
    ----------
    config : ChannelConfig
        What the link does.
    seed : None, int, numpy.random.Generator or numpy.random.SeedSequence, optional
        Source of randomness. An int or a SeedSequence gives reproducible fates; a
        Generator is used to draw a seed (and so is advanced); None takes fresh OS
        entropy (not reproducible).

    Attributes
    ----------
    fates : list of PacketFate
        One record per packet, in sending order.

    Examples
    --------
    >>> ch = Channel(ChannelConfig(delay_ms=50.0), seed=0)
    >>> ch.transmit(1.0, 160)
    [1.05]
    >>> ch.stats.delivered
    1
    """

    def __init__(
        self,
        config: ChannelConfig,
        *,
        seed: None | int | np.random.Generator | np.random.SeedSequence = None,
    ) -> None:
        if not isinstance(config, ChannelConfig):
            raise ParameterError(f"config must be a ChannelConfig, got {type(config).__name__}")
        self.config = config
        streams = _seed_sequence(seed).spawn(4)
        self._loss_rng, self._delay_rng, self._dup_rng, self._dup_delay_rng = (
            np.random.default_rng(s) for s in streams
        )
        self._loss = config.loss_model()
        self._delay = config.delay_model()
        self._rate_bps = None if config.bandwidth_kbps is None else config.bandwidth_kbps * 1000.0
        self._t_free = -math.inf  # when the link finishes sending its current packet
        self._waiting: deque[float] = deque()  # start times of queued packets not yet started
        self._last_arrival = -math.inf
        self._last_now = -math.inf
        self._counts = {"sent": 0, "lost_by_model": 0, "dropped_by_queue": 0, "duplicated": 0, "delivered": 0}
        self.fates: list[PacketFate] = []

    @property
    def expected_loss_rate(self) -> float:
        """Long-run loss fraction of the loss model (queue drops not included), 0..1."""
        return self._loss.expected_loss_rate

    @property
    def stats(self) -> ChannelStats:
        """A snapshot of the counters."""
        return ChannelStats(**self._counts)

    @property
    def queue_length(self) -> int:
        """Packets waiting for the link after the last :meth:`transmit` (not the one being sent)."""
        return len(self._waiting)

    def transmit(self, now: float, size_bytes: int) -> list[float]:
        """Send one packet at time ``now``; return when its copies arrive.

        Parameters
        ----------
        now : float
            Sending time in seconds, not earlier than the previous call's.
        size_bytes : int
            Size on the wire in bytes (>= 0); only matters with ``bandwidth_kbps``.

        Returns
        -------
        list of float
            Arrival times in seconds, in increasing order: ``[]`` when lost, one time
            normally, two when duplicated.

        Raises
        ------
        ParameterError
            If ``now`` is not finite or goes backwards, or ``size_bytes`` is not an
            integer >= 0.
        """
        try:
            now = float(now)
        except (TypeError, ValueError):
            raise ParameterError(f"now must be a time in seconds, got {now!r}") from None
        if not math.isfinite(now):
            raise ParameterError(f"now must be a finite time in seconds, got {now!r}")
        if now < self._last_now - 1e-9:
            raise ParameterError(
                f"time went backwards: now={now!r} s after {self._last_now!r} s; "
                "call transmit in sending order"
            )
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, (int, np.integer)) or size_bytes < 0:
            raise ParameterError(f"size_bytes must be an integer >= 0, got {size_bytes!r}")
        size_bytes = int(size_bytes)
        self._last_now = max(self._last_now, now)
        index = self._counts["sent"]
        self._counts["sent"] += 1

        # Every stream is consumed identically for every packet (see module docstring).
        model_lost = self._loss.lost(self._loss_rng, index)
        delay_s = self._delay.sample_ms(self._delay_rng) / 1000.0
        dup = self.config.duplicate_rate > 0 and bool(self._dup_rng.random() < self.config.duplicate_rate)
        dup_delay_s = self._delay.sample_ms(self._dup_delay_rng) / 1000.0 if self.config.duplicate_rate > 0 else 0.0

        # 1. capacity queue
        departure = now
        if self._rate_bps is not None:
            while self._waiting and self._waiting[0] <= now + _EPS:
                self._waiting.popleft()
            start = max(now, self._t_free)
            must_wait = start > now + _EPS
            limit = self.config.queue_packets
            if must_wait and limit is not None and len(self._waiting) >= limit:
                return self._record(index, now, size_bytes, "queue", ())
            if must_wait:
                self._waiting.append(start)
            self._t_free = start + size_bytes * 8.0 / self._rate_bps
            departure = self._t_free

        # 2. loss model
        if model_lost:
            return self._record(index, now, size_bytes, "loss", ())

        # 3. delay (+ FIFO unless reordering is allowed), 4. duplication
        arrivals = [self._arrive(departure + delay_s)]
        if dup:
            arrivals.append(self._arrive(departure + dup_delay_s))
        arrivals.sort()
        return self._record(index, now, size_bytes, None, tuple(arrivals))

    def _arrive(self, candidate: float) -> float:
        if not self.config.reorder:
            candidate = max(candidate, self._last_arrival)
        self._last_arrival = max(self._last_arrival, candidate)
        return candidate

    def _record(self, index: int, now: float, size: int, reason: str | None, arrivals: tuple[float, ...]) -> list[float]:
        if reason == "queue":
            self._counts["dropped_by_queue"] += 1
        elif reason == "loss":
            self._counts["lost_by_model"] += 1
        else:
            self._counts["delivered"] += 1
            if len(arrivals) > 1:
                self._counts["duplicated"] += 1
        self.fates.append(PacketFate(index, now, size, reason is not None, reason, arrivals))
        return list(arrivals)

    def __repr__(self) -> str:
        return f"Channel({self.config!r}, sent={self._counts['sent']})"
