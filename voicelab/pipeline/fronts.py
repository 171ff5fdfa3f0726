"""Joining a :class:`~voicelab.pipeline.Pipeline` to the media of each front.

The pipeline does not know the transport: a front feeds it the caller's frames as they
arrive (in sequence order, a small reorder window; no playout buffer before recognition)
and sends what it returns at each send tick. These helpers do that for the lab's RTP
stream (SIP calls), the WebSocket media-stream agent and the WebRTC agent's track, so
the same pipeline class answers all three.
"""

from __future__ import annotations

from typing import Any

from .core import Pipeline, PipelineConfig

__all__ = ["attach_rtp", "PipelineRegistry"]


def attach_rtp(stream: Any, config: PipelineConfig, *, clock: Any = None, seed: int | None = None) -> Pipeline:
    """Run a pipeline on an open :class:`voicelab.rtp.live.LiveAudioStream`.

    The stream's frames feed the pipeline as they arrive (:meth:`~voicelab.rtp.live.LiveAudioStream.tap_arrivals`:
    sequence order, a two-packet reorder window, gaps concealed; the playout buffer is only
    for the agent's recording); its send clock asks the pipeline for each frame (silence
    when it has nothing to say). Returns the pipeline.
    """
    pipe = config.build(stream.rx.sample_rate, clock=clock, seed=seed)
    if pipe.frame_samples != stream.tx.frame_samples:
        from ..errors import ParameterError

        raise ParameterError(f"the pipeline runs on 20 ms frames; this codec sends {stream.tx.frame_ms} ms")
    from ..rtp.tap import feed_on_arrival

    stream.tap_arrivals(feed_on_arrival(pipe))  # as the frames arrive: no playout buffer before recognition
    stream.send_live("source", source=pipe.next_frame)
    return pipe


class PipelineRegistry:
    """The pipelines of an agent's calls: live ones by call key, finished summaries kept (bounded)."""

    def __init__(self, keep: int = 64) -> None:
        from collections import OrderedDict

        self.live: dict[Any, Pipeline] = {}
        self.finished: "OrderedDict[Any, dict]" = OrderedDict()
        self.keep = int(keep)
        self.errors: list[str] = []

    def add(self, key: Any, pipe: Pipeline) -> Pipeline:
        self.live[key] = pipe
        return pipe

    def close(self, key: Any, now: float, reason: str = "caller_hung_up") -> dict | None:
        pipe = self.live.pop(key, None)
        if pipe is None:
            return None
        pipe.close(now, reason)
        summary = pipe.summary()
        summary["events"] = [(e.name, e.t, e.turn, e.data) for e in pipe.events]
        self.finished[key] = summary
        while len(self.finished) > self.keep:
            self.finished.popitem(last=False)
        return summary


def webrtc_media(sample_rate: int, frame_samples: int, pipe: Pipeline, *, on_stop: Any = None) -> tuple[Any, Any]:
    """(aiortc track, playout sink) that run ``pipe`` behind the WebRTC agent.

    The pipeline hears the caller's packets as they arrive: the sink asks the lab's
    receiver for an arrival tap (:class:`~voicelab.webrtc.peer.LabPlayout` ``tap_codec``:
    its own decoder, sequence order, a two-packet reorder window), as on the SIP and
    WebSocket fronts. The playout still records what was played and paces the track: it
    hands aiortc one frame per played frame (as the echo track does), each being
    ``pipe.next_frame(now)`` or silence. ``on_stop(now)`` runs when the track stops.
    """
    import asyncio

    import numpy as np

    from ..rtp.tap import feed_on_arrival
    from ..webrtc.agent import EchoTrack, _EchoSink

    class PipelineTrack(EchoTrack):
        def feed(self, frame: np.ndarray, when: float) -> None:
            super().feed(np.zeros(0, dtype=np.int16), when)  # a slot to send in

        asked_at: list = []  # loop time of each frame asked of the pipeline (per instance below)

        def _next_chunk(self, now: float) -> np.ndarray:
            self._queue.popleft()  # the slot; the audio is the pipeline's
            if len(self.asked_at) < 1_000_000:
                self.asked_at.append(now)
            out = pipe.next_frame(now)
            return out if out is not None else np.zeros(self.frame_samples, dtype=np.int16)

        def stop(self) -> None:
            if self.readyState == "live" and on_stop is not None:
                on_stop(asyncio.get_event_loop().time())
            super().stop()

    class PipelineSink(_EchoSink):
        def __init__(self, rate: int, track: Any) -> None:
            super().__init__(rate, track)
            self.on_tapped = feed_on_arrival(pipe, active=lambda: track.readyState == "live")

    track = PipelineTrack(sample_rate, frame_samples)
    track.asked_at = []
    return track, PipelineSink(sample_rate, track)
