"""Test signals: tone, silence, chirp, click train and a P.501-like composite source signal.

All functions return 1-D float64 arrays, full scale +/-1.0, and take keyword-only
arguments. Levels are in dBov as defined in :mod:`voicelab.audio.level` (dB re an
RMS of 1.0; a sine of amplitude ``A`` is ``20 log10(A / sqrt 2)``), so a tone at
``level_db=-20`` has amplitude ``0.1 * sqrt(2)``.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfilt

from ..errors import ParameterError
from .io import _check_sample_rate

__all__ = ["tone", "silence", "chirp", "click_train", "composite_source_signal"]


def _num(value, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ParameterError(f"{name} must be > 0, got {value!r}")
    if nonneg and value < 0:
        raise ParameterError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def _n_samples(duration_s, sample_rate: int, *, allow_zero: bool = False) -> int:
    d = _num(duration_s, "duration_s", nonneg=allow_zero, positive=not allow_zero)
    return int(round(d * sample_rate))


def _sine_amplitude(level_db) -> float:
    level = _num(level_db, "level_db")
    amp = np.sqrt(2.0) * 10 ** (level / 20)
    if amp > 1.0 + 1e-12:
        raise ParameterError(
            f"level_db={level} dBov needs a sine amplitude of {amp:.3f} > 1 (clips); "
            "use at most -3.0103 dBov (a full-scale sine)"
        )
    return float(amp)


def tone(*, frequency_hz: float = 1000.0, duration_s: float = 1.0, sample_rate: int = 16000,
         level_db: float = -20.0) -> np.ndarray:
    """A sine tone.

    Parameters
    ----------
    frequency_hz : float, default 1000.0
        Hz, below ``sample_rate / 2``.
    duration_s : float, default 1.0
        Seconds.
    sample_rate : int, default 16000
        Hz.
    level_db : float, default -20.0
        RMS level in dBov (at most -3.01, a full-scale sine).

    Returns
    -------
    numpy.ndarray
        ``round(duration_s * sample_rate)`` samples, starting at phase 0.

    Examples
    --------
    >>> x = tone(frequency_hz=440.0, duration_s=0.5, sample_rate=8000, level_db=-20.0)
    >>> x.shape, round(float(20 * np.log10(np.sqrt(np.mean(x ** 2)))), 2)
    ((4000,), -20.0)
    """
    sample_rate = _check_sample_rate(sample_rate)
    f = _num(frequency_hz, "frequency_hz", positive=True)
    if f >= sample_rate / 2:
        raise ParameterError(f"frequency_hz={f} must be below half the sample rate ({sample_rate / 2} Hz)")
    n = _n_samples(duration_s, sample_rate)
    amp = _sine_amplitude(level_db)
    return amp * np.sin(2 * np.pi * f * np.arange(n) / sample_rate)


def silence(*, duration_s: float, sample_rate: int) -> np.ndarray:
    """Digital silence (zeros) of ``round(duration_s * sample_rate)`` samples.

    Parameters
    ----------
    duration_s : float
        Seconds (0 gives an empty array).
    sample_rate : int
        Hz.
    """
    sample_rate = _check_sample_rate(sample_rate)
    return np.zeros(_n_samples(duration_s, sample_rate, allow_zero=True), dtype=np.float64)


def chirp(*, duration_s: float = 1.0, sample_rate: int = 16000, f0_hz: float = 100.0,
          f1_hz: float | None = None, level_db: float = -20.0) -> np.ndarray:
    """A logarithmic sine sweep (exponential chirp) from ``f0_hz`` to ``f1_hz``.

    Parameters
    ----------
    duration_s : float, default 1.0
        Seconds.
    sample_rate : int, default 16000
        Hz.
    f0_hz : float, default 100.0
        Start frequency, Hz.
    f1_hz : float, optional
        End frequency, Hz; default ``0.45 * sample_rate``.
    level_db : float, default -20.0
        RMS level in dBov of the constant-amplitude sweep.

    Returns
    -------
    numpy.ndarray
        The sweep; its instantaneous frequency is ``f0 * (f1/f0) ** (t / duration_s)``.
    """
    sample_rate = _check_sample_rate(sample_rate)
    f0 = _num(f0_hz, "f0_hz", positive=True)
    f1 = 0.45 * sample_rate if f1_hz is None else _num(f1_hz, "f1_hz", positive=True)
    for name, f in (("f0_hz", f0), ("f1_hz", f1)):
        if f >= sample_rate / 2:
            raise ParameterError(f"{name}={f} must be below half the sample rate ({sample_rate / 2} Hz)")
    n = _n_samples(duration_s, sample_rate)
    amp = _sine_amplitude(level_db)
    t = np.arange(n) / sample_rate
    d = float(duration_s)
    if np.isclose(f0, f1):
        phase = 2 * np.pi * f0 * t
    else:
        k = np.log(f1 / f0) / d
        phase = 2 * np.pi * f0 * (np.exp(k * t) - 1.0) / k
    return amp * np.sin(phase)


def click_train(*, duration_s: float, sample_rate: int, interval_ms: float = 250.0,
                level_db: float = -6.0) -> np.ndarray:
    """Single-sample clicks every ``interval_ms``, the first at sample 0.

    Parameters
    ----------
    duration_s : float
        Seconds.
    sample_rate : int
        Hz.
    interval_ms : float, default 250.0
        Click spacing in ms (rounded to whole samples per click).
    level_db : float, default -6.0
        Click *peak* amplitude in dB re full scale (``20 log10(A)``; an RMS level
        means little for a train of impulses). At most 0.

    Returns
    -------
    numpy.ndarray
        Zeros with value ``10 ** (level_db / 20)`` at ``round(k * interval_ms * sample_rate / 1000)``.
    """
    sample_rate = _check_sample_rate(sample_rate)
    n = _n_samples(duration_s, sample_rate)
    interval = _num(interval_ms, "interval_ms", positive=True)
    level = _num(level_db, "level_db")
    if level > 0:
        raise ParameterError(f"level_db={level} dB re full scale clips; use at most 0")
    x = np.zeros(n)
    positions = np.round(np.arange(0.0, n * 1000.0 / sample_rate, interval) * sample_rate / 1000.0).astype(int)
    x[positions[positions < n]] = 10 ** (level / 20)
    return x


# --- composite source signal -------------------------------------------------------------

#: Segment lengths of ITU-T P.501's composite source signal (ms).
CSS_VOICED_MS = 48.62
CSS_PN_MS = 200.0
CSS_PAUSE_MS = 101.38
#: Active speech level of the composite source signal produced here (dBov).
CSS_LEVEL_DB = -26.0


def composite_source_signal(*, duration_s: float = 3.0, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A P.501-like composite source signal (CSS): voiced burst, noise, pause, repeated.

    Each 350 ms period is: a voiced segment (48.62 ms of a pseudo-glottal harmonic
    tone: harmonics of f0 with a -12 dB/octave source tilt and a few formant-like
    resonances, Hann-tapered), 200 ms of band-limited pseudo-noise (the "pn
    sequence", spectrally tilted like long-term speech), then 101.38 ms of silence.
    Periods alternate polarity as in P.501 and, from ``seed``, vary f0
    (90-250 Hz), level (+/-3 dB) and polarity of the noise.

    This is "P.501-like": same structure and timing, **not** the bit-exact signal of
    the ITU-T recommendation, whose voiced part is a recorded vowel.

    Parameters
    ----------
    duration_s : float, default 3.0
        Seconds; the last period is cut at this length.
    sample_rate : int, default 16000
        Hz.
    seed : int, default 0
        Seed for :func:`numpy.random.default_rng`; same seed, same signal.

    Returns
    -------
    numpy.ndarray
        The signal, scaled to an active speech level (P.56) of -26 dBov.
    """
    sample_rate = _check_sample_rate(sample_rate)
    n_total = _n_samples(duration_s, sample_rate)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ParameterError(f"seed must be an int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    n_voiced = int(round(CSS_VOICED_MS * sample_rate / 1000))
    n_pn = int(round(CSS_PN_MS * sample_rate / 1000))
    n_pause = int(round(CSS_PAUSE_MS * sample_rate / 1000))
    period = n_voiced + n_pn + n_pause
    nyq = sample_rate / 2
    top = min(0.9 * nyq, 7000.0)
    sos_pn = butter(4, [100.0 / nyq, top / nyq], btype="bandpass", output="sos")
    # speech-like tilt for the noise: a gentle low-pass above ~1 kHz
    sos_tilt = butter(1, min(1000.0 / nyq, 0.99), btype="lowpass", output="sos")
    formants = (700.0, 1200.0, 2600.0)
    out = np.zeros(n_total + period)
    pos = 0
    k = 0
    t_v = np.arange(n_voiced) / sample_rate
    taper = np.hanning(n_voiced)
    while pos < n_total:
        f0 = rng.uniform(90.0, 250.0)
        gain = 10 ** (rng.uniform(-3.0, 3.0) / 20)
        harmonics = np.arange(1, int(top // f0) + 1)
        freqs = harmonics * f0
        # pseudo-glottal source (-12 dB/oct) shaped by three formant-like peaks
        amp = harmonics ** -2.0
        for fc in formants:
            amp = amp * (1.0 + 4.0 / (1.0 + ((freqs - fc) / 120.0) ** 2))
        phases = rng.uniform(0, 2 * np.pi, size=harmonics.size)
        voiced = (amp[:, None] * np.sin(2 * np.pi * freqs[:, None] * t_v[None, :] + phases[:, None])).sum(axis=0)
        voiced *= taper / (np.sqrt(np.mean(voiced ** 2)) + 1e-12)
        pn = rng.choice([-1.0, 1.0], size=n_pn)
        pn = sosfilt(sos_tilt, sosfilt(sos_pn, pn))
        pn /= np.sqrt(np.mean(pn ** 2)) + 1e-12
        ramp = min(n_pn // 10, int(0.005 * sample_rate))
        if ramp > 0:
            w = np.hanning(2 * ramp)
            pn[:ramp] *= w[:ramp]
            pn[-ramp:] *= w[ramp:]
        pn *= 0.7 * rng.choice([-1.0, 1.0])
        segment = np.concatenate([voiced, pn, np.zeros(n_pause)])
        polarity = 1.0 if k % 2 == 0 else -1.0
        out[pos:pos + period] = polarity * gain * segment
        pos += period
        k += 1
    from .level import _p56

    # level of the whole generated periods, so that a cut shorter than a period still scales right
    level, _ = _p56(out[:max(n_total, period)], sample_rate)
    return out[:n_total] * 10 ** ((CSS_LEVEL_DB - level) / 20)
