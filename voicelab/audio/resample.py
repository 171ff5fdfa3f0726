"""Sample-rate conversion with soxr (libsoxr, 'VHQ' quality)."""

from __future__ import annotations

import numpy as np
import soxr

from ..errors import ParameterError
from .io import _as_mono

__all__ = ["resample"]


def _check_rate(rate, name: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise ParameterError(f"{name} must be a positive number of Hz, got {rate!r}")
    if not np.isfinite(rate) or rate <= 0:
        raise ParameterError(f"{name} must be a positive number of Hz, got {rate!r}")
    return float(rate)


def resample(samples, orig_sample_rate: float, target_sample_rate: float) -> np.ndarray:
    """Resample mono audio with soxr ('VHQ': very high quality, linear phase).

    Parameters
    ----------
    samples : array_like
        1-D float audio.
    orig_sample_rate : float
        Rate of ``samples`` in Hz.
    target_sample_rate : float
        Wanted rate in Hz.

    Returns
    -------
    numpy.ndarray
        1-D float64 audio of ``round(len(samples) * target / orig)`` samples; a copy of
        the input when the rates are equal. The filter's delay is compensated by soxr,
        so the output is time-aligned with the input.

    Raises
    ------
    ParameterError
        A rate is not a positive finite number.
    AudioError
        ``samples`` is not 1-D finite audio.

    Examples
    --------
    >>> import numpy as np
    >>> resample(np.zeros(16000), 16000, 8000).shape
    (8000,)
    """
    orig = _check_rate(orig_sample_rate, "orig_sample_rate")
    target = _check_rate(target_sample_rate, "target_sample_rate")
    x = _as_mono(samples)
    if orig == target:
        return x.copy()
    if x.size == 0:
        return np.zeros(0, dtype=np.float64)
    y = soxr.resample(x, orig, target, quality="VHQ")
    return np.ascontiguousarray(y, dtype=np.float64)
