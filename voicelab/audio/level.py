"""Active speech level (ITU-T P.56 method B) and level normalization.

Why our own code: the reference implementation of P.56 is the C program ``sv56`` in
the ITU-T Software Tool Library (G.191); no maintained Python package ships it, and
the method is short. This module follows P.56 method B:

1. Envelope: two cascaded one-pole smoothers of ``|x|`` with time constant
   0.03 s, ``p[n] = g p[n-1] + (1-g)|x[n]|``, ``q[n] = g q[n-1] + (1-g) p[n]``,
   ``g = exp(-1 / (0.03 s * sample_rate))``.
2. Thresholds ``c_j`` every 1 dB. For each, the activity count ``a_j`` is the number
   of samples where ``q >= c_j`` or that lie within the hangover (0.2 s) after such
   a sample.
3. Active level ``A_j = 10 log10(sum(x^2) / a_j)``; the active speech level is the
   ``A`` at which ``A_j - 20 log10(c_j)`` falls to the margin M = 15.9 dB, found by
   linear interpolation between the two thresholds around the crossing.

Level unit (dBov): decibels relative to an RMS of 1.0, i.e. ``20 log10(rms)``. A
full-scale square wave is 0 dBov; a sine of amplitude ``A`` is ``20 log10(A / sqrt 2)``
(a full-scale sine is -3.01 dBov). The often-used speech level -26 dBov follows this
convention.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from ..errors import AudioError, ParameterError
from .io import _as_mono, _check_sample_rate

__all__ = ["active_level_db", "speech_activity", "normalize_level"]

#: P.56 method B constants.
TIME_CONSTANT_S = 0.03
HANGOVER_S = 0.2
MARGIN_DB = 15.9
THRESHOLD_STEP_DB = 1.0
#: Shortest input measured (seconds): a few envelope time constants.
MIN_DURATION_S = 0.05
#: Lowest threshold searched (dBov); below 16-bit quantization noise.
_FLOOR_DB = -120.0
#: Signals whose peak is below this (dBov) count as silence.
_SILENCE_DB = -100.0


def _p56(x: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """Return (active level dBov, activity factor 0..1)."""
    n = x.size
    peak = float(np.max(np.abs(x))) if n else 0.0
    if n == 0 or peak <= 10 ** (_SILENCE_DB / 20):
        raise AudioError("audio is silent (no samples above -100 dBov): no active speech level")
    if n < MIN_DURATION_S * sample_rate:
        raise AudioError(
            f"audio is too short for a P.56 active level: {n} samples, need at least "
            f"{MIN_DURATION_S * 1000:.0f} ms"
        )
    energy = float(np.dot(x, x))
    g = np.exp(-1.0 / (TIME_CONSTANT_S * sample_rate))
    p = lfilter([1.0 - g], [1.0, -g], np.abs(x))
    q = lfilter([1.0 - g], [1.0, -g], p)
    hang = int(round(HANGOVER_S * sample_rate))
    idx = np.arange(n)
    qmax_db = 20 * np.log10(max(float(q.max()), 1e-300))
    # thresholds every 1 dB on a grid anchored at 0 dBov, from the floor to the envelope peak
    top = int(np.floor(qmax_db / THRESHOLD_STEP_DB))
    # A_j >= long-term level L for every threshold, so A_j - c_j > M for all c_j < L - M:
    # the crossing lies above L - M and the scan can start just below it.
    long_term_db = 10 * np.log10(energy / n)
    bottom = int(np.floor(max(_FLOOR_DB, long_term_db - MARGIN_DB - 1.0) / THRESHOLD_STEP_DB))
    bottom = min(bottom, top)  # very short or spiky input: envelope stays below L - M
    c_db = np.arange(bottom, top + 1) * THRESHOLD_STEP_DB
    prev_a = prev_delta = None
    for cdb in c_db:
        active = q >= 10 ** (cdb / 20)
        # index of the last active sample at or before each sample (-inf if none)
        last = np.where(active, idx, -(hang + 1))
        np.maximum.accumulate(last, out=last)
        count = int(np.count_nonzero(idx - last <= hang))
        if count == 0:
            break
        a_db = 10 * np.log10(energy / count)
        delta = a_db - cdb
        if delta <= MARGIN_DB:
            if prev_a is None:
                # even the lowest threshold is within the margin: (almost) all active
                return a_db, min(1.0, count / n)
            t = (prev_delta - MARGIN_DB) / (prev_delta - delta)
            level = prev_a + t * (a_db - prev_a)
            activity = energy / (n * 10 ** (level / 10))
            return float(level), float(min(1.0, activity))
        prev_a, prev_delta = a_db, delta
    # margin never reached (very short input, a single click): use the level at the highest threshold
    if prev_a is None:
        raise AudioError("audio is too short or too quiet for a P.56 active level")
    return float(prev_a), float(min(1.0, energy / (n * 10 ** (prev_a / 10))))


def active_level_db(samples, sample_rate: int) -> float:
    """Active speech level by ITU-T P.56 method B, in dBov.

    Parameters
    ----------
    samples : array_like
        1-D float audio, full scale +/-1.0.
    sample_rate : int
        Hz.

    Returns
    -------
    float
        Level in dBov: dB relative to an RMS of 1.0 over the *active* part of the
        signal (0 dBov = full-scale square wave; a sine of amplitude ``A`` is
        ``20 log10(A / sqrt(2))``). Pauses do not lower it: a tone that is on half
        the time measures close to the tone's own level, not 3 dB below (P.56
        counts 0.2 s of hangover after each active stretch as active, so short
        bursts read up to ~1.5 dB low). The envelope's rise time (~25 ms) is not
        counted as active, so a 1 s steady tone reads about 0.1 dB high.

    Raises
    ------
    AudioError
        The audio is shorter than 50 ms, silent (peak below -100 dBov) or not finite.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(10 * 16000) / 16000
    >>> round(active_level_db(0.1 * np.sqrt(2) * np.sin(2 * np.pi * 1000 * t), 16000), 1)
    -20.0
    """
    sample_rate = _check_sample_rate(sample_rate)
    x = _as_mono(samples, allow_empty=True)
    if x.size == 0:
        raise AudioError("audio is empty: no active speech level")
    return _p56(x, sample_rate)[0]


def speech_activity(samples, sample_rate: int) -> float:
    """Activity factor (0..1) of ITU-T P.56 method B: the active fraction of the signal.

    Parameters
    ----------
    samples : array_like
        1-D float audio.
    sample_rate : int
        Hz.

    Returns
    -------
    float
        ``sum(x^2) / (N * 10^(level/10))`` with the active level from
        :func:`active_level_db`.
    """
    sample_rate = _check_sample_rate(sample_rate)
    x = _as_mono(samples)
    if x.size == 0:
        raise AudioError("audio is empty: no speech activity")
    return _p56(x, sample_rate)[1]


def normalize_level(samples, sample_rate: int, *, level_db: float = -26.0) -> np.ndarray:
    """Scale audio so that its P.56 active speech level is ``level_db`` dBov.

    Parameters
    ----------
    samples : array_like
        1-D float audio.
    sample_rate : int
        Hz.
    level_db : float, default -26.0
        Target active level in dBov (see :func:`active_level_db` for the convention).

    Returns
    -------
    numpy.ndarray
        The scaled audio (float64). The few samples beyond full scale, if any, are
        clipped to +/-1.

    Raises
    ------
    AudioError
        The audio is silent, or more than 1 % of the scaled samples would clip
        (pick a lower ``level_db``).
    ParameterError
        ``level_db`` is not a finite number.
    """
    if isinstance(level_db, bool) or not isinstance(level_db, (int, float, np.integer, np.floating)) or not np.isfinite(level_db):
        raise ParameterError(f"level_db must be a finite number of dBov, got {level_db!r}")
    sample_rate = _check_sample_rate(sample_rate)
    x = _as_mono(samples)
    if x.size == 0:
        raise AudioError("audio is empty: cannot normalize its level")
    current = _p56(x, sample_rate)[0]
    y = x * 10 ** ((float(level_db) - current) / 20)
    clipped = int(np.count_nonzero(np.abs(y) > 1.0))
    if clipped > 0.01 * y.size:
        raise AudioError(
            f"normalizing to {level_db:.1f} dBov would clip {100 * clipped / y.size:.1f}% of samples "
            f"(peak {20 * np.log10(np.max(np.abs(y))):.1f} dBFS); choose a lower level_db"
        )
    return np.clip(y, -1.0, 1.0)
