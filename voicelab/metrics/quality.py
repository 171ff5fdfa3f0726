"""Signal-based quality metrics: PESQ, STOI, SNR and segmental SNR.

PESQ and STOI are computed by the field's reference packages (``pesq``, ITU-T P.862
C code wrapped by ludlows; ``pystoi``). This module only checks the input, converts
and resamples it, and turns every failure into a one-line :class:`MetricError` that
says what to do.

Long recordings
---------------
P.862 is specified for 8-12 s samples, and the ``pesq`` C code overruns its utterance
table (a segmentation fault, exit 139) on 60-90 s of speech with many pauses. Input
longer than :data:`LONG_PESQ_S` (20 s) is therefore scored in pieces of about
:data:`PESQ_SEGMENT_S` (10 s) cut in the reference's pauses (:func:`pesq_segments`); the
result is the mean of the pieces' scores weighted by their active speech (a piece where
speech was sent and nothing arrived scores 1.0). The pieces are scored in a child
process, so a crash of the C code is a :class:`MetricError`, not the end of the caller.

Input conventions (all functions)
---------------------------------
* 1-D (mono) arrays: float in [-1, 1] or signed integers (``int16`` is scaled by
  1/32768, other signed integer types by their full scale). Reference and degraded may
  have different dtypes.
* Only the *relative* level of reference and degraded matters to PESQ (P.862 aligns
  levels), so float audio is not required to be normalized.
* Lengths may differ by up to :data:`MAX_LENGTH_MISMATCH` (20 %) of the longer signal;
  both are then trimmed to the shorter one (from the end). A bigger difference almost
  always means the signals are not aligned: align them first (for example with
  ``voicelab.metrics.estimate_delay``).
* At least :data:`MIN_DURATION_S` (1 s) after trimming. P.862 itself refuses less than
  about 0.25 s of speech plus its alignment search margins; 1 s keeps the time
  alignment meaningful and is also enough for STOI's 384 ms analysis window.
* A signal whose peak is below one 16-bit step (:data:`SILENCE_PEAK`) is "silent":
  PESQ and STOI have no speech to compare and the call fails with a clear message.

Which rate PESQ runs at
-----------------------
``mode="wb"`` (P.862.2) always runs at 16 kHz; input above 16 kHz is resampled down
(soxr, VHQ), input below 16 kHz is refused (it has no wideband content).

``mode="nb"`` (P.862 + P.862.1 mapping) runs at 16 kHz when the input is at 16 kHz or
more (resampled to 16 kHz if higher) and at 8 kHz when it is below 16 kHz (resampled to
8 kHz if not already there). P.862 defines both rates for narrowband scoring, and the
``pesq`` package's published reference values (WB 1.0832337, NB 1.6072081 for its
``speech.wav`` / ``speech_bab_0dB.wav`` pair, both 16 kHz) are computed by passing
16 kHz audio straight to narrowband mode; downsampling that pair to 8 kHz first gives
NB 1.6654 instead. Measured on the natural speech in ``shared/datasets/speech``: for
band-limited (codec-like) degradations the 8 kHz and 16 kHz narrowband paths agree to
within 0.02 MOS; for wideband noise the 16 kHz path scores up to 0.1 lower, because its
input filter still passes some energy above 4 kHz. Keeping one path per input rate
makes numbers comparable across codecs whose output is at 16 kHz or 48 kHz.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ..errors import MetricError, ParameterError

__all__ = [
    "pesq",
    "pesq_nb",
    "pesq_wb",
    "stoi",
    "snr_db",
    "segmental_snr_db",
    "MIN_DURATION_S",
    "MAX_LENGTH_MISMATCH",
    "SILENCE_PEAK",
    "PESQ_NB_CEILING",
    "PESQ_WB_CEILING",
    "LONG_PESQ_S",
    "PESQ_SEGMENT_S",
    "pesq_segments",
]

#: Shortest audio (after trimming to the shorter signal) the metrics accept, in s.
MIN_DURATION_S = 1.0
#: Largest allowed length difference, as a fraction of the longer signal.
MAX_LENGTH_MISMATCH = 0.2
#: Peak (full scale 1.0) below which a signal counts as silent: one 16-bit step.
SILENCE_PEAK = 1.0 / 32768.0
#: PESQ MOS-LQO of identical signals, narrowband (P.862.1 mapping).
PESQ_NB_CEILING = 4.549
#: PESQ MOS-LQO of identical signals, wideband (P.862.2).
PESQ_WB_CEILING = 4.644


# ----------------------------------------------------------------------------- input


def _as_audio(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a finite 1-D float64 array in full-scale units."""
    try:
        a = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is bad input
        raise MetricError(f"{name} is not an array of samples ({exc})") from None
    if a.dtype.kind == "i":
        a = a.astype(np.float64) / (float(np.iinfo(a.dtype).max) + 1.0)
    elif a.dtype.kind == "f":
        a = a.astype(np.float64, copy=False)
    else:
        raise MetricError(
            f"{name} must hold float or signed integer samples, got dtype {a.dtype}; "
            "convert to float in [-1, 1] or int16"
        )
    if a.ndim != 1:
        raise MetricError(
            f"{name} must be 1-D (mono), got shape {a.shape}; pick one channel, e.g. x[:, 0]"
        )
    if a.size == 0:
        raise MetricError(f"{name} is empty; pass at least {MIN_DURATION_S:g} s of speech")
    if not np.all(np.isfinite(a)):
        raise MetricError(f"{name} contains NaN or infinite samples; clean the signal first")
    return a


def _check_rate(sample_rate: Any) -> int:
    if isinstance(sample_rate, bool):
        raise ParameterError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    try:
        rate = int(sample_rate)
    except (TypeError, ValueError):
        raise ParameterError(
            f"sample_rate must be a positive integer in Hz, got {sample_rate!r}"
        ) from None
    if rate != sample_rate or rate <= 0:
        raise ParameterError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    return rate


def _pair(reference: Any, degraded: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate both signals and trim them to a common length."""
    ref = _as_audio(reference, "reference")
    deg = _as_audio(degraded, "degraded")
    n_ref, n_deg = ref.size, deg.size
    longer = max(n_ref, n_deg)
    if abs(n_ref - n_deg) > MAX_LENGTH_MISMATCH * longer:
        raise MetricError(
            f"reference ({n_ref} samples) and degraded ({n_deg} samples) differ in length "
            f"by more than {MAX_LENGTH_MISMATCH:.0%}; align them first "
            "(e.g. voicelab.metrics.estimate_delay) and cut both to the same span"
        )
    n = min(n_ref, n_deg)
    return ref[:n], deg[:n]


def _check_duration(n: int, sample_rate: int) -> None:
    if n < MIN_DURATION_S * sample_rate:
        raise MetricError(
            f"audio is too short: {n / sample_rate:.3f} s after trimming to the shorter "
            f"signal, need at least {MIN_DURATION_S:g} s of speech"
        )


def _check_not_silent(ref: np.ndarray, deg: np.ndarray) -> None:
    for name, x in (("reference", ref), ("degraded", deg)):
        if float(np.max(np.abs(x))) < SILENCE_PEAK:
            raise MetricError(
                f"{name} signal is silent (peak below one 16-bit step); pass speech, and "
                "check that audio actually flowed (a fully lost stream scores as silence)"
            )


def _resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return x
    import soxr

    return np.asarray(soxr.resample(x, rate_in, rate_out, quality="VHQ"), dtype=np.float64)


# ----------------------------------------------------------------------------- PESQ


def pesq(reference: Any, degraded: Any, sample_rate: int, *, mode: str = "nb") -> float:
    """PESQ MOS-LQO of ``degraded`` against ``reference`` (ITU-T P.862 family).

    Parameters
    ----------
    reference : array_like, shape (n,)
        What was sent: float in [-1, 1] or int16.
    degraded : array_like, shape (m,)
        What was received, time-aligned with ``reference`` (m within 20 % of n).
    sample_rate : int
        Sample rate of both signals in Hz (any rate; resampled as described in the
        module docstring).
    mode : {"nb", "wb"}
        ``"nb"``: P.862 with the P.862.1 mapping (ceiling 4.549). ``"wb"``: P.862.2
        (ceiling 4.644), needs audio at >= 16 kHz.

    Returns
    -------
    float
        MOS-LQO, about 1.0 (bad) to 4.55 / 4.64.

    Raises
    ------
    MetricError
        Silent, too short, non-finite, non-1-D or misaligned input, wideband on audio
        below 16 kHz, or any failure inside the P.862 code.
    ParameterError
        Bad ``mode`` or ``sample_rate``.

    See Also
    --------
    pesq_nb, pesq_wb, stoi

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal(16000 * 2) * 0.1  # not speech; use real speech
    >>> round(pesq(x, x, 16000, mode="wb"), 3)  # doctest: +SKIP
    4.644
    """
    if mode not in ("nb", "wb"):
        raise ParameterError(f"mode must be 'nb' or 'wb', got {mode!r}")
    rate = _check_rate(sample_rate)
    ref, deg = _pair(reference, degraded)
    _check_duration(ref.size, rate)
    _check_not_silent(ref, deg)
    if mode == "wb":
        if rate < 16000:
            raise MetricError(
                f"wideband PESQ needs >= 16 kHz audio, got {rate} Hz; use mode='nb' or "
                "pass audio sampled at 16 kHz or more"
            )
        target = 16000
    else:
        target = 16000 if rate >= 16000 else 8000
    ref = _resample(ref, rate, target)
    deg = _resample(deg, rate, target)
    if ref.size <= LONG_PESQ_S * target:
        return _run_pesq(ref, deg, target, mode)
    return _pesq_long_isolated(ref, deg, target, mode)


# ------------------------------------------------------------ long recordings
#: Recordings longer than this (s) are scored segment by segment, in a child process.
LONG_PESQ_S = 20.0
#: Target segment length (s) for long recordings: P.862 is specified for 8-12 s samples.
PESQ_SEGMENT_S = 10.0


def pesq_segments(reference: np.ndarray, sample_rate: int, *, segment_s: float = PESQ_SEGMENT_S) -> list[tuple[int, int]]:
    """Cut points for scoring a long recording piece by piece, in samples.

    Each cut falls in the quietest 100 ms of the reference between 0.8 and 1.2 times
    ``segment_s`` after the previous cut (a pause between utterances, where cutting
    changes nothing the listener hears); the last piece is what remains, between half a
    segment and 1.7 segments long.

    Parameters
    ----------
    reference : ndarray
        The reference at ``sample_rate`` Hz.
    sample_rate : int
        Hz.
    segment_s : float
        Target piece length in s.

    Returns
    -------
    list of (start, stop)
        Consecutive sample spans covering the whole recording.
    """
    n = reference.size
    seg = int(segment_s * sample_rate)
    win = max(1, sample_rate // 10)
    spans: list[tuple[int, int]] = []
    start = 0
    while n - start > 1.7 * seg:
        lo, hi = start + int(0.8 * seg), min(n, start + int(1.2 * seg))
        e = np.convolve(reference[lo:hi] ** 2, np.ones(win), mode="valid")
        cut = lo + int(np.argmin(e)) + win // 2
        spans.append((start, cut))
        start = cut
    spans.append((start, n))
    return spans


def _pesq_by_segments(ref: np.ndarray, deg: np.ndarray, rate: int, mode: str) -> float:
    """Mean PESQ of the segments that hold speech, weighted by their active speech."""
    scores, weights, failures = [], [], []
    frame = rate // 100
    for a, b in pesq_segments(ref, rate):
        r, d = ref[a:b], deg[a:b]
        if b - a < MIN_DURATION_S * rate or float(np.max(np.abs(r))) < SILENCE_PEAK:
            continue  # a pause or a short tail: nothing to score
        energy = np.sum(r[: (r.size // frame) * frame].reshape(-1, frame) ** 2, axis=1)
        active = int(np.sum(energy > np.max(energy) * 1e-4))  # frames within 40 dB of the loudest
        if float(np.max(np.abs(d))) < SILENCE_PEAK:
            scores.append(1.0)  # speech sent, nothing received: the bottom of the scale
            weights.append(active)
            continue
        try:
            scores.append(_run_pesq(r, d, rate, mode))
            weights.append(active)
        except MetricError as exc:
            failures.append(str(exc))
    if not scores:
        raise MetricError(f"PESQ could score no segment of the long recording ({failures[0] if failures else 'no speech'})")
    return float(np.average(scores, weights=weights))


def _pesq_long_isolated(ref: np.ndarray, deg: np.ndarray, rate: int, mode: str) -> float:
    """:func:`_pesq_by_segments` in a child process: a crash of the P.862 C code (it
    overruns its utterance table on long speech with many pauses) becomes a MetricError
    here instead of killing the caller and every result it holds."""
    import io
    import signal
    import subprocess
    import sys

    buf = io.BytesIO()
    np.savez(buf, ref=ref, deg=deg, rate=rate, mode=mode)
    code = "from voicelab.metrics.quality import _pesq_child; _pesq_child()"
    try:
        proc = subprocess.run([sys.executable, "-c", code], input=buf.getvalue(), capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MetricError(f"PESQ of the long recording could not run: {exc}") from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        raise MetricError(f"the PESQ C code crashed ({name}) on this {ref.size / rate:.0f} s recording; no score")
    if proc.returncode != 0 or not out:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise MetricError(f"PESQ of the long recording failed: {err[-1] if err else 'no output'}")
    kind, _, value = out.splitlines()[-1].partition(" ")
    if kind == "score":
        return float(value)
    raise MetricError(value)


def _pesq_child() -> None:  # pragma: no cover - runs in the child process
    import resource
    import sys

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file behind
    with np.load(__import__("io").BytesIO(sys.stdin.buffer.read())) as z:
        ref, deg, rate, mode = z["ref"], z["deg"], int(z["rate"]), str(z["mode"])
    try:
        print(f"score {_pesq_by_segments(ref, deg, rate, mode)!r}")
    except MetricError as exc:
        print(f"error {exc}")


def _run_pesq(ref: np.ndarray, deg: np.ndarray, rate: int, mode: str) -> float:
    try:
        import pesq as pesqlib
    except ImportError:  # pragma: no cover - pesq is a hard dependency
        raise MetricError("the 'pesq' package is not installed; pip install pesq") from None
    no_utt = getattr(pesqlib, "NoUtterancesError", ())
    too_short = getattr(pesqlib, "BufferTooShortError", ())
    bad_rate = getattr(pesqlib, "InvalidSampleRateError", ())
    out_of_range = getattr(pesqlib, "OutOfRangeError", ())
    base = getattr(pesqlib, "PesqError", ())
    try:
        score = pesqlib.pesq(rate, ref, deg, mode, on_error=pesqlib.PesqError.RAISE_EXCEPTION)
    except no_utt:
        raise MetricError(
            "PESQ found no speech utterances: the signal is silent or nearly so; pass "
            "speech (not tones or silence) in both reference and degraded"
        ) from None
    except too_short:
        raise MetricError(
            f"PESQ says the audio is too short; pass at least {MIN_DURATION_S:g} s of speech"
        ) from None
    except bad_rate:
        raise MetricError(f"PESQ refused sample rate {rate} Hz (needs 8000 or 16000)") from None
    except out_of_range:
        raise MetricError("PESQ input is out of range; scale audio to [-1, 1]") from None
    except base as exc:
        raise MetricError(f"PESQ failed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - never leak a foreign exception
        raise MetricError(f"PESQ failed: {type(exc).__name__}: {exc}") from None
    score = float(score)
    if not math.isfinite(score):
        raise MetricError("PESQ returned a non-finite score; check the input for silence")
    return score


def pesq_nb(reference: Any, degraded: Any, sample_rate: int) -> float:
    """Narrowband PESQ (P.862 + P.862.1); ``pesq(..., mode="nb")``."""
    return pesq(reference, degraded, sample_rate, mode="nb")


def pesq_wb(reference: Any, degraded: Any, sample_rate: int) -> float:
    """Wideband PESQ (P.862.2); ``pesq(..., mode="wb")``."""
    return pesq(reference, degraded, sample_rate, mode="wb")


# ----------------------------------------------------------------------------- STOI


def stoi(reference: Any, degraded: Any, sample_rate: int, *, extended: bool = False) -> float:
    """Short-time objective intelligibility (Taal et al. 2011) through ``pystoi``.

    Parameters
    ----------
    reference, degraded : array_like, shape (n,)
        Clean and processed speech, time-aligned (same input rules as :func:`pesq`).
    sample_rate : int
        Sample rate in Hz (pystoi resamples internally to 10 kHz).
    extended : bool
        Use extended STOI (Jensen and Taal 2016), better for modulated noise.

    Returns
    -------
    float
        About 0..1 (1 = identical intelligibility-relevant envelopes).

    Raises
    ------
    MetricError
        Same input checks as :func:`pesq`; also when too little non-silent speech
        remains after STOI's silent-frame removal.
    """
    rate = _check_rate(sample_rate)
    ref, deg = _pair(reference, degraded)
    _check_duration(ref.size, rate)
    _check_not_silent(ref, deg)
    try:
        from pystoi import stoi as _pystoi
    except ImportError:  # pragma: no cover - pystoi is a hard dependency
        raise MetricError("the 'pystoi' package is not installed; pip install pystoi") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            score = float(_pystoi(ref, deg, rate, extended=bool(extended)))
        except Exception as exc:  # noqa: BLE001 - never leak a foreign exception
            raise MetricError(f"STOI failed: {type(exc).__name__}: {exc}") from None
    for w in caught:
        if "Not enough STFT frames" in str(w.message):
            raise MetricError(
                "STOI found too little speech after removing silent frames (needs about "
                "0.4 s of active speech); pass a longer speech segment"
            )
    if not math.isfinite(score):
        raise MetricError("STOI returned a non-finite score; check the input for silence")
    return score


# ----------------------------------------------------------------------------- SNR


def snr_db(reference: Any, degraded: Any) -> float:
    """Signal-to-noise ratio of ``degraded`` against ``reference`` in dB.

    ``10 log10(sum(ref^2) / sum((ref - deg)^2))`` over the common length. Sample-exact:
    the signals must be time-aligned and at the same level.

    Returns
    -------
    float
        SNR in dB; ``inf`` when the signals are identical.

    Raises
    ------
    MetricError
        Bad input (see module docstring) or a silent reference.
    """
    ref, deg = _pair(reference, degraded)
    signal = float(np.sum(ref * ref))
    if signal == 0.0:
        raise MetricError("reference signal is silent (all zeros); SNR is undefined")
    noise = float(np.sum((ref - deg) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise)


def segmental_snr_db(
    reference: Any,
    degraded: Any,
    sample_rate: int,
    *,
    frame_ms: float = 20.0,
    floor_db: float = -10.0,
    ceiling_db: float = 35.0,
) -> float:
    """Segmental SNR: the mean of per-frame SNRs, each clamped to [floor, ceiling].

    The classic definition (Quackenbush, Barnwell and Clements, *Objective Measures of
    Speech Quality*, 1988): non-overlapping frames of ``frame_ms``, every frame
    counted, each frame's SNR clamped to ``[floor_db, ceiling_db]`` so that silent
    frames and perfect frames do not dominate the mean. A frame with no error counts as
    ``ceiling_db``; a frame with error but no signal counts as ``floor_db``. A trailing
    partial frame is ignored.

    Parameters
    ----------
    reference, degraded : array_like, shape (n,)
        Time-aligned signals.
    sample_rate : int
        Sample rate in Hz.
    frame_ms : float
        Frame length in ms.
    floor_db, ceiling_db : float
        Clamp limits in dB.

    Returns
    -------
    float
        Segmental SNR in dB.
    """
    rate = _check_rate(sample_rate)
    try:
        frame_ms = float(frame_ms)
        floor_db = float(floor_db)
        ceiling_db = float(ceiling_db)
    except (TypeError, ValueError):
        raise ParameterError("frame_ms, floor_db and ceiling_db must be numbers") from None
    if not (math.isfinite(frame_ms) and frame_ms > 0):
        raise ParameterError(f"frame_ms must be > 0, got {frame_ms}")
    if not (math.isfinite(floor_db) and math.isfinite(ceiling_db) and floor_db < ceiling_db):
        raise ParameterError(
            f"need finite floor_db < ceiling_db, got {floor_db} and {ceiling_db}"
        )
    ref, deg = _pair(reference, degraded)
    frame = int(round(frame_ms * rate / 1000.0))
    if frame < 1:
        raise ParameterError(f"frame_ms={frame_ms} is shorter than one sample at {rate} Hz")
    n_frames = ref.size // frame
    if n_frames < 1:
        raise MetricError(
            f"audio ({ref.size} samples) is shorter than one {frame_ms:g} ms frame"
        )
    r = ref[: n_frames * frame].reshape(n_frames, frame)
    e = r - deg[: n_frames * frame].reshape(n_frames, frame)
    sig = np.sum(r * r, axis=1)
    err = np.sum(e * e, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        seg = 10.0 * np.log10(sig / err)
    seg = np.where(err == 0.0, ceiling_db, seg)
    seg = np.where((sig == 0.0) & (err > 0.0), floor_db, seg)
    seg = np.clip(seg, floor_db, ceiling_db)
    return float(np.mean(seg))
