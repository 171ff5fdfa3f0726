"""Speech synthesis for the agent's reply: eSpeak NG, one clause at a time.

The reply text arrives as tokens; each complete clause (ending in ``, . ; : ! ?``, or the
end of the reply) is synthesised as soon as its last token is there, so the first audio
leaves before the whole reply is written or synthesised (what streaming TTS services do
with sentence aggregation, e.g. Pipecat's text aggregators). eSpeak's leading silence is
trimmed so the first frame of the reply carries sound.
"""

from __future__ import annotations

import re

import numpy as np

from ..audio.espeak import synthesize

__all__ = ["EspeakTts", "ThreadedTts", "split_clauses", "CLAUSE_END"]

CLAUSE_END = re.compile(r"[,.;:!?]\s*$")


def split_clauses(pieces: list[str]) -> tuple[list[str], list[str]]:
    """Complete clauses from the front of ``pieces`` (text tokens) and the remainder."""
    clauses, cur = [], []
    for p in pieces:
        cur.append(p)
        if CLAUSE_END.search(p):
            clauses.append("".join(cur).strip())
            cur = []
    return clauses, cur


class EspeakTts:
    """eSpeak NG clause synthesis to int16 at ``sample_rate``.

    Parameters
    ----------
    sample_rate : int
    voice : str
    rate_wpm : int
    trim_threshold : float
        Leading samples below this absolute level (full scale 1) are dropped.
    """

    def __init__(self, sample_rate: int = 16000, *, voice: str = "en-us", rate_wpm: int = 170,
                 trim_threshold: float = 0.01) -> None:  # fmt: skip
        self.sample_rate, self.voice, self.rate_wpm, self.trim = int(sample_rate), voice, int(rate_wpm), float(trim_threshold)

    def synthesize(self, text: str, *, first: bool) -> np.ndarray:
        """int16 audio of one clause; the first clause of a reply starts at its first sound."""
        x = synthesize(text, voice=self.voice, sample_rate=self.sample_rate, rate_wpm=self.rate_wpm)
        if first:
            idx = np.flatnonzero(np.abs(x) >= self.trim)
            x = x[int(idx[0]):] if len(idx) else x
        return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


_EXECUTOR = None  # one synthesis thread per process (eSpeak NG's engine is one, behind a lock)


def _executor():
    global _EXECUTOR
    if _EXECUTOR is None:
        from concurrent.futures import ThreadPoolExecutor

        _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicelab-tts")
    return _EXECUTOR


class ThreadedTts:
    """A TTS (:class:`EspeakTts`) whose clauses are synthesised off the event loop, in order.

    eSpeak NG runs through ``ctypes``, which releases the GIL for the duration of the
    foreign call (it takes it back only for the short sample-collecting callback), so one
    synthesis thread keeps the loop's timers on time (inline, a clause held the loop for
    its whole synthesis: 10-60 ms each). One thread for the process: the engine is a
    single one behind a lock anyway, so clauses of concurrent calls queue there.

    Parameters
    ----------
    tts : EspeakTts
    clock : callable
        The loop clock (``loop.time``, :func:`time.monotonic` on a real-time loop: safe to
        read from the thread), read when a clause is done.

    :meth:`synthesize_async` returns a :class:`concurrent.futures.Future` of
    ``(int16 audio, done_at)``; :meth:`synthesize` is the inline call.
    """

    def __init__(self, tts: EspeakTts, *, clock) -> None:
        self.tts, self.clock = tts, clock

    @property
    def sample_rate(self) -> int:
        return self.tts.sample_rate

    def synthesize(self, text: str, *, first: bool) -> np.ndarray:
        return self.tts.synthesize(text, first=first)

    def synthesize_async(self, text: str, *, first: bool):
        def job():
            pcm = self.tts.synthesize(text, first=first)
            return pcm, self.clock()

        return _executor().submit(job)
