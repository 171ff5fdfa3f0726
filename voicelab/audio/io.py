"""WAV file input/output and sample-format conversion.

Conventions used by every function in :mod:`voicelab.audio`: audio is a 1-D
``float64`` numpy array (mono) with full scale at +/-1.0; 16-bit integer audio maps
to it by dividing by 32768 (the convention of libsndfile/soundfile, so that
``to_float(to_int16(x))`` equals ``x`` within half a quantization step).

Reading and writing go through ``soundfile`` (libsndfile); resampling on read goes
through :func:`voicelab.audio.resample` (soxr).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import AudioError, ParameterError

__all__ = ["read_wav", "write_wav", "to_int16", "to_float"]

#: libsndfile major formats accepted as "a WAV file".
_WAV_FORMATS = {"WAV", "WAVEX", "RF64", "W64"}


def _check_sample_rate(sample_rate, *, name: str = "sample_rate") -> int:
    """Return ``sample_rate`` as a positive int, or raise :class:`ParameterError`."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float, np.floating)):
        raise ParameterError(f"{name} must be a positive number of Hz, got {sample_rate!r}")
    if not np.isfinite(sample_rate) or sample_rate <= 0 or int(sample_rate) != sample_rate:
        raise ParameterError(f"{name} must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


def _as_mono(samples, *, name: str = "samples", allow_empty: bool = True) -> np.ndarray:
    """Validate audio and return it as a 1-D float64 array (a copy only if needed).

    Raises :class:`AudioError` for a wrong shape, a non-numeric dtype, NaN/inf, or
    (unless ``allow_empty``) an empty array.
    """
    try:
        x = np.asarray(samples)
    except Exception as exc:  # e.g. ragged lists
        raise AudioError(f"{name} is not an array of audio samples ({exc})") from None
    if x.dtype.kind not in "fiub":
        raise AudioError(f"{name} must be numeric audio samples, got dtype {x.dtype}")
    if x.ndim != 1:
        raise AudioError(
            f"{name} must be 1-D mono audio, got shape {x.shape}; mix down first (e.g. x.mean(axis=1))"
        )
    if x.dtype.kind in "iu":
        raise AudioError(f"{name} has integer dtype {x.dtype}; convert with to_float() first")
    x = x.astype(np.float64, copy=False)
    if not allow_empty and x.size == 0:
        raise AudioError(f"{name} is empty (no samples)")
    if x.size and not np.all(np.isfinite(x)):
        raise AudioError(f"{name} contains NaN or infinite values")
    return x


def to_int16(samples) -> np.ndarray:
    """Convert float audio to 16-bit integers (clip, then round).

    Parameters
    ----------
    samples : array_like
        Float audio, full scale +/-1.0.

    Returns
    -------
    numpy.ndarray
        ``int16`` array, ``round(x * 32768)`` clipped to [-32768, 32767].

    Examples
    --------
    >>> to_int16([0.0, 0.5, -1.0, 2.0]).tolist()
    [0, 16384, -32768, 32767]
    """
    try:
        x = np.asarray(samples, dtype=np.float64)
    except (TypeError, ValueError):
        raise AudioError(f"cannot convert {type(samples).__name__} to audio samples: numbers expected") from None
    if x.size and not np.all(np.isfinite(x)):
        raise AudioError("cannot convert NaN or infinite samples to int16")
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def to_float(samples) -> np.ndarray:
    """Convert 16-bit integer audio to float64 with full scale +/-1.0 (``x / 32768``).

    Parameters
    ----------
    samples : array_like of int16
        Integer audio.

    Returns
    -------
    numpy.ndarray
        ``float64`` array in [-1, 1).
    """
    x = np.asarray(samples)
    if x.dtype.kind not in "iu":
        raise AudioError(f"to_float expects 16-bit integer samples, got dtype {x.dtype}")
    return x.astype(np.float64) / 32768.0


def read_wav(path, *, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a WAV file as mono float64 audio.

    Parameters
    ----------
    path : str or os.PathLike
        The WAV file (any PCM or float subtype libsndfile reads; WAV, WAVE_FORMAT_EXTENSIBLE,
        RF64 and W64 containers).
    sample_rate : int, optional
        If given (Hz), the audio is resampled to this rate with soxr ('VHQ').

    Returns
    -------
    samples : numpy.ndarray
        1-D float64 array, full scale +/-1.0. Multi-channel files are mixed down by
        averaging the channels.
    sample_rate : int
        The rate of ``samples`` in Hz (the requested one if ``sample_rate`` was given).

    Raises
    ------
    AudioError
        The file is missing, is not a WAV file, is corrupt, has no samples, or holds
        NaN/infinite values. The message names the file.
    ParameterError
        ``sample_rate`` is not a positive whole number.

    See Also
    --------
    write_wav, resample
    """
    if sample_rate is not None:
        sample_rate = _check_sample_rate(sample_rate)
    p = Path(os.fspath(path))
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not a WAV file")
    try:
        info = sf.info(str(p))
    except Exception as exc:
        raise AudioError(f"{p}: not a readable WAV file ({_short(exc)})") from None
    if info.format not in _WAV_FORMATS:
        raise AudioError(f"{p}: is a {info.format} file, not WAV; convert it to WAV first")
    if info.frames <= 0:
        raise AudioError(f"{p}: WAV file has no samples (empty)")
    try:
        data, file_rate = sf.read(str(p), dtype="float64", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{p}: corrupt WAV data ({_short(exc)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{p}: WAV file has no samples (empty)")
    x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{p}: WAV file contains NaN or infinite samples")
    x = np.ascontiguousarray(x, dtype=np.float64)
    if sample_rate is not None and sample_rate != file_rate:
        from .resample import resample

        x = resample(x, file_rate, sample_rate)
        return x, sample_rate
    return x, int(file_rate)


def write_wav(path, samples, sample_rate: int) -> Path:
    """Write mono audio as a 16-bit PCM WAV file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; missing parent folders are created.
    samples : array_like
        1-D float audio, full scale +/-1.0. Values beyond full scale are clipped
        (see :func:`to_int16`).
    sample_rate : int
        Hz.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    AudioError
        ``samples`` is not 1-D finite audio, or the file cannot be written.
    ParameterError
        ``sample_rate`` is not a positive whole number.
    """
    sample_rate = _check_sample_rate(sample_rate)
    x = _as_mono(samples)
    p = Path(os.fspath(path))
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), to_int16(x), sample_rate, subtype="PCM_16", format="WAV")
    except OSError as exc:
        raise AudioError(f"{p}: cannot write WAV file ({_short(exc)})") from None
    except sf.LibsndfileError as exc:
        raise AudioError(f"{p}: cannot write WAV file ({_short(exc)})") from None
    return p


def _short(exc: BaseException) -> str:
    """One-line form of an exception message."""
    text = str(exc).strip().replace("\n", " ")
    return text[:200] if text else type(exc).__name__
