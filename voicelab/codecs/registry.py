"""The codec registry: names, aliases, parameter checks and availability.

Codec classes are imported lazily (by module path), so a missing optional library
(bcg729, libopus) never breaks ``import voicelab.codecs``; it only makes that one codec
unavailable, with a message naming the package to install.

Every codec class in this package follows one small convention on top of
:class:`voicelab.codecs.base.Codec`:

* ``__init__(self, **params)`` calls ``self._configure(**params)`` (validates the
  parameters and sets every fact: rates, frame, bitrate, look-ahead, PT) and then
  ``self._open()`` (loads the library and creates encoder/decoder state).
* the classmethod ``unavailable_reason()`` returns None or a one-line reason.

so the registry can report a codec's facts even where its library is missing.

This module also holds :func:`measure_lookahead_ms`, the measurement that every
codec's ``lookahead_ms`` constant was taken from (and that the tests repeat).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Iterable

import numpy as np

from ..errors import CodecUnavailableError, ParameterError
from .base import Codec

__all__ = [
    "get",
    "names",
    "available",
    "is_available",
    "canonical_name",
    "modes",
    "measure_lookahead_ms",
    "probe_signal",
]

# name -> (module, class name)
_REGISTRY: dict[str, tuple[str, str]] = {
    "pcmu": (".g711", "PCMUCodec"),
    "pcma": (".g711", "PCMACodec"),
    "g722": (".pyav", "G722Codec"),
    "g723": (".pyav", "G723Codec"),
    "g726": (".pyav", "G726Codec"),
    "g729": (".g729", "G729Codec"),
    "amr-nb": (".pyav", "AMRNBCodec"),
    "opus": (".opus", "OpusCodec"),
    "l16": (".l16", "L16Codec"),
}

# alias (lower case) -> (canonical name, preset parameters)
_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "g711u": ("pcmu", {}),
    "g711-u": ("pcmu", {}),
    "g711.u": ("pcmu", {}),
    "g711mu": ("pcmu", {}),
    "ulaw": ("pcmu", {}),
    "u-law": ("pcmu", {}),
    "mulaw": ("pcmu", {}),
    "mu-law": ("pcmu", {}),
    "g711a": ("pcma", {}),
    "g711-a": ("pcma", {}),
    "g711.a": ("pcma", {}),
    "alaw": ("pcma", {}),
    "a-law": ("pcma", {}),
    "g.722": ("g722", {}),
    "g723.1": ("g723", {}),
    "g.723.1": ("g723", {}),
    "g7231": ("g723", {}),
    "g.723": ("g723", {}),
    "g.726": ("g726", {}),
    "g726-16": ("g726", {"bitrate": 16000}),
    "g726-24": ("g726", {"bitrate": 24000}),
    "g726-32": ("g726", {"bitrate": 32000}),
    "g726-40": ("g726", {"bitrate": 40000}),
    "g.729": ("g729", {}),
    "g729a": ("g729", {}),
    "g.729a": ("g729", {}),
    "amr": ("amr-nb", {}),
    "amrnb": ("amr-nb", {}),
    "amr_nb": ("amr-nb", {}),
    "libopus": ("opus", {}),
    "pcm": ("l16", {}),
}


# ----------------------------------------------------------------- param checks
def check_choice(codec: str, param: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise :class:`ParameterError`."""
    allowed = list(allowed)
    for a in allowed:
        if isinstance(value, (bool, np.bool_)) != isinstance(a, bool):
            continue  # True must not pass for 1
        if isinstance(value, str) and isinstance(a, str):
            if value.strip().lower() == a.lower():
                return a
        elif not isinstance(value, str) and not isinstance(a, str) and value == a:
            return a
    shown = ", ".join(str(a) for a in allowed)
    raise ParameterError(f"{codec}: {param}={value!r} is not allowed; use one of {shown}")


def check_int_range(codec: str, param: str, value: Any, lo: int, hi: int) -> int:
    """Return ``value`` as int if it is an integer in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float)):
        raise ParameterError(f"{codec}: {param} must be an integer from {lo} to {hi}, got {value!r}")
    if float(value) != int(value) or not lo <= int(value) <= hi:
        raise ParameterError(f"{codec}: {param}={value!r} is out of range; use an integer from {lo} to {hi}")
    return int(value)


def check_bool(codec: str, param: str, value: Any) -> bool:
    """Return ``value`` if it is a bool (or numpy bool)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ParameterError(f"{codec}: {param} must be True or False, got {value!r}")


def check_frame_ms(codec: str, value: Any, allowed: Iterable[float]) -> float:
    """Return ``frame_ms`` as float if it is one of ``allowed`` (ms)."""
    allowed = [float(a) for a in allowed]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ParameterError(f"{codec}: frame_ms must be a number of ms, got {value!r}")
    for a in allowed:
        if abs(float(value) - a) < 1e-9:
            return a
    shown = ", ".join(f"{a:g}" for a in allowed)
    raise ParameterError(f"{codec}: frame_ms={value!r} is not allowed; use one of {shown} (ms)")


def check_sample_rate(codec: str, value: Any, allowed: Iterable[int]) -> int:
    """Return ``sample_rate`` as int if it is one of ``allowed`` (Hz)."""
    allowed = list(allowed)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ParameterError(f"{codec}: sample_rate must be a rate in Hz, got {value!r}")
    if float(value) in [float(a) for a in allowed]:
        return int(value)
    shown = ", ".join(str(a) for a in allowed)
    raise ParameterError(f"{codec}: sample_rate={value!r} is not allowed; use one of {shown} (Hz)")


# ----------------------------------------------------------------- registry
def names() -> list[str]:
    """All codec names the registry knows (available here or not)."""
    return list(_REGISTRY)


def canonical_name(name: str) -> tuple[str, dict[str, Any]]:
    """Resolve a name or alias (case-insensitive) to ``(name, preset_params)``.

    Raises
    ------
    ParameterError
        If the name is unknown; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise ParameterError(f"codec name must be a string, got {name!r}")
    key = name.strip().lower()
    if key in _REGISTRY:
        return key, {}
    if key in _ALIASES:
        canon, preset = _ALIASES[key]
        return canon, dict(preset)
    raise ParameterError(
        f"unknown codec {name!r}; valid names: {', '.join(_REGISTRY)} "
        f"(aliases: {', '.join(sorted(_ALIASES))})"
    )


# The bit rates each codec codes (bit/s). Codecs not listed have one rate, their default.
# Opus codes any rate from 6 to 510 kbit/s: these are the usual operating points.
_BITRATE_MODES: dict[str, tuple[int, ...]] = {
    "g726": (16000, 24000, 32000, 40000),
    "amr-nb": (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200),
    "opus": (8000, 12000, 16000, 24000, 32000, 64000),
}


def modes(name: str) -> list[dict[str, Any]]:
    """The operating modes (bit rates) a codec can be asked for.

    Parameters
    ----------
    name : str
        Codec name or alias.

    Returns
    -------
    list of dict
        One dict per mode: ``label`` (e.g. ``"g726 24k"``), ``params`` (keyword
        arguments for :func:`get` / ``Scenario.codec_params``, empty for the default
        mode) and ``bitrate`` (bit/s). A codec with a single rate (G.711, G.722,
        G.723.1 at 6.3 kbit/s, G.729, L16) has one mode with empty ``params``.

    Raises
    ------
    ParameterError
        If the name is unknown.

    Examples
    --------
    >>> [m["label"] for m in modes("g726")]
    ['g726 16k', 'g726 24k', 'g726 32k', 'g726 40k']
    >>> modes("pcmu")
    [{'label': 'pcmu', 'params': {}, 'bitrate': 64000}]
    """
    canon, _ = canonical_name(name)
    rates = _BITRATE_MODES.get(canon)
    if rates is None:
        probe = _class(canon).__new__(_class(canon))
        probe._configure()  # type: ignore[attr-defined]
        return [{"label": canon, "params": {}, "bitrate": int(probe.bitrate)}]
    return [{"label": f"{canon} {r / 1000:g}k", "params": {"bitrate": r}, "bitrate": r} for r in rates]


def _class(name: str) -> type[Codec]:
    module, cls = _REGISTRY[name]
    mod = importlib.import_module(module, __package__)
    return getattr(mod, cls)


def _allowed_params(cls: type[Codec]) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _merge(name: str, preset: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    for k, v in preset.items():
        if k in params and params[k] != v:
            raise ParameterError(
                f"{name}: the alias fixes {k}={v!r} but {k}={params[k]!r} was given; "
                f"use the plain name with {k}=... instead"
            )
    return {**preset, **params}


def _check_params(canon: str, cls: type[Codec], params: dict[str, Any]) -> None:
    allowed = _allowed_params(cls)
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise ParameterError(
            f"{canon}: unknown parameter(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed) if allowed else 'none'}"
        )


def get(name: str, **params: Any) -> Codec:
    """Create a new codec instance by name.

    Parameters
    ----------
    name : str
        A registry name (see :func:`names`) or an alias such as ``"g711u"``, ``"alaw"``,
        ``"amr"``, ``"g723.1"``, ``"g726-32"`` (case-insensitive).
    **params
        Codec parameters, e.g. ``frame_ms=20``, ``bitrate=12200``.

    Returns
    -------
    Codec
        A new instance (its own encoder and decoder state) on every call.

    Raises
    ------
    ParameterError
        Unknown name, unknown parameter or a value the codec does not allow.
    CodecUnavailableError
        The codec's library is not installed here (the message names the package).

    Examples
    --------
    >>> from voicelab import codecs
    >>> c = codecs.get("g711u", frame_ms=20)
    >>> c.name, c.payload_type, c.frame_samples
    ('pcmu', 0, 160)
    """
    canon, preset = canonical_name(name)
    params = _merge(canon, preset, params)
    cls = _class(canon)
    _check_params(canon, cls, params)
    reason = cls.unavailable_reason()  # type: ignore[attr-defined]
    if reason is not None:
        # validate parameters first so a typo is reported as such
        probe = cls.__new__(cls)
        probe._configure(**params)  # type: ignore[attr-defined]
        raise CodecUnavailableError(f"{canon}: {reason}")
    return cls(**params)


def is_available(name: str) -> bool:
    """True when :func:`get` can create the codec here (its library is installed)."""
    canon, _ = canonical_name(name)
    return _class(canon).unavailable_reason() is None  # type: ignore[attr-defined]


def available() -> list[dict[str, Any]]:
    """Facts of every codec with default parameters, plus availability.

    Returns
    -------
    list of dict
        One :meth:`Codec.info` dict per name, with ``available`` (bool) and
        ``unavailable_reason`` (str or None) added.
    """
    out = []
    for name in _REGISTRY:
        cls = _class(name)
        reason = cls.unavailable_reason()  # type: ignore[attr-defined]
        if reason is None:
            info = cls().info()
        else:
            probe = cls.__new__(cls)
            probe._configure()  # type: ignore[attr-defined]
            info = probe.info()
        info["available"] = reason is None
        info["unavailable_reason"] = reason
        out.append(info)
    return out


# ----------------------------------------------------------------- measurement
def probe_signal(sample_rate: int, *, seconds: float = 1.2, seed: int = 1) -> np.ndarray:
    """A deterministic speech-like test signal (voiced vowels with gliding pitch).

    A glottal-like pulse train (F0 gliding 95..230 Hz) through three formant
    resonators that change every 200 ms, with a syllable-rate envelope and a little
    aspiration noise. Speech codecs (CELP, ADPCM, Opus) code it as they code voice,
    which a chirp or white noise would not exercise.

    Parameters
    ----------
    sample_rate : int
        Rate in Hz.
    seconds : float
        Length in s.
    seed : int
        Seed of the noise component.

    Returns
    -------
    numpy.ndarray of int16
    """
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = 95.0 + 135.0 * (0.5 - 0.5 * np.cos(2 * np.pi * t / seconds * 1.5))
    phase = np.cumsum(f0 / sample_rate)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    # soften the pulses (glottal shape) with a short decaying filter
    src = lfilter([1.0], [1.0, -0.92], pulses) - lfilter([1.0], [1.0, -0.6], pulses)
    src = src + 0.02 * rng.standard_normal(n)
    vowels = [(700, 1220, 2600), (300, 2300, 3000), (500, 900, 2400), (400, 1900, 2550), (650, 1100, 2800)]
    out = np.zeros(n)
    seg = int(0.2 * sample_rate)
    for i, start in enumerate(range(0, n, seg)):
        stop = min(n, start + seg + seg // 4)
        y = src[start:stop].copy()
        for f in vowels[i % len(vowels)]:
            if f >= 0.45 * sample_rate:
                continue
            r = np.exp(-np.pi * 90.0 / sample_rate)
            a = [1.0, -2 * r * np.cos(2 * np.pi * f / sample_rate), r * r]
            y = lfilter([1.0 - r], a, y)
        w = np.ones(stop - start)
        ramp = min(seg // 4, stop - start)
        if start > 0:
            w[:ramp] = np.linspace(0, 1, ramp)
        if stop - start > seg:
            w[seg:] = np.linspace(1, 0, stop - start - seg)
        out[start:stop] += y * w
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 3.7 * t) ** 2
    out *= env
    out *= 0.3 * 32767 / (np.max(np.abs(out)) + 1e-12)
    return np.round(out).astype(np.int16)


def measure_lookahead_ms(codec: Codec | str, **params: Any) -> float:
    """Measure a codec's output lag beyond framing by cross-correlation.

    Encodes :func:`probe_signal` frame by frame with one instance, decodes the
    payloads with the same instance (encoder and decoder states are separate), and
    finds the lag of the decoded output against the input: the peak of their
    cross-correlation, refined to a fraction of a sample by parabolic interpolation.

    Parameters
    ----------
    codec : Codec or str
        A codec instance (it is used from its current state; pass a fresh one) or a
        name, in which case ``**params`` are passed to :func:`get`.

    Returns
    -------
    float
        Lag in ms (decoded sample ``n`` best matches input sample ``n - lag``).
    """
    if isinstance(codec, str):
        codec = get(codec, **params)
    sr = codec.sample_rate
    x = probe_signal(sr)
    n = codec.frame_samples
    frames = len(x) // n
    x = x[: frames * n]
    y = np.concatenate([codec.decode(codec.encode(x[i * n:(i + 1) * n])) for i in range(frames)])
    xf = x.astype(np.float64)
    yf = y.astype(np.float64)
    max_lag = int(0.06 * sr)
    size = 1 << int(np.ceil(np.log2(len(xf) + len(yf))))
    cc = np.fft.irfft(np.fft.rfft(yf, size) * np.conj(np.fft.rfft(xf, size)), size)
    lags = cc[: max_lag + 1]  # y lags x by 0..max_lag samples
    k = int(np.argmax(lags))
    frac = 0.0
    if 0 < k < max_lag:
        a, b, c = lags[k - 1], lags[k], lags[k + 1]
        den = a - 2 * b + c
        if den != 0:
            frac = 0.5 * (a - c) / den
    return (k + frac) * 1000.0 / sr
