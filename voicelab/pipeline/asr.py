"""Speech recognition with PocketSphinx: streaming partial hypotheses and a final one.

PocketSphinx 5 (``pocketsphinx`` wheel, BSD) ships its US English acoustic model,
language model and dictionary inside the wheel, so recognition works offline with no
download. It is a small, old (HMM/GMM) recogniser: its word error rate on read speech is
far above a modern neural ASR's, which is fine for the lab's question (does the
transport or codec change what the agent understands? -- compare against the same
recogniser on the unprocessed audio).

Input: 16-bit PCM at 16 kHz (other rates are resampled with a streaming soxr resampler).
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError, ToolUnavailableError

__all__ = ["Recognizer", "PocketSphinxRecognizer", "ThreadedRecognizer", "transcribe"]


class Recognizer:
    """Interface: ``start()``, ``feed(pcm)``, ``partial() -> str``, ``final() -> str``."""

    def start(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def feed(self, pcm: np.ndarray) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def partial(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def final(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


def _decoder():
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise ToolUnavailableError("speech recognition needs the Python package pocketsphinx") from None
    # no second (flat-lexicon) pass: it cost ~0.4 s at each end of utterance here for
    # no WER gain on the ARCTIC items (docs/agent-turn.md)
    return Decoder(loglevel="FATAL", fwdflat=False)


class PocketSphinxRecognizer(Recognizer):
    """PocketSphinx with its bundled en-us model, one utterance at a time.

    Parameters
    ----------
    sample_rate : int
        Rate of the int16 audio given to :meth:`feed` (resampled to 16 kHz when not 16000).
    """

    def __init__(self, sample_rate: int = 16000) -> None:
        if sample_rate not in (8000, 16000, 24000, 48000):
            raise ParameterError(f"recogniser input rate must be 8000, 16000, 24000 or 48000 Hz, got {sample_rate!r}")
        self.sample_rate = int(sample_rate)
        self._dec = _decoder()
        self._rs = None
        self._active = False
        self.samples_fed = 0

    def start(self) -> None:
        if self._active:
            self._dec.end_utt()
        if self.sample_rate != 16000:
            import soxr

            self._rs = soxr.ResampleStream(self.sample_rate, 16000, 1, dtype="int16", quality="HQ")
        self._dec.start_utt()
        self._active = True
        self.samples_fed = 0

    def feed(self, pcm: np.ndarray) -> None:
        if not self._active:
            self.start()
        x = np.asarray(pcm, dtype=np.int16)
        if self._rs is not None:
            x = self._rs.resample_chunk(x)
        if len(x):
            self._dec.process_raw(np.ascontiguousarray(x).tobytes(), False, False)
            self.samples_fed += len(x)

    def partial(self) -> str:
        h = self._dec.hyp() if self._active else None
        return h.hypstr if h is not None else ""

    def final(self) -> str:
        if not self._active:
            return ""
        if self._rs is not None:
            tail = self._rs.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            if len(tail):
                self._dec.process_raw(np.ascontiguousarray(tail).tobytes(), False, False)
        self._dec.end_utt()
        self._active = False
        h = self._dec.hyp()
        return h.hypstr if h is not None else ""


def transcribe(samples: np.ndarray, sample_rate: int) -> str:
    """Recognise a whole utterance (float or int16 audio) in one go; returns the text."""
    x = np.asarray(samples)
    if x.dtype != np.int16:
        x = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    r = PocketSphinxRecognizer(sample_rate)
    r.start()
    step = sample_rate // 50
    for i in range(0, len(x), step):
        r.feed(x[i : i + step])
    return r.final()


class ThreadedRecognizer(Recognizer):
    """Another recogniser run in a worker thread of its own (one per call), in order.

    On a real-time loop PocketSphinx's decoding (a few ms per 20 ms frame, tens to hundreds
    of ms at the end of an utterance) would hold the loop, and with it every timer of the
    call: the agent's send clock and, when caller and agent share a process, the caller's.
    Here ``feed`` only queues the frame; the worker decodes. ``partial()`` returns the
    latest partial hypothesis the worker has made (and asks for a fresh one);
    :meth:`final_async` returns a future of ``(text, done_at)``, ``done_at`` read from
    ``clock`` (the loop's time) when the worker finished, so the recogniser's real time
    still shows in the turn's ``asr_final``.

    Under the virtual clock use the recogniser directly (inline: deterministic, and
    computing takes no virtual time).
    """

    def __init__(self, inner: Recognizer, *, clock) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.inner, self.clock = inner, clock
        self._ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicelab-asr")
        self._partial = ""
        self._closed = False

    def _submit(self, fn, *args):
        if self._closed:
            return None
        try:
            return self._ex.submit(fn, *args)
        except RuntimeError:  # shut down meanwhile
            return None

    def start(self) -> None:
        self._partial = ""
        self._submit(self.inner.start)

    def feed(self, pcm: np.ndarray) -> None:
        self._submit(self.inner.feed, np.array(pcm, dtype=np.int16, copy=True))

    def _refresh(self) -> None:
        self._partial = self.inner.partial()

    def partial(self) -> str:
        self._submit(self._refresh)
        return self._partial

    def _final(self) -> tuple[str, float]:
        text = self.inner.final()
        return text, self.clock()

    def final_async(self):
        """A :class:`concurrent.futures.Future` of ``(text, done_at)``."""
        fut = self._submit(self._final)
        if fut is None:
            from concurrent.futures import Future

            fut = Future()
            fut.set_result(("", self.clock()))
        return fut

    def final(self) -> str:
        return self.final_async().result()[0]

    def close(self) -> None:
        """Stop the worker (queued work is dropped; a decode in progress finishes)."""
        self._closed = True
        self._ex.shutdown(wait=False, cancel_futures=True)
