"""One-way delay with jitter: how long a packet spends on a link after it left the queue.

:class:`DelayModel` draws ``delay_ms + jitter`` per packet from a
:class:`numpy.random.Generator` passed in by the caller. The total is never below 0 ms.

Jitter distributions
--------------------
``"normal"``
    ``delay_ms + N(0, jitter_ms)``, clipped at 0: a draw below ``-delay_ms`` gives a
    total of exactly 0 ms (as libwebrtc's ``SimulatedNetwork`` does with its
    ``delay_standard_deviation_ms``). With ``jitter_ms`` small against ``delay_ms`` the
    clipping never matters; with ``delay_ms = 0`` half of the packets get 0 ms.
``"uniform"``
    ``delay_ms + U(-jitter_ms, +jitter_ms)``, clipped at 0 in the same way.
``"pareto"``
    Heavy-tailed, positive only: ``delay_ms + X`` with ``X`` Lomax (Pareto type II,
    starting at 0) of shape ``pareto_shape`` and mean ``jitter_ms``. Models queueing
    spikes: most packets get little extra delay, a few get a lot. The default shape 3.0
    has a finite variance; shapes between 1 and 2 have an infinite one.

Why our own: a few lines on top of numpy's distributions; netem's tables live in the
kernel and libwebrtc's model in C++.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import nonneg_ms
from ..errors import ParameterError

__all__ = ["DelayModel", "JITTER_DISTRIBUTIONS"]

#: Names accepted for ``distribution`` / ``jitter_distribution``.
JITTER_DISTRIBUTIONS = ("normal", "uniform", "pareto")


class DelayModel:
    """Per-packet one-way delay: a fixed part plus random jitter, in milliseconds.

    Parameters
    ----------
    delay_ms : float, optional
        Fixed (propagation + processing) delay in ms, >= 0.
    jitter_ms : float, optional
        Size of the random part in ms, >= 0: the standard deviation for ``"normal"``, the
        half-width for ``"uniform"``, the mean for ``"pareto"``.
    distribution : {"normal", "uniform", "pareto"}, optional
        Shape of the jitter (see the module docstring).
    pareto_shape : float, optional
        Tail index of the ``"pareto"`` jitter, > 1 (so that the mean is finite).

    Raises
    ------
    ParameterError
        On a negative or non-finite delay or jitter, an unknown distribution or a
        ``pareto_shape`` not above 1.

    Examples
    --------
    >>> import numpy as np
    >>> model = DelayModel(50.0, 10.0)
    >>> rng = np.random.default_rng(0)
    >>> samples = [model.sample_ms(rng) for _ in range(1000)]
    >>> min(samples) >= 0.0
    True
    """

    def __init__(
        self,
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        distribution: str = "normal",
        pareto_shape: float = 3.0,
    ) -> None:
        self.delay_ms = nonneg_ms(delay_ms, "delay_ms")
        self.jitter_ms = nonneg_ms(jitter_ms, "jitter_ms")
        if distribution not in JITTER_DISTRIBUTIONS:
            raise ParameterError(
                f"jitter distribution {distribution!r} is unknown: use one of "
                + ", ".join(repr(d) for d in JITTER_DISTRIBUTIONS)
            )
        self.distribution = distribution
        try:
            shape = float(pareto_shape)
        except (TypeError, ValueError):
            raise ParameterError(f"pareto_shape must be a number above 1, got {pareto_shape!r}") from None
        if not math.isfinite(shape) or shape <= 1.0:
            raise ParameterError(
                f"pareto_shape {shape:g} must be above 1 (otherwise the jitter has no finite mean)"
            )
        self.pareto_shape = shape

    def sample_ms(self, rng: np.random.Generator) -> float:
        """Draw one packet's delay in milliseconds (always >= 0).

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of randomness. Nothing is drawn when ``jitter_ms`` is 0.

        Returns
        -------
        float
            ``delay_ms`` plus a jitter sample, clipped at 0.
        """
        if self.jitter_ms == 0.0:
            return self.delay_ms
        if self.distribution == "normal":
            extra = rng.normal(0.0, self.jitter_ms)
        elif self.distribution == "uniform":
            extra = rng.uniform(-self.jitter_ms, self.jitter_ms)
        else:
            # numpy's pareto() is Lomax (Pareto II from 0) with scale 1: mean 1/(a-1).
            a = self.pareto_shape
            extra = self.jitter_ms * (a - 1.0) * rng.pareto(a)
        return max(0.0, self.delay_ms + float(extra))

    def __repr__(self) -> str:
        return (
            f"DelayModel(delay_ms={self.delay_ms!r}, jitter_ms={self.jitter_ms!r}, "
            f"distribution={self.distribution!r}, pareto_shape={self.pareto_shape!r})"
        )
