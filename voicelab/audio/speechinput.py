"""The speech a call sends: named speech (corpus, one corpus item, eSpeak, an example) or a
WAV file, level-normalised and cut to length.

Every call engine (the simulator, SIP/WebRTC/WebSocket calls on loopback, virtual-network
calls, the agent's ``play`` mode) loads its speech with :func:`load_speech`. It used to
live in :mod:`voicelab.sim` (which re-exports it, taking a ``Scenario``); it sits in the
audio layer so that transports and endpoints do not import the experiment layer.

Speech specs (``speech=``):

``"default"``
    The corpus (:func:`voicelab.audio.corpus`): natural recordings shipped in the package,
    plus ``VOICELAB_DATA``; concatenated with 0.3 s gaps up to ``max_speech_s``,
    alternating talkers (PESQ varies by talker: G.711 PESQ-WB 2.7 for CMU ARCTIC ``aew``,
    3.5-3.9 for ``axb``). The shipped items come first, so the first ~20 s are the same
    with and without ``VOICELAB_DATA``.
``"espeak"`` (or ``"synthetic"``)
    The eSpeak NG corpus the same way (synthetic: results carry
    :data:`voicelab.audio.SYNTHETIC_WARNING`).
``"talker:NAME"``
    The items of one talker (``talker:aew``, ``talker:axb``, ``talker:espeak:en-us``),
    concatenated the same way: about 8-11 s per shipped talker, the length P.862
    recommends, for a talker dimension in a study.
``"corpus:ID"``
    One corpus item by id (:func:`voicelab.audio.corpus_items`), natural or eSpeak.
``"corpus:N"``
    Item ``N`` of the default corpus listing.
an example name
    :func:`voicelab.audio.example` (``"harvard"``, ``"arctic"``, ``"css"``, ...).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import AudioError, ParameterError
from .corpus import corpus_item, corpus_items, example
from .io import read_wav
from .level import normalize_level
from .resample import resample

__all__ = ["SpeechInput", "load_speech", "SUPPORTED_INPUT_RATES"]

#: Rates a WAV file given as ``input`` may have (Hz).
SUPPORTED_INPUT_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)

#: Silence between concatenated corpus items (s).
GAP_S = 0.3


@dataclass(frozen=True)
class SpeechInput:
    """The speech a call sends (already level-normalised).

    Attributes
    ----------
    samples : numpy.ndarray
        Read-only float64 audio.
    sample_rate : int
        Hz (16000, or 8000 for an 8 kHz file).
    name : str
        What it is: ``"default[cmu_arctic_aew_a0001,cmu_arctic_axb_a0004,...]"``, the
        item id, the example name or the file path. Results report it as ``speech``.
    source : str
        For corpus speech, ``"natural:"`` and the locations of the items used
        (``"natural:package"``, ``"natural:package+VOICELAB_DATA"``) or
        ``"synthetic:espeak-ng"``; ``"natural"``/``"synthetic"``/``"signal"`` for examples
        and items, ``"file"``.
    synthetic : bool
        Any synthetic part (eSpeak or a test signal).
    items : tuple of str
        Corpus item ids in the order sent (empty for examples and files).
    talkers : tuple of str
        Their talkers, in the same order.
    """

    samples: np.ndarray
    sample_rate: int
    name: str
    source: str
    synthetic: bool
    items: tuple[str, ...] = ()
    talkers: tuple[str, ...] = ()


def load_speech(scenario: Any = None, /, *, speech: str = "default", input: Any = None,
                max_speech_s: float = 12.0, level_db: float = -26.0, **_ignored: Any) -> SpeechInput:
    """The level-normalised speech a call sends, at 16 kHz (8 kHz for 8 kHz files).

    Parameters
    ----------
    scenario : object, optional
        Anything with ``speech``, ``input``, ``max_speech_s`` and ``level_db``
        attributes (a :class:`voicelab.sim.Scenario`); overrides the keywords.
    speech : str, default "default"
        A speech spec (module docs).
    input : str or os.PathLike, optional
        A WAV file to send instead of ``speech``.
    max_speech_s : float, default 12.0
        Longest stretch used, seconds (1..600).
    level_db : float, default -26.0
        Active speech level (ITU-T P.56, dBov) to normalise to.
    **_ignored
        Other scenario fields (``codec``, ...) are accepted and ignored, so that callers
        may pass what they have.

    Returns
    -------
    SpeechInput
        Cached per (spec or file, size and time, ``VOICELAB_DATA``, length, level) in this
        process; the arrays are read-only.

    Raises
    ------
    ParameterError
        An unknown spec, item or index, or an out-of-range length or level.
    AudioError
        An unreadable file or an unsupported rate.
    """
    if scenario is not None:
        speech = scenario.speech
        input = scenario.input
        max_speech_s = scenario.max_speech_s
        level_db = scenario.level_db
    if not isinstance(speech, str) or not speech:
        raise ParameterError(f"speech must be a name such as 'default', 'espeak' or 'corpus:ID', got {speech!r}")
    for fname, val, lo, hi, unit in (("max_speech_s", max_speech_s, 1.0, 600.0, "s"),
                                     ("level_db", level_db, -60.0, 0.0, "dBov")):
        if isinstance(val, bool) or not isinstance(val, (int, float, np.integer, np.floating)) or not lo <= float(val) <= hi:
            raise ParameterError(f"{fname} must be a number in {lo:g}..{hi:g} {unit}, got {val!r}")
    if input:
        input = os.fspath(input)
        try:
            st = os.stat(input)
            stamp: tuple = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = ()  # read_wav reports the problem
        key: tuple = ("file", str(input), stamp)
    else:
        key = ("named", speech, os.environ.get("VOICELAB_DATA", ""), os.environ.get("XDG_CACHE_HOME", ""))
    return _load_cached(key, input or None, speech, float(max_speech_s), float(level_db))


@functools.lru_cache(maxsize=32)
def _load_cached(key: tuple, input_path: str | None, speech: str, max_s: float, level_db: float) -> SpeechInput:
    items: tuple[str, ...] = ()
    talkers: tuple[str, ...] = ()
    if input_path:
        samples, rate = read_wav(input_path)
        if rate not in SUPPORTED_INPUT_RATES:
            raise AudioError(
                f"{input_path}: sample rate {rate} Hz is not supported; use one of "
                + ", ".join(str(r) for r in SUPPORTED_INPUT_RATES)
            )
        target = 16000 if rate >= 16000 else 8000
        samples = resample(samples, rate, target)
        name, source, synthetic = str(input_path), "file", False
        rate = target
    else:
        samples, rate, name, source, synthetic, items, talkers = _named_speech(speech, max_s)
    limit = int(max_s * rate)
    samples = np.asarray(samples[:limit], dtype=np.float64)
    samples = normalize_level(samples, rate, level_db=level_db)
    samples.setflags(write=False)
    return SpeechInput(samples, rate, name, source, synthetic, items, talkers)


def _named_speech(spec: str, max_s: float):
    rate = 16000
    if spec in ("default", "corpus", "espeak", "synthetic") or spec.startswith("talker:"):
        source = "synthetic" if spec in ("espeak", "synthetic") else "auto"
        listing = corpus_items(sample_rate=rate, source=source)
        if spec.startswith("talker:"):
            who = spec.split(":", 1)[1]
            talkers = list(dict.fromkeys(it.talker for it in listing + corpus_items(sample_rate=rate, source="synthetic")))
            listing = [it for it in listing if it.talker == who]
            if not listing:
                listing = [it for it in corpus_items(sample_rate=rate, source="synthetic") if it.talker == who]
            if not listing:
                raise ParameterError(f"speech {spec!r}: no such talker; known talkers: {', '.join(talkers)}")
            source = "synthetic" if not listing[0].natural else "auto"
        parts: list[np.ndarray] = []
        speeches = []
        total = 0
        for it in interleave_talkers(listing):
            sp = corpus_item(it.id, sample_rate=rate)
            speeches.append(sp)
            parts.extend([np.asarray(sp.samples, dtype=np.float64), np.zeros(int(GAP_S * rate))])
            total += len(sp.samples) + int(GAP_S * rate)
            if total >= max_s * rate:
                break
        ids = tuple(sp.name for sp in speeches)
        head = spec if spec.startswith("talker:") else "espeak" if source == "synthetic" else "default"
        name = f"{head}[{','.join(ids)}]"
        where = {it.id: it.location for it in listing}
        used = [where[i] for i in ids if where.get(i) != "espeak-ng"]
        if any(sp.synthetic for sp in speeches):
            label = "synthetic:espeak-ng"
        else:  # the locations actually used: the same label with or without VOICELAB_DATA for short calls
            label = "natural:" + "+".join(dict.fromkeys(used))
        return (np.concatenate(parts), rate, name, label, any(sp.synthetic for sp in speeches), ids,
                tuple(sp.talker or "" for sp in speeches))
    if spec.startswith("corpus:"):
        ref = spec.split(":", 1)[1]
        if ref.isdigit():
            listing = corpus_items(sample_rate=rate)
            idx = int(ref)
            if idx >= len(listing):
                raise ParameterError(f"speech {spec!r}: use corpus:N with N in 0..{len(listing) - 1}, or corpus:ID")
            ref = listing[idx].id
        sp = corpus_item(ref, sample_rate=rate)
        return (np.asarray(sp.samples, dtype=np.float64), rate, sp.name, sp.source, bool(sp.synthetic),
                (sp.name,), (sp.talker or "",))
    sp = example(spec, sample_rate=rate)
    return np.asarray(sp.samples, dtype=np.float64), sp.sample_rate, sp.name, sp.source, bool(sp.synthetic), (), ()


def interleave_talkers(items: list) -> list:
    """Round-robin over talkers within each location (package, ``VOICELAB_DATA``, cache),
    so that a short stretch of the corpus is not all one voice and the shipped items come
    first. ``items`` are :class:`voicelab.audio.CorpusItem` (or anything with ``talker``
    and ``location``)."""
    out: list = []
    blocks: dict[str, dict[str, list]] = {}
    for it in items:
        blocks.setdefault(getattr(it, "location", ""), {}).setdefault(it.talker, []).append(it)
    for groups in blocks.values():
        queues = [list(q) for q in groups.values()]
        while any(queues):
            for q in queues:
                if q:
                    out.append(q.pop(0))
    return out
