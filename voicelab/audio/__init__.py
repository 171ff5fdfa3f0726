"""Audio for the lab: WAV I/O, resampling, levels, test signals, delay/alignment, speech corpus.

Conventions: audio is a 1-D ``float64`` numpy array (mono), full scale +/-1.0; 16-bit
integers map to it by ``x / 32768`` (:func:`to_float`, :func:`to_int16`). Levels are
in dBov, dB relative to an RMS of 1.0 (a full-scale sine is -3.01 dBov); speech levels
are P.56 active levels (:func:`active_level_db`).

>>> from voicelab.audio import example, estimate_delay
>>> speech = example("css", sample_rate=16000)
>>> speech.source
'signal'
"""

from __future__ import annotations

from .corpus import (
    EXAMPLE_NAMES,
    SYNTHETIC_WARNING,
    CorpusItem,
    Speech,
    cache_dir,
    corpus,
    corpus_item,
    corpus_items,
    corpus_source,
    data_dir,
    example,
    fetch_corpus,
    load_manifest,
    shipped_dir,
)
from .delay import DelayEstimate, align, compensate, estimate_delay
from .espeak import HARVARD_LIST_1, VOICES, synthesize
from .io import read_wav, to_float, to_int16, write_wav
from .level import active_level_db, normalize_level, speech_activity
from .resample import StreamResampler, resample
from .signals import chirp, click_train, composite_source_signal, silence, tone
from .speechinput import SpeechInput, load_speech

__all__ = [
    # io
    "read_wav",
    "write_wav",
    "to_int16",
    "to_float",
    "resample",
    "StreamResampler",
    # levels
    "active_level_db",
    "speech_activity",
    "normalize_level",
    # signals
    "tone",
    "silence",
    "chirp",
    "click_train",
    "composite_source_signal",
    # delay
    "DelayEstimate",
    "estimate_delay",
    "align",
    "compensate",
    # speech
    "Speech",
    "example",
    "corpus",
    "corpus_source",
    "corpus_items",
    "corpus_item",
    "CorpusItem",
    "shipped_dir",
    "load_speech",
    "SpeechInput",
    "fetch_corpus",
    "data_dir",
    "cache_dir",
    "load_manifest",
    "synthesize",
    "HARVARD_LIST_1",
    "VOICES",
    "SYNTHETIC_WARNING",
    "EXAMPLE_NAMES",
]
