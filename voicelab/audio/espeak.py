"""Speech synthesis with eSpeak NG, for a corpus that needs no download.

eSpeak NG (formant synthesis, GPL-3.0) comes as a shared library inside the
``espeakng-loader`` wheel; this module drives it through ``ctypes`` (the wheel has
no Python synthesis API): ``espeak_Initialize`` in ``AUDIO_OUTPUT_SYNCHRONOUS``
mode with a synth callback that collects the 16-bit samples, ``espeak_SetVoiceByName``,
``espeak_SetParameter(espeakRATE)``, ``espeak_Synth``. Output is 22050 Hz, resampled
with soxr to the requested rate.

Determinism: eSpeak NG keeps synthesis state (pitch flutter and waveform phase) in
static variables that survive ``espeak_Terminate``: in one process, the same
sentence said twice came out with different lengths (51630-51643 samples measured).
So each utterance is synthesized by a freshly loaded copy of the library
(``dlopen``; about 10 ms), after which the library is unloaded again. And
``espeak_Initialize`` seeds the random generator that voices with breath noise
(``en-us+f3``) draw from for every sample from the current second, so two processes
differed; every synthesis therefore sets it with ``espeak_ng_SetRandSeed`` (``seed``,
default 0). Same text, voice, rate and seed give identical samples, in any order and
in any process. Calls are
serialized by a lock (the library is not thread-safe), and results are cached in
memory.

Synthetic speech is fine for protocol and delay tests, but PESQ is calibrated on
natural speech: absolute scores from eSpeak are not comparable with published
figures (see :data:`voicelab.audio.corpus.SYNTHETIC_WARNING`).
"""

from __future__ import annotations

import ctypes
import functools
import threading

import numpy as np

from ..errors import DataUnavailableError, ParameterError
from .io import _check_sample_rate
from .resample import resample

__all__ = ["synthesize", "HARVARD_LIST_1", "VOICES", "NATIVE_SAMPLE_RATE", "espeak_version"]

#: eSpeak NG's output rate (Hz).
NATIVE_SAMPLE_RATE = 22050

#: Voices used by the synthetic corpus: a male and a female US English variant.
VOICES = ("en-us", "en-us+f3")

#: The first Harvard sentence list (IEEE 1969 "Recommended practice for speech
#: quality measurements", list 1), used by the synthetic corpus.
HARVARD_LIST_1 = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE = 1
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_ENDPAUSE = 0x1000

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()
_chunks: list[np.ndarray] = []


def _collect(wav, numsamples, events):  # called by eSpeak from inside espeak_Synth
    if numsamples > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    return 0


_callback = _CALLBACK(_collect)


def _paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError:
        raise DataUnavailableError(
            "eSpeak NG is not installed: pip install espeakng-loader (needed for the synthetic corpus)"
        ) from None
    try:
        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except Exception as exc:
        raise DataUnavailableError(f"espeakng-loader has no usable eSpeak NG data ({exc})") from None


def _load(lib_path: str) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(lib_path)
    except OSError as exc:
        raise DataUnavailableError(f"cannot load the eSpeak NG library {lib_path} ({exc})") from None
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
    return lib


def _unload(lib: ctypes.CDLL) -> None:
    try:
        lib.espeak_Terminate()
    finally:
        import _ctypes

        handle = lib._handle
        del lib
        _ctypes.dlclose(handle)


@functools.lru_cache(maxsize=512)
def _synth_native(text: str, voice: str, rate_wpm: int, seed: int) -> np.ndarray:
    lib_path, data_path = _paths()
    with _lock:
        lib = _load(lib_path)
        try:
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
            if rate != NATIVE_SAMPLE_RATE:
                raise DataUnavailableError(
                    f"eSpeak NG failed to initialize with data {data_path} (returned {rate})"
                )
            lib.espeak_SetSynthCallback(_callback)
            if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
                raise ParameterError(f"eSpeak NG has no voice {voice!r}; try one of {', '.join(VOICES)}")
            lib.espeak_SetParameter(_ESPEAK_RATE, int(rate_wpm), 0)
            # espeak_Initialize seeds the generator behind breath noise (voices such as
            # en-us+f3) from the current second: seed it ourselves, after initialising.
            lib.espeak_ng_SetRandSeed(int(seed))
            _chunks.clear()
            data = text.encode("utf-8") + b"\0"
            err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0,
                                   _ESPEAK_CHARS_UTF8 | _ESPEAK_ENDPAUSE, None, None)
            if err != 0:
                raise DataUnavailableError(f"eSpeak NG synthesis failed (error {err})")
            pcm = np.concatenate(_chunks) if _chunks else np.zeros(0, dtype=np.int16)
            _chunks.clear()
        finally:
            _unload(lib)
    out = pcm.astype(np.float64) / 32768.0
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=512)
def _synth_cached(text: str, voice: str, sample_rate: int, rate_wpm: int, seed: int) -> np.ndarray:
    native = _synth_native(text, voice, rate_wpm, seed)
    out = resample(native, NATIVE_SAMPLE_RATE, sample_rate) if sample_rate != NATIVE_SAMPLE_RATE else native.copy()
    out.setflags(write=False)
    return out


def synthesize(text: str, *, voice: str = "en-us", sample_rate: int = 16000, rate_wpm: int = 160,
               seed: int = 0) -> np.ndarray:
    """Synthesize English text with eSpeak NG.

    Parameters
    ----------
    text : str
        What to say (UTF-8 text, not SSML).
    voice : str, default "en-us"
        eSpeak NG voice name, optionally with a variant (``"en-us+f3"`` is female).
    sample_rate : int, default 16000
        Output rate in Hz; eSpeak's 22050 Hz output is resampled with soxr (note that
        it holds nothing above 11 kHz whatever the rate).
    rate_wpm : int, default 160
        Speaking rate, words per minute (80..450).
    seed : int, default 0
        Seed of eSpeak NG's random generator (``espeak_ng_SetRandSeed``), which draws
        the breath noise of voices such as ``en-us+f3``. eSpeak itself seeds it from the
        current second, so without this the same call gave different samples in two
        processes.

    Returns
    -------
    numpy.ndarray
        1-D float64 audio as eSpeak produced it (no level normalization), including
        eSpeak's short leading silence and end pause. Deterministic: the same
        arguments (seed included) give identical samples, in any process.

    Raises
    ------
    DataUnavailableError
        The eSpeak NG library or its data cannot be loaded.
    ParameterError
        Empty text, unknown voice, or a rate out of range.

    Examples
    --------
    >>> x = synthesize("Hello.", sample_rate=8000)
    >>> x.ndim, x.dtype
    (1, dtype('float64'))
    """
    if not isinstance(text, str) or not text.strip():
        raise ParameterError("text to synthesize must be a non-empty string")
    if not isinstance(voice, str) or not voice:
        raise ParameterError(f"voice must be an eSpeak NG voice name such as 'en-us', got {voice!r}")
    sample_rate = _check_sample_rate(sample_rate)
    if isinstance(rate_wpm, bool) or not isinstance(rate_wpm, (int, np.integer)) or not 80 <= rate_wpm <= 450:
        raise ParameterError(f"rate_wpm must be an int in 80..450 words per minute, got {rate_wpm!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**31:
        raise ParameterError(f"seed must be an int in 0..2**31-1, got {seed!r}")
    out = _synth_cached(text, voice, sample_rate, int(rate_wpm), int(seed))
    if out.size == 0:
        raise DataUnavailableError(f"eSpeak NG produced no audio for {text[:40]!r}")
    return out.copy()


def espeak_version() -> str:
    """Version string of the eSpeak NG library in use (e.g. ``"1.52-dev"``)."""
    lib_path, _ = _paths()
    with _lock:
        lib = _load(lib_path)
        try:
            version = lib.espeak_Info(None)
            return version.decode("utf-8", "replace") if version else "unknown"
        finally:
            _unload(lib)
