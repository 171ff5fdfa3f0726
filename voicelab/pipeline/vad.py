"""Voice activity detection and endpointing: is the caller talking, and has the caller finished?

Two frame classifiers with one interface (:class:`Vad`: 16-bit PCM at 16 kHz in, speech
probability out) and one endpointer on top of them:

* :class:`WebRtcVad` -- the GMM detector of WebRTC (``webrtcvad-wheels``); 10/20/30 ms
  frames, a yes/no answer per frame, ``aggressiveness`` 0..3.
* :class:`SileroVad` -- Silero VAD v5, the ONNX model that ships inside the
  ``pipecat-ai`` wheel (``pipecat/audio/vad/data/silero_vad.onnx``), run with
  ``onnxruntime`` (no torch). It takes 512-sample windows (32 ms at 16 kHz) with 64
  samples of context and a recurrent state, as Silero's own wrapper feeds it.
* :class:`Endpointer` -- the turn logic every voice agent has: speech starts after
  ``min_speech_ms`` of speech, the utterance ends after ``stop_ms`` of silence (Pipecat's
  ``VADParams.stop_secs``, LiveKit's ``min_endpointing_delay``).

Nothing here reads a clock: times come in as ``now`` (seconds on the loop clock).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError, ToolUnavailableError

__all__ = ["Vad", "WebRtcVad", "SileroVad", "Endpointer", "EndpointEvent", "make_vad", "VADS"]

#: The VAD names ``make_vad`` knows.
VADS = ("webrtc", "silero")


class Vad:
    """Interface: ``probability(pcm16k)`` for one frame of 16 kHz int16 audio -> 0..1."""

    sample_rate = 16000

    def probability(self, pcm: np.ndarray) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the state (a new call)."""


class WebRtcVad(Vad):
    """WebRTC's VAD (``webrtcvad-wheels``) on 20 ms frames.

    Parameters
    ----------
    aggressiveness : int
        0 (least) .. 3 (most aggressive in calling audio non-speech).
    frame_ms : int
        10, 20 or 30: the frame the detector classifies (longer input is split and the
        answers averaged).
    """

    def __init__(self, aggressiveness: int = 2, frame_ms: int = 20) -> None:
        try:
            import webrtcvad
        except ImportError:
            raise ToolUnavailableError("WebRTC VAD needs the Python package webrtcvad-wheels") from None
        if aggressiveness not in (0, 1, 2, 3):
            raise ParameterError(f"aggressiveness must be 0..3, got {aggressiveness!r}")
        if frame_ms not in (10, 20, 30):
            raise ParameterError(f"webrtc VAD frame_ms must be 10, 20 or 30, got {frame_ms!r}")
        self._vad = webrtcvad.Vad(aggressiveness)
        self.frame_samples = 16 * frame_ms
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)
        self._last = 0.0

    def probability(self, pcm: np.ndarray) -> float:
        """Mean vote over the complete frames buffered so far (the last answer when none)."""
        self._pending = np.concatenate([self._pending, np.asarray(pcm, dtype=np.int16)])
        F = self.frame_samples
        n = len(self._pending) // F
        if n:
            votes = [self._vad.is_speech(self._pending[i * F : (i + 1) * F].tobytes(), 16000) for i in range(n)]
            self._pending = self._pending[n * F :]
            self._last = float(np.mean(votes))
        return self._last


def silero_model_path() -> str:
    """Path of the Silero VAD ONNX model shipped in the ``pipecat-ai`` wheel.

    Raises
    ------
    ToolUnavailableError
        ``pipecat-ai`` is not installed (use ``--vad webrtc`` instead).
    """
    import importlib.resources

    try:
        p = importlib.resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")
    except (ImportError, ModuleNotFoundError):
        raise ToolUnavailableError(
            "Silero VAD uses the ONNX model shipped in the Python package pipecat-ai, which is not "
            "installed: pip install pipecat-ai, or use the WebRTC VAD (--vad webrtc)") from None
    if not p.is_file():
        raise ToolUnavailableError("the installed pipecat-ai has no silero_vad.onnx; use --vad webrtc")
    return str(p)


class SileroVad(Vad):
    """Silero VAD v5 via onnxruntime, with the model from the ``pipecat-ai`` wheel.

    Frames of any length are buffered into 512-sample windows; ``probability`` returns
    the last window's speech probability (the previous answer while a window fills).
    """

    WINDOW = 512
    CONTEXT = 64

    def __init__(self, model_path: str | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ToolUnavailableError("Silero VAD needs the Python package onnxruntime; or use --vad webrtc") from None
        path = model_path or silero_model_path()
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self._sr = np.array(16000, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, self.CONTEXT), dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._last = 0.0

    def probability(self, pcm: np.ndarray) -> float:
        x = np.asarray(pcm, dtype=np.float32) / 32768.0
        self._pending = np.concatenate([self._pending, x])
        while len(self._pending) >= self.WINDOW:
            w = self._pending[: self.WINDOW][None, :]
            self._pending = self._pending[self.WINDOW :]
            inp = np.concatenate([self._context, w], axis=1)
            out, self._state = self._session.run(None, {"input": inp, "state": self._state, "sr": self._sr})
            self._context = inp[:, -self.CONTEXT :]
            self._last = float(out[0, 0])
        return self._last


def make_vad(name: str) -> Vad:
    """A VAD by name (``"webrtc"`` or ``"silero"``)."""
    if not isinstance(name, str) or name.lower() not in VADS:
        raise ParameterError(f"vad must be one of {', '.join(VADS)}, got {name!r}")
    return WebRtcVad() if name.lower() == "webrtc" else SileroVad()


@dataclass(frozen=True)
class EndpointEvent:
    """``kind`` ("speech_start" / "speech_end") at loop time ``t``; ``speech_from`` is
    when the speech began (the first speech frame's start), ``last_speech`` the end of the
    last frame judged speech."""

    kind: str
    t: float
    speech_from: float
    last_speech: float


class Endpointer:
    """Speech start / end-of-utterance decisions from per-frame speech probabilities.

    Parameters
    ----------
    threshold : float
        A frame is speech when its probability is at least this (0.5, Silero's default).
    min_speech_ms : float
        Speech must last this long before ``speech_start`` (filters clicks).
    stop_ms : float
        Silence after speech that ends the utterance (``speech_end``).
    """

    def __init__(self, *, threshold: float = 0.5, min_speech_ms: float = 100.0, stop_ms: float = 300.0) -> None:
        for name, v in (("min_speech_ms", min_speech_ms), ("stop_ms", stop_ms)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 10000:
                raise ParameterError(f"{name} must be a number of ms in 0..10000, got {v!r}")
        if not 0.0 < float(threshold) < 1.0:
            raise ParameterError(f"threshold must be in (0, 1), got {threshold!r}")
        self.threshold, self.min_speech_ms, self.stop_ms = float(threshold), float(min_speech_ms), float(stop_ms)
        self.reset()

    def reset(self) -> None:
        self.in_speech = False
        self._run_from: float | None = None  # start of the current run of speech frames
        self._last_speech: float | None = None  # end of the last speech frame

    def update(self, p: float, now: float, frame_s: float) -> EndpointEvent | None:
        """One frame that started at ``now`` and lasts ``frame_s`` s, with speech probability ``p``."""
        speech = p >= self.threshold
        if not self.in_speech:
            if speech:
                if self._run_from is None:
                    self._run_from = now
                if now + frame_s - self._run_from >= self.min_speech_ms / 1000.0 - 1e-9:
                    self.in_speech = True
                    self._last_speech = now + frame_s
                    return EndpointEvent("speech_start", now + frame_s, self._run_from, self._last_speech)
            else:
                self._run_from = None
            return None
        if speech:
            self._last_speech = now + frame_s
            return None
        if now + frame_s - self._last_speech >= self.stop_ms / 1000.0 - 1e-9:  # type: ignore[operator]
            ev = EndpointEvent("speech_end", now + frame_s, self._run_from, self._last_speech)  # type: ignore[arg-type]
            self.reset()
            return ev
        return None
