"""Packet-loss models: which packets a link drops.

Each model answers one question per packet, :meth:`LossModel.lost`, given a
:class:`numpy.random.Generator` and the packet's ordinal ``index`` (0, 1, 2, ... in
sending order). Random models use only the generator they are handed, so the same seed
gives the same losses; :class:`TraceLoss` uses only the index.

Why our own: netem and libwebrtc's ``SimulatedNetwork`` implement the same models, but
in a kernel qdisc and in C++; the lab needs them as small, seedable, sans-IO Python
objects shared by the offline simulator and the in-process virtual network.

Models
------
:class:`NoLoss`
    Nothing is lost.
:class:`BernoulliLoss`
    Each packet is lost independently with probability ``loss_rate``.
:class:`GilbertElliottLoss`
    Two-state Markov chain (good / bad) for bursty loss, parametrised like libwebrtc's
    ``SimulatedNetwork`` (``loss_percent`` + ``avg_burst_loss_length``), or with the
    general four parameters ``p, r, k, h`` through :meth:`GilbertElliottLoss.from_params`.
:class:`TraceLoss`
    Replays a recorded trace: a set of packet ordinals that are lost.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable

import numpy as np

from ..errors import ParameterError

__all__ = [
    "LossModel",
    "NoLoss",
    "BernoulliLoss",
    "GilbertElliottLoss",
    "TraceLoss",
    "check_loss_rate",
]


def check_loss_rate(loss_rate: float, *, name: str = "loss_rate") -> float:
    """Check that a loss rate is a finite number in ``[0, 1)`` and return it as float.

    Parameters
    ----------
    loss_rate : float
        Fraction of packets lost, 0..1 (1 itself is refused: nothing would arrive).
    name : str, optional
        Parameter name used in the error message.

    Raises
    ------
    ParameterError
        If the value is not a number or lies outside ``[0, 1)``.
    """
    try:
        value = float(loss_rate)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number in 0..1, got {loss_rate!r}") from None
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise ParameterError(
            f"{name} {value:g} is outside 0..1 (a fraction of packets: 0.02 means 2 %; "
            "1 itself is not allowed)"
        )
    return value


def _check_probability(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a probability in 0..1, got {value!r}") from None
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise ParameterError(f"{name} {v:g} is outside 0..1 (it is a probability)")
    return v


class LossModel(ABC):
    """Decides, packet by packet, whether a link loses it.

    Subclasses are small state machines; they draw random numbers only from the
    generator passed to :meth:`lost`.
    """

    @abstractmethod
    def lost(self, rng: np.random.Generator, index: int) -> bool:
        """Whether packet number ``index`` is lost.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of randomness (the caller keeps one stream per model).
        index : int
            Ordinal of the packet in sending order, starting at 0. Random models ignore
            it; trace models look it up. Call once per packet, in order.

        Returns
        -------
        bool
            True when the packet is lost.
        """

    @property
    @abstractmethod
    def expected_loss_rate(self) -> float:
        """Long-run fraction of packets lost (0..1), e.g. for E-model predictions."""

    def reset(self) -> None:
        """Return to the initial state (stateless models: nothing to do)."""

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"{type(self).__name__}()"


class NoLoss(LossModel):
    """A perfect link: nothing is lost (draws no random numbers)."""

    def lost(self, rng: np.random.Generator, index: int) -> bool:
        return False

    @property
    def expected_loss_rate(self) -> float:
        return 0.0


class BernoulliLoss(LossModel):
    """Independent (random, memoryless) loss.

    Parameters
    ----------
    loss_rate : float
        Probability that each packet is lost, ``0 <= loss_rate < 1``.

    Raises
    ------
    ParameterError
        If ``loss_rate`` is outside ``[0, 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> model = BernoulliLoss(0.1)
    >>> rng = np.random.default_rng(1)
    >>> losses = [model.lost(rng, i) for i in range(10_000)]
    >>> 0.09 < sum(losses) / len(losses) < 0.11
    True
    """

    def __init__(self, loss_rate: float) -> None:
        self.loss_rate = check_loss_rate(loss_rate)

    def lost(self, rng: np.random.Generator, index: int) -> bool:
        if self.loss_rate == 0.0:
            return False
        return bool(rng.random() < self.loss_rate)

    @property
    def expected_loss_rate(self) -> float:
        return self.loss_rate

    def __repr__(self) -> str:
        return f"BernoulliLoss(loss_rate={self.loss_rate!r})"


class GilbertElliottLoss(LossModel):
    """Bursty loss from a two-state (good / bad) Markov chain.

    Parametrised as libwebrtc's ``SimulatedNetwork`` does with ``loss_percent`` and
    ``avg_burst_loss_length``: every packet is lost in the bad state and delivered in the
    good state, and before each packet the state changes with

    - ``p`` (good -> bad, start of a burst) ``= loss_rate / (1 - loss_rate) / mean_burst_length``
    - ``r`` (bad -> good, end of a burst) ``= 1 / mean_burst_length``
      (libwebrtc's probability of staying in the burst is ``1 - 1/mean_burst_length``).

    The stationary fraction of bad packets is ``p / (p + r) = loss_rate`` and bursts are
    geometric with mean ``mean_burst_length`` packets.

    Parameters
    ----------
    loss_rate : float
        Long-run fraction of packets lost, ``0 <= loss_rate < 1``.
    mean_burst_length : float
        Mean number of consecutive lost packets, in packets. It must be at least 1, and at
        least ``loss_rate / (1 - loss_rate)`` so that ``p <= 1`` (at 60 % loss bursts must
        average 1.5 packets or more). libwebrtc is stricter: it wants an integer burst
        length above ``ceil(loss_rate / (1 - loss_rate))``; every such value is accepted
        here too.

    Raises
    ------
    ParameterError
        If ``loss_rate`` is outside ``[0, 1)`` or the burst is shorter than allowed (the
        message names the minimum).

    See Also
    --------
    GilbertElliottLoss.from_params : the general four-parameter form.

    Notes
    -----
    The chain starts in the good state (as libwebrtc does). The state is updated before
    each packet, then the packet is lost with the loss probability of the new state.
    """

    def __init__(self, loss_rate: float, mean_burst_length: float) -> None:
        loss_rate = check_loss_rate(loss_rate)
        try:
            burst = float(mean_burst_length)
        except (TypeError, ValueError):
            raise ParameterError(
                f"mean_burst_length must be a number of packets >= 1, got {mean_burst_length!r}"
            ) from None
        minimum = max(1.0, loss_rate / (1.0 - loss_rate))
        if not math.isfinite(burst) or burst < minimum - 1e-12:
            raise ParameterError(
                f"mean_burst_length {burst:g} is too short for loss_rate {loss_rate:g}: "
                f"the minimum is {minimum:.6g} packets (at least 1 and at least "
                "loss_rate/(1-loss_rate))"
            )
        p = min(1.0, loss_rate / (1.0 - loss_rate) / burst)
        r = 1.0 / burst
        self._set(p, r, 1.0, 0.0)
        self._loss_rate = loss_rate
        self._mean_burst_length = burst

    @classmethod
    def from_params(cls, p: float, r: float, k: float = 1.0, h: float = 0.0) -> "GilbertElliottLoss":
        """The general Gilbert-Elliott model with four probabilities.

        Convention (the usual one, also netem's ``loss gemodel p r 1-h 1-k``):

        - ``p``: probability of going from the good to the bad state before a packet,
        - ``r``: probability of going from the bad to the good state before a packet,
        - ``k``: probability that a packet is **delivered** in the good state
          (so ``1 - k`` is the loss probability in the good state),
        - ``h``: probability that a packet is **delivered** in the bad state
          (so ``1 - h`` is the loss probability in the bad state).

        ``k = 1, h = 0`` is the simple Gilbert model (loss exactly in the bad state).

        Parameters
        ----------
        p, r : float
            Transition probabilities, 0..1; ``r`` must be above 0 (else the chain stays in
            the bad state forever).
        k, h : float, optional
            Delivery probabilities in the good and the bad state, 0..1.

        Returns
        -------
        GilbertElliottLoss

        Raises
        ------
        ParameterError
            If a probability is outside 0..1 or ``r`` is 0.
        """
        p = _check_probability(p, "p (good->bad)")
        r = _check_probability(r, "r (bad->good)")
        k = _check_probability(k, "k (delivery probability in the good state)")
        h = _check_probability(h, "h (delivery probability in the bad state)")
        if r == 0.0:
            raise ParameterError("r (bad->good) must be above 0, else the bad state never ends")
        self = cls.__new__(cls)
        self._set(p, r, k, h)
        pi_bad = p / (p + r) if p + r > 0 else 0.0
        self._loss_rate = (1.0 - pi_bad) * (1.0 - k) + pi_bad * (1.0 - h)
        self._mean_burst_length = 1.0 / r
        return self

    def _set(self, p: float, r: float, k: float, h: float) -> None:
        self.p = p
        self.r = r
        self.k = k
        self.h = h
        self._bad = False

    @property
    def mean_burst_length(self) -> float:
        """Mean time spent in the bad state per visit, in packets (``1 / r``)."""
        return self._mean_burst_length

    @property
    def expected_loss_rate(self) -> float:
        return self._loss_rate

    @property
    def in_bad_state(self) -> bool:
        """Whether the chain is in the bad state after the last packet."""
        return self._bad

    def reset(self) -> None:
        self._bad = False

    def lost(self, rng: np.random.Generator, index: int) -> bool:
        u = rng.random()
        if self._bad:
            self._bad = not (u < self.r)
        else:
            self._bad = u < self.p
        loss_prob = (1.0 - self.h) if self._bad else (1.0 - self.k)
        if loss_prob <= 0.0:
            return False
        if loss_prob >= 1.0:
            return True
        return bool(rng.random() < loss_prob)

    def __repr__(self) -> str:
        return (
            f"GilbertElliottLoss.from_params(p={self.p!r}, r={self.r!r}, k={self.k!r}, "
            f"h={self.h!r})"
        )


class TraceLoss(LossModel):
    """Replay a loss trace: the listed packet ordinals are lost, all others arrive.

    Parameters
    ----------
    lost_indices : iterable of int
        Ordinals (0-based, in sending order) of the packets that are lost.
    length : int, optional
        Number of packets the trace covers; only used for :attr:`expected_loss_rate`.
        Without it the trace is taken to end at its last lost packet.

    Raises
    ------
    ParameterError
        If an index is negative or not an integer.

    Examples
    --------
    >>> import numpy as np
    >>> trace = TraceLoss([1, 2, 5])
    >>> [trace.lost(np.random.default_rng(), i) for i in range(6)]
    [False, True, True, False, False, True]
    """

    def __init__(self, lost_indices: Iterable[int], *, length: int | None = None) -> None:
        indices = set()
        try:
            items = list(lost_indices)
        except TypeError:
            raise ParameterError(
                f"lost_indices must be an iterable of packet ordinals, got {type(lost_indices).__name__}"
            ) from None
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
                raise ParameterError(f"loss trace entries must be integers, got {item!r}")
            if item < 0:
                raise ParameterError(f"loss trace entry {item} is negative: ordinals start at 0")
            indices.add(int(item))
        self.lost_indices = frozenset(indices)
        if length is not None:
            if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
                raise ParameterError(f"trace length must be a non-negative integer, got {length!r}")
            if self.lost_indices and length <= max(self.lost_indices):
                raise ParameterError(
                    f"trace length {length} does not cover lost packet {max(self.lost_indices)}"
                )
            length = int(length)
        self.length = length

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, length: int | None = None) -> "TraceLoss":
        """Read a trace file: one lost packet ordinal per line.

        Blank lines are ignored and ``#`` starts a comment (whole line or after a number).

        Parameters
        ----------
        path : str or path-like
            Text file to read.
        length : int, optional
            As in :class:`TraceLoss`.

        Raises
        ------
        ParameterError
            If the file cannot be read or a line is not a non-negative integer (the
            message gives the line number).
        """
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.readlines()
        except OSError as exc:
            raise ParameterError(f"cannot read loss trace {os.fspath(path)!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ParameterError(f"loss trace {os.fspath(path)!r} is not a UTF-8 text file") from None
        indices = []
        for number, line in enumerate(lines, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                value = int(text)
            except ValueError:
                raise ParameterError(
                    f"loss trace {os.fspath(path)!r} line {number}: {text!r} is not an integer "
                    "(one lost packet ordinal per line, '#' for comments)"
                ) from None
            indices.append(value)
        return cls(indices, length=length)

    def lost(self, rng: np.random.Generator, index: int) -> bool:
        return index in self.lost_indices

    @property
    def expected_loss_rate(self) -> float:
        """Fraction of lost packets over the trace (``length``, or up to the last loss)."""
        if not self.lost_indices:
            return 0.0
        n = self.length if self.length is not None else max(self.lost_indices) + 1
        return len(self.lost_indices) / n

    def __repr__(self) -> str:
        return f"TraceLoss(<{len(self.lost_indices)} lost>, length={self.length!r})"
