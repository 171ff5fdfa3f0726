"""Audio tracks between aiortc and the lab, paced and stamped on the event loop's clock.

aiortc's ``AudioStreamTrack`` paces itself with ``time.time()`` (``aiortc/mediastreams.py``),
so its frames cannot be lined up with anything else the lab records and would not follow
a virtual clock. These bridge objects use ``loop.time()`` only:

:class:`SourceTrack`
    An aiortc ``MediaStreamTrack`` that plays a numpy signal like a microphone: frame
    ``k`` is captured during ``[t0 + k*frame, t0 + (k+1)*frame)`` and handed to aiortc's
    sender at the end of that interval (the actual hand-over times are recorded, so the
    pacing error is measured). After the signal it keeps delivering silence, as a live
    microphone would, until the track is stopped.
:class:`AudioSink`
    What was played, placed on the loop clock: a frame written at ``when`` starts at
    ``max(when, end of the previous frame)``, with silence in any gap (a sound card with
    no extra buffering). The lab's playout writes at its exact slot times. Frames
    pulled from a plain aiortc track (:func:`record_track`) are played like a device
    that starts with the first frame to come out of aiortc's decoder and then follows
    the frames' media timestamps: lost packets leave silence (aiortc has no PLC), and a
    frame that comes out after its turn is counted as late (it would be an audible
    underrun on a device with no spare buffer) but still placed in its turn, so the
    recording measures aiortc's buffering, not the lab's model of a sound card.

Both expose the recording in the shape :func:`voicelab.calls._direction_metrics` reads
(``sent_audio()`` / ``received_audio()``: samples and the loop time of the first one),
so WebRTC calls are measured by the same code as SIP calls.

This module is an asyncio adapter (aiortc's track interface is a coroutine); it reads no
clock but the loop's.
"""

from __future__ import annotations

import asyncio
import fractions
from typing import Any

import numpy as np

from ..audio import to_float, to_int16
from ..errors import ParameterError

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = ["SourceTrack", "AudioSink", "record_track"]

#: asyncio's selector rounds timeouts up to whole milliseconds, so a timer fires 0-1 ms
#: late; frames are handed over half of that early (as in voicelab.rtp.live).
_EARLY_S = 0.0005


class SourceTrack(MediaStreamTrack):
    """An audio track that plays ``samples`` on the loop clock, from :meth:`start` on.

    Parameters
    ----------
    samples : array_like
        Mono audio: float in [-1, 1] or int16.
    sample_rate : int
        Hz of ``samples`` and of the frames produced.
    frame_ms : float
        Duration of one frame in ms (20 is what every WebRTC codec packs per packet).
    start_at : float, optional
        Loop time at which capture starts; otherwise call :meth:`start`. Until then
        :meth:`recv` waits (aiortc's sender asks as soon as DTLS is up).
    source : callable, optional
        A live source instead of ``samples``: ``source(now)`` (``now`` the loop time, s,
        at which the frame is handed over) returns the next frame as int16 samples
        (``frame_samples`` of them) or None for silence; e.g. a conversation driver's
        ``source``. ``samples`` is then not played.

    Attributes
    ----------
    send_times : list of float
        Loop time at which each frame was handed to the sender.
    send_lateness_s : list of float
        Hand-over time minus scheduled time, per frame (pacing error).

    Examples
    --------
    >>> track = SourceTrack(np.zeros(16000), 16000)            # doctest: +SKIP
    >>> pc.addTrack(track); ...; track.start(loop.time() + 0.05)  # doctest: +SKIP
    """

    kind = "audio"

    def __init__(self, samples: Any, sample_rate: int, *, frame_ms: float = 20.0, start_at: float | None = None,
                 source: Any = None) -> None:
        super().__init__()
        self._source = source
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise ParameterError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
        try:
            frame_ms = float(frame_ms)
        except (TypeError, ValueError):
            raise ParameterError(f"frame_ms must be a number of milliseconds, got {frame_ms!r}") from None
        F = sample_rate * frame_ms / 1000.0
        if not (frame_ms > 0 and abs(F - round(F)) < 1e-9 and F >= 1):
            raise ParameterError(f"frame_ms {frame_ms:g} is not a whole number of samples at {sample_rate} Hz")
        x = np.asarray(samples)
        if x.ndim != 1:
            raise ParameterError(f"samples must be 1-D mono audio, got shape {x.shape}")
        pcm = x.astype(np.int16) if x.dtype == np.int16 else to_int16(np.asarray(x, dtype=np.float64))
        self.sample_rate = int(sample_rate)
        self.frame_ms = frame_ms
        self.frame_samples = int(round(F))
        n = int(np.ceil(len(pcm) / self.frame_samples)) if len(pcm) else 0
        self._pcm = np.zeros(n * self.frame_samples, dtype=np.int16)
        self._pcm[: len(pcm)] = pcm
        self._n_samples = len(pcm)
        self._silence = np.zeros(self.frame_samples, dtype=np.int16)
        self._t0: float | None = None
        self._started = asyncio.Event()
        self._k = 0
        self.send_times: list[float] = []
        self.send_lateness_s: list[float] = []
        if start_at is not None:
            self.start(start_at)

    def start(self, at: float | None = None) -> float:
        """Start capture at loop time ``at`` (default: now); returns ``t0``.

        Raises
        ------
        ParameterError
            The track was already started.
        """
        if self._t0 is not None:
            raise ParameterError("SourceTrack.start() was already called")
        self._t0 = float(at) if at is not None else asyncio.get_running_loop().time()
        self._started.set()
        return self._t0

    @property
    def t0(self) -> float | None:
        """Loop time of the first captured sample (None before :meth:`start`)."""
        return self._t0

    @property
    def duration_s(self) -> float:
        """Length of the signal in seconds (without the trailing silence)."""
        return self._n_samples / self.sample_rate

    @property
    def frames_sent(self) -> int:
        """Frames handed to the sender so far (signal and silence)."""
        return self._k

    async def recv(self) -> Any:
        """The next ``av.AudioFrame`` (s16 mono), at the end of its capture interval."""
        import av

        if self.readyState != "live":
            raise MediaStreamError
        await self._started.wait()
        loop = asyncio.get_running_loop()
        k = self._k
        when = self._t0 + (k + 1) * self.frame_samples / self.sample_rate  # type: ignore[operator]
        delay = when - _EARLY_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if self.readyState != "live":
            raise MediaStreamError
        now = loop.time()
        self.send_times.append(now)
        self.send_lateness_s.append(now - when)
        F = self.frame_samples
        if self._source is not None:
            chunk = self._source(now)
            chunk = self._silence if chunk is None else chunk
        else:
            chunk = self._pcm[k * F : (k + 1) * F] if (k + 1) * F <= len(self._pcm) else self._silence
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = k * F
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        self._k += 1
        return frame

    def sent_audio(self) -> tuple[np.ndarray, float]:
        """(float samples of the signal, loop time of the first one)."""
        return to_float(self._pcm[: self._n_samples]), (self._t0 if self._t0 is not None else 0.0)

    def pacing_error_ms(self, q: float = 99.0) -> float:
        """Percentile ``q`` of the absolute hand-over error in ms (0 before any frame)."""
        if not self.send_lateness_s:
            return 0.0
        return float(np.percentile(np.abs(self.send_lateness_s), q) * 1000.0)


class AudioSink:
    """A recording of played audio on the loop clock.

    Parameters
    ----------
    sample_rate : int
        Hz of the frames written.
    on_played : callable, optional
        ``on_played(frame, start)`` after each frame is written: the int16 frame and the
        loop time (s) it starts playing (e.g. a conversation driver listening at the ear).

    Attributes
    ----------
    underruns : int
        Frames written after the previous one had finished playing (a gap of silence
        was inserted).
    late_frames : int
        Frames whose ``arrival`` (see :meth:`write`) was after their start time.
    max_late_ms : float
        Largest such lateness in ms.
    """

    def __init__(self, sample_rate: int, *, on_played: Any = None) -> None:
        self.on_played = on_played
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise ParameterError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
        self.sample_rate = int(sample_rate)
        self._chunks: list[np.ndarray] = []
        self._t_first: float | None = None
        self._n = 0  # samples written so far (including inserted gaps)
        self.underruns = 0
        self.late_frames = 0
        self.max_late_ms = 0.0
        self._waiters: list[tuple[float, asyncio.Future]] = []

    @property
    def end_time(self) -> float | None:
        """Loop time at which the last written sample finishes playing."""
        if self._t_first is None:
            return None
        return self._t_first + self._n / self.sample_rate

    def write(self, frame: np.ndarray, when: float, *, arrival: float | None = None) -> float:
        """Play ``frame`` (int16) from loop time ``when`` or right after the previous frame.

        Parameters
        ----------
        frame : numpy.ndarray of int16
        when : float
            Loop time at which the frame should start playing.
        arrival : float, optional
            Loop time at which the frame became available; a frame available after its
            start time is counted in :attr:`late_frames`.

        Returns
        -------
        float
            Loop time at which the frame starts.
        """
        frame = np.asarray(frame, dtype=np.int16).reshape(-1)
        if self._t_first is None:
            self._t_first = float(when)
            start = self._t_first
        else:
            end = self.end_time
            gap = int(round((when - end) * self.sample_rate))  # type: ignore[operator]
            if gap > 0:  # late: silence until it arrives
                self._chunks.append(np.zeros(gap, dtype=np.int16))
                self._n += gap
                self.underruns += 1
            start = self.end_time  # type: ignore[assignment]
        if arrival is not None and arrival > start + 1e-4:
            self.late_frames += 1
            self.max_late_ms = max(self.max_late_ms, (arrival - start) * 1000.0)
        self._chunks.append(frame)
        self._n += len(frame)
        end = self.end_time
        if self._waiters:
            for t, fut in [w for w in self._waiters if w[0] <= end]:  # type: ignore[operator]
                if not fut.done():
                    fut.set_result(end)
            self._waiters = [w for w in self._waiters if w[0] > end]  # type: ignore[operator]
        if self.on_played is not None:
            self.on_played(frame, start)
        return start  # type: ignore[return-value]

    def received_audio(self) -> tuple[np.ndarray, float]:
        """(float samples played, loop time of the first one); empty before any frame."""
        if not self._chunks:
            return np.zeros(0), 0.0
        return to_float(np.concatenate(self._chunks)), float(self._t_first)  # type: ignore[arg-type]

    def played_through(self, t: float) -> asyncio.Future:
        """A future resolved once audio up to loop time ``t`` has been played."""
        fut = asyncio.get_running_loop().create_future()
        end = self.end_time
        if end is not None and end >= t:
            fut.set_result(end)
        else:
            self._waiters.append((float(t), fut))
        return fut


def _to_sink_rate(frame: Any, sample_rate: int, state: dict) -> np.ndarray:
    from .peer import _frame_to_mono_int16

    if frame.format.name in ("s16", "s16p") and frame.sample_rate == sample_rate:
        return _frame_to_mono_int16(frame)
    if "resampler" not in state:
        import av

        state["resampler"] = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    parts = [_frame_to_mono_int16(f) for f in state["resampler"].resample(frame)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def record_track(track: Any, sink: AudioSink) -> asyncio.Task:
    """Play an aiortc track into ``sink``: from the first frame's arrival, at media pace.

    For ``mode="aiortc-defaults"``, where aiortc's own jitter buffer and decoder feed the
    receiver's track. Frames are converted to mono at the sink's rate and placed by
    their media timestamps (``pts``) relative to the first frame, which plays when it
    arrives (see the module docstring); late frames are counted by the sink.

    Returns
    -------
    asyncio.Task
        Ends when the track ends; cancel it to stop earlier.
    """
    loop = asyncio.get_running_loop()

    async def run() -> None:
        state: dict = {}
        anchor: tuple[float, float] | None = None  # (loop time, media time) of the first frame
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = loop.time()
            pcm = _to_sink_rate(frame, sink.sample_rate, state)
            if not len(pcm):
                continue
            if frame.pts is None or frame.time_base is None:
                sink.write(pcm, now, arrival=now)
                continue
            media_t = float(frame.pts * frame.time_base)
            if anchor is None:
                anchor = (now, media_t)
            sink.write(pcm, anchor[0] + (media_t - anchor[1]), arrival=now)

    return loop.create_task(run())
