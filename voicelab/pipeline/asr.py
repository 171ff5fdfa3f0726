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

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError, ToolUnavailableError

__all__ = ["Recognizer", "PocketSphinxRecognizer", "ProcessRecognizer", "transcribe", "narrowband_transform",
           "NARROWBAND_DIR", "fold"]  # fmt: skip

#: The shipped narrowband MLLR transforms (``en-us-pcmu-<upsample>.mllr``, made by
#: ``tools/asr_adapt.py``; see its README there).
NARROWBAND_DIR = Path(__file__).resolve().parents[1] / "data" / "asr"


def fold(pcm8k: np.ndarray) -> np.ndarray:
    """8 kHz int16 audio to 16 kHz by zero-stuffing (gain 2): the 0-4 kHz band plus its
    mirror image in 4-8 kHz, where the wideband model expects energy (``asr_upsample="fold"``)."""
    x = np.asarray(pcm8k, dtype=np.int16)
    out = np.zeros(2 * len(x), dtype=np.int16)
    out[::2] = np.clip(2 * x.astype(np.int32), -32768, 32767)
    return out


def narrowband_transform(sample_rate: int, upsample: str = "fold", adapt: bool | str = True) -> str | None:
    """The MLLR transform the recogniser uses for audio that arrived at ``sample_rate``.

    PocketSphinx's en-us model is a 16 kHz model; a telephone-band (8 kHz) call reaches it
    upsampled (``upsample``: ``"fold"`` zero-stuffed, ``"soxr"`` band-limited). The
    shipped global MLLR transform for that channel adapts the model's means to it
    (docs/agent-turn.md, "What the agent understood"). Wideband input (16 kHz and up)
    gets none.

    Parameters
    ----------
    sample_rate : int
        The call's audio rate (Hz): only 8000 is narrowband.
    upsample : {"fold", "soxr"}
    adapt : bool or str
        False: no transform; True: the shipped one for ``upsample``; a path: that
        transform file (for experiments), narrowband input only.

    Returns
    -------
    str or None
        The transform's path, or None (no adaptation).
    """
    if adapt is False or adapt is None or int(sample_rate) != 8000:
        return None
    if isinstance(adapt, (str, Path)) and not isinstance(adapt, bool):
        p = Path(adapt)
        if not p.is_file():
            raise ParameterError(f"asr_adapt: no MLLR transform file at {str(p)!r}")
        return str(p)
    if upsample not in ("fold", "soxr"):
        raise ParameterError(f"asr_upsample must be 'soxr' or 'fold', got {upsample!r}")
    return str(NARROWBAND_DIR / f"en-us-pcmu-{upsample}.mllr")


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


def _decoder(mllr: str | None = None):
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise ToolUnavailableError("speech recognition needs the Python package pocketsphinx") from None
    # no second (flat-lexicon) pass: it cost ~0.4 s at each end of utterance here for
    # no WER gain on the ARCTIC items (docs/agent-turn.md)
    if mllr is None:
        return Decoder(loglevel="FATAL", fwdflat=False)
    return Decoder(loglevel="FATAL", fwdflat=False, mllr=str(mllr))


class PocketSphinxRecognizer(Recognizer):
    """PocketSphinx with its bundled en-us model, one utterance at a time.

    Parameters
    ----------
    sample_rate : int
        Rate of the int16 audio given to :meth:`feed` (resampled to 16 kHz when not 16000).
    mllr : str, optional
        An MLLR transform of the model's means (PocketSphinx's ``mllr``), e.g.
        :func:`narrowband_transform`'s for a telephone-band call; None: the model as is.
    """

    def __init__(self, sample_rate: int = 16000, *, mllr: str | None = None) -> None:
        if sample_rate not in (8000, 16000, 24000, 48000):
            raise ParameterError(f"recogniser input rate must be 8000, 16000, 24000 or 48000 Hz, got {sample_rate!r}")
        if mllr is not None and not Path(mllr).is_file():
            raise ParameterError(f"no MLLR transform file at {str(mllr)!r}")
        self.sample_rate = int(sample_rate)
        self.mllr = None if mllr is None else str(mllr)
        self._dec = _decoder(self.mllr)
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


def transcribe(samples: np.ndarray, sample_rate: int, *, mllr: str | None = None) -> str:
    """Recognise a whole utterance (float or int16 audio) in one go; returns the text."""
    x = np.asarray(samples)
    if x.dtype != np.int16:
        x = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    r = PocketSphinxRecognizer(sample_rate, mllr=mllr)
    r.start()
    step = sample_rate // 50
    for i in range(0, len(x), step):
        r.feed(x[i : i + step])
    return r.final()


def _serve(inp, out, mllr: str | None = None) -> None:  # pragma: no cover - runs in the worker process
    """The worker process: a PocketSphinx recogniser driven by framed requests on ``inp``.

    Request: one op byte (``s`` start, ``f`` feed, ``p`` partial, ``F`` final, ``q``
    quit), a 4-byte big-endian length, the payload (feed: int16 PCM at 16 kHz; final: its
    key). Answers on ``out``: one JSON line ``[kind, key, text]``.
    """
    import json
    import struct

    rec = PocketSphinxRecognizer(16000, mllr=mllr)

    def send(kind, key, text):
        out.write((json.dumps([kind, key, text]) + "\n").encode())
        out.flush()

    while True:
        head = inp.read(5)
        if len(head) < 5:
            return
        op, n = head[:1], struct.unpack(">I", head[1:])[0]
        data = inp.read(n) if n else b""
        try:
            if op == b"f":
                rec.feed(np.frombuffer(data, dtype=np.int16))
            elif op == b"s":
                rec.start()
            elif op == b"p":
                send("partial", None, rec.partial())
            elif op == b"F":
                send("final", int(data), rec.final())
            elif op == b"q":
                return
        except Exception as exc:  # noqa: BLE001 - reported to the parent, the worker goes on
            if op == b"F":
                send("error", int(data), f"{type(exc).__name__}: {exc}")


class ProcessRecognizer(Recognizer):
    """PocketSphinx in a worker process of the call's own, fed in order, never blocking the loop.

    PocketSphinx holds Python's GIL while it decodes (measured: a thread decoding
    starved a 1 ms sleeper of 200+ ms), so a thread would not free the event loop; a
    process does. ``feed`` queues the 16 kHz frame (a sender thread writes it to the
    worker's pipe); ``partial()`` returns the latest partial hypothesis the worker sent
    back (and asks for a fresh one); :meth:`final_async` returns a future of ``(text,
    done_at)``, ``done_at`` read from ``clock`` (the loop's time) when the answer came
    back, so the recogniser's real time still shows in the turn's ``asr_final``.
    The worker is a fresh interpreter (``python -m voicelab.pipeline.asr_worker``: no fork of a
    threaded process, no re-import of the caller's main module) that loads the model
    itself, off the loop.

    Under the virtual clock use :class:`PocketSphinxRecognizer` directly (inline:
    deterministic, and computing takes no virtual time). ``mllr``: as for
    :class:`PocketSphinxRecognizer` (the worker loads it).
    """

    def __init__(self, *, clock, mllr: str | None = None) -> None:
        import os
        import queue
        import subprocess
        import sys
        import threading
        try:
            import pocketsphinx  # noqa: F401  (the worker imports it; say so here, in one line)
        except ImportError:
            raise ToolUnavailableError("speech recognition needs the Python package pocketsphinx") from None
        if mllr is not None and not Path(mllr).is_file():
            raise ParameterError(f"no MLLR transform file at {str(mllr)!r}")
        self.clock = clock
        self.mllr = None if mllr is None else str(mllr)
        root = str(Path(__file__).resolve().parents[2])  # the voicelab this process runs
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        argv = [sys.executable, "-m", "voicelab.pipeline.asr_worker", *([self.mllr] if self.mllr else [])]
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        self._q: "queue.SimpleQueue" = queue.SimpleQueue()
        self._futs: dict[int, Any] = {}
        self._n = 0
        self._partial = ""
        self._closed = False
        self._lock = threading.Lock()
        self._sender = threading.Thread(target=self._send_loop, daemon=True, name="voicelab-asr-send")
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name="voicelab-asr-read")
        self._sender.start()
        self._reader.start()

    def _send_loop(self) -> None:
        import struct

        w = self._proc.stdin
        while True:
            msg = self._q.get()
            if msg is None:
                return
            op, data = msg[0], (msg[1] if len(msg) > 1 else b"")
            try:
                w.write(op + struct.pack(">I", len(data)) + data)  # type: ignore[union-attr]
            except (OSError, ValueError):
                return

    def _read_loop(self) -> None:
        import json

        r = self._proc.stdout
        while True:
            try:
                line = r.readline()  # type: ignore[union-attr]
                if not line:
                    break
                kind, key, value = json.loads(line)
            except (OSError, ValueError):
                break
            if kind == "partial":
                self._partial = value
                continue
            with self._lock:
                fut = self._futs.pop(key, None)
            if fut is not None and not fut.done():
                if kind == "final":
                    fut.set_result((value, self.clock()))
                else:
                    fut.set_exception(RuntimeError(value))
        with self._lock:  # the worker is gone: nothing more will be answered
            futs, self._futs = list(self._futs.values()), {}
        for fut in futs:
            if not fut.done():
                fut.set_exception(RuntimeError("the recogniser's worker process ended"))

    def _put(self, msg) -> None:
        if not self._closed:
            self._q.put(msg)

    def start(self) -> None:
        self._partial = ""
        self._put((b"s",))

    def feed(self, pcm: np.ndarray) -> None:
        self._put((b"f", np.ascontiguousarray(pcm, dtype=np.int16).tobytes()))

    def partial(self) -> str:
        self._put((b"p",))
        return self._partial

    def final_async(self):
        """A :class:`concurrent.futures.Future` of ``(text, done_at)``."""
        from concurrent.futures import Future

        fut: Future = Future()
        if self._closed:
            fut.set_result(("", self.clock()))
            return fut
        with self._lock:
            self._n += 1
            self._futs[self._n] = fut
        self._put((b"F", str(self._n).encode()))
        return fut

    def final(self) -> str:
        return self.final_async().result()[0]

    def close(self) -> None:
        """Stop the worker process (queued work is dropped). Does not block: a reaper
        thread waits for the worker to quit (and kills it after 2 s)."""
        import threading

        if self._closed:
            return
        self._closed = True
        self._q.put((b"q",))
        self._q.put(None)
        proc, sender = self._proc, self._sender

        def reap() -> None:
            sender.join(2.0)
            try:
                proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            try:
                proc.wait(2.0)
            except Exception:  # noqa: BLE001 - still decoding: stop it
                proc.kill()
                proc.wait(2.0)
            proc.stdout.close()  # type: ignore[union-attr]

        threading.Thread(target=reap, daemon=True, name="voicelab-asr-reap").start()
