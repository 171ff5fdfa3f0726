"""The caller's frames as they arrive: in sequence order, with a small reorder window.

A voice agent does not need a playout buffer to *recognise* speech: it needs the frames
in order, as soon as they arrive, with gaps marked. :class:`ArrivalTap` is that: sans-IO
(packets and ``now`` in, decoded frames out), it decodes each packet when it is the next
in sequence, holds at most ``window`` later packets while waiting for a missing one, and
then conceals the gap with the codec's PLC (or silence) and goes on. A packet that comes
after its gap was concealed is dropped (``late``), as a duplicate is.

The playout buffer the agent runs for its recordings stays as it is; the tap is a second
reader of the same packets (production agents do the same: Pipecat's transports push
input audio frames to the VAD as they are read from the socket).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ParameterError

__all__ = ["ArrivalTap", "TapFrame", "feed_on_arrival"]


@dataclass(frozen=True)
class TapFrame:
    """One frame out of the tap: int16 ``pcm`` (``frame_samples`` long) released at ``t``.

    ``seq`` is the RTP sequence number it was decoded from (None: concealed), ``kind``
    ``"frame"`` or ``"concealed"``, ``arrival`` the packet's arrival time (None: concealed).
    """

    pcm: np.ndarray
    t: float
    seq: int | None
    kind: str
    arrival: float | None


@dataclass
class TapStats:
    """Counters: frames released, concealed, late or duplicate packets dropped, resyncs."""

    frames: int = 0
    concealed: int = 0
    late: int = 0
    duplicates: int = 0
    resyncs: int = 0
    max_wait_s: float = 0.0
    waits: list = field(default_factory=list)


class ArrivalTap:
    """Decode packets in sequence order as they arrive (reorder window of ``window`` packets).

    Parameters
    ----------
    codec : voicelab.codecs.Codec
        A decoder of its own (its state advances; not the playout's).
    window : int
        How many later packets may wait for a missing one before it is concealed
        (2: at most about 40 ms of waiting at 20 ms packets).
    plc : bool
        Conceal a gap with the codec's PLC (else silence).
    max_gap : int
        A jump of more than this many packets is a resync (the sender restarted), not a
        loss: nothing is concealed.
    """

    def __init__(self, codec, *, window: int = 2, plc: bool = True, max_gap: int = 50) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= 50:
            raise ParameterError(f"reorder window must be an int in 0..50 packets, got {window!r}")
        self.codec = codec
        self.frame_samples = int(codec.frame_samples)
        self.window, self.plc, self.max_gap = window, bool(plc), int(max_gap)
        self.stats = TapStats()
        self._next: int | None = None  # next sequence number to release
        self._held: dict[int, tuple[bytes, float]] = {}  # seq -> (payload, arrival)
        self._pcm = np.zeros(0, dtype=np.int16)  # decoded samples not yet cut into a frame
        self._last_seq: int | None = None

    def push(self, seq: int, payload: bytes, now: float) -> list[TapFrame]:
        """One RTP packet (sequence number ``seq``) arrived at ``now``: the frames it releases."""
        seq &= 0xFFFF
        if self._next is None:
            self._next = seq
        d = (seq - self._next) & 0xFFFF
        if d >= 0x8000:  # before the next one: its slot was already released (or concealed)
            self.stats.late += 1
            return []
        if seq in self._held:
            self.stats.duplicates += 1
            return []
        if d > self.max_gap:  # the sender jumped: start again from here
            self.stats.resyncs += 1
            self._held.clear()
            self._next, d = seq, 0
        self._held[seq] = (bytes(payload), now)
        out: list[TapFrame] = []
        while True:
            if self._next in self._held:
                pl, arr = self._held.pop(self._next)
                self._emit(self.codec.decode(pl), now, self._next, "frame", arr, out)
            elif len(self._held) > self.window:  # waited long enough: the gap is a loss
                pcm = self.codec.conceal() if self.plc else np.zeros(self.frame_samples, dtype=np.int16)
                self._emit(pcm, now, None, "concealed", None, out)
            else:
                break
            self._next = (self._next + 1) & 0xFFFF
        return out

    def _emit(self, pcm, now: float, seq: int | None, kind: str, arrival: float | None, out: list) -> None:
        x = np.asarray(pcm, dtype=np.int16)
        F = self.frame_samples
        if len(x) == F and not len(self._pcm):
            frames = [x]
        else:  # another packet time: cut the samples into our frames
            self._pcm = np.concatenate([self._pcm, x])
            n = len(self._pcm) // F
            frames = [self._pcm[i * F : (i + 1) * F] for i in range(n)]
            self._pcm = self._pcm[n * F :]
        for f in frames:
            out.append(TapFrame(f, now, seq, kind, arrival))
            self.stats.frames += 1
            if kind == "concealed":
                self.stats.concealed += 1
        if arrival is not None:
            w = now - arrival
            self.stats.max_wait_s = max(self.stats.max_wait_s, w)
            if len(self.stats.waits) < 100_000:
                self.stats.waits.append(w)


def feed_on_arrival(listener, *, active=None):
    """An ``on_frames`` callback for ``tap_arrivals`` that feeds ``listener.feed(frame, start)``.

    ``listener`` is a voice agent's pipeline (``feed(frame, now)`` where ``now`` is the
    frame's start; ``frame_s`` its length). A frame released at ``t`` has all its samples
    at ``t``, so it is given the start ``t - frame_s``; the frames one arrival releases
    together (a gap concealed, a burst after a stall) are laid end to end so that the
    last ends at ``t`` (never before the previous frame's start: times do not go back).
    ``active()`` False: frames are dropped (the stream stopped).
    """
    frame_s = float(listener.frame_s)
    last = [float("-inf")]

    def on_frames(frames: list) -> None:
        if active is not None and not active():
            return
        k = len(frames)
        for i, f in enumerate(frames):
            start = max(f.t - (k - i) * frame_s, last[0])
            last[0] = start
            listener.feed(f.pcm, start)

    return on_frames
