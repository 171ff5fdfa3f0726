"""A real third-party voice agent as the far end: a Pipecat bot (endpoint layer).

Pipecat (``pipecat-ai``, BSD-2, the optional extra ``voicelab[agents]``) is the framework
many voice-agent teams deploy. The bot built here is a plain Pipecat pipeline, run by
Pipecat's own :class:`~pipecat.pipeline.worker.PipelineWorker` and
:class:`~pipecat.workers.runner.WorkerRunner` (1.14's names for ``PipelineTask`` and
``PipelineRunner``, which are deprecated aliases since 1.3)::

    transport.input()
      -> VADProcessor(SileroVADAnalyzer)        Pipecat's own Silero VAD (ONNX, in the wheel)
      -> PocketSphinxSTTService                 a SegmentedSTTService: the lab's PocketSphinx
      -> ScriptedLLMProcessor                   the lab's scripted replies as LLMTextFrames
      -> EspeakTTSService                       a TTSService: the lab's eSpeak NG, per sentence
      -> transport.output()

with two transports, both Pipecat's own:

``ws``
    :class:`~pipecat.transports.websocket.server.SingleClientWebsocketServerTransport`
    (the ``websockets`` server; FastAPI/uvicorn are not installed, so not Pipecat's
    ``FastAPIWebsocketTransport``) with Pipecat's
    :class:`~pipecat.serializers.twilio.TwilioFrameSerializer`: the media-streams protocol
    the lab's ``ws`` transport speaks (:mod:`voicelab.wsmedia`). The serializer is
    subclassed only to learn the ``streamSid`` from the caller's ``start`` message (a
    Twilio deployment reads it before building the serializer) and to number the bot's
    media messages (``chunk``/``timestamp``, as the lab's agent does) so the caller can
    place them on a timeline; it also stamps, on the loop clock, when each caller
    chunk arrived and each bot chunk left, for the turn breakdown.
``webrtc``
    :class:`~pipecat.transports.smallwebrtc.transport.SmallWebRTCTransport` (aiortc) with
    its HTTP offer/answer: a tiny aiohttp app serves ``POST /api/offer`` (JSON ``sdp``,
    ``type``) and hands the offer to a :class:`SmallWebRTCConnection`; one pipeline per
    connection.

The bot's own latency figure is Pipecat's
:class:`~pipecat.observers.user_bot_latency_observer.UserBotLatencyObserver`
(``on_latency_measured``: VAD stop time minus ``stop_secs`` -> ``BotStartedSpeakingFrame``).
Taps in the pipeline stamp each stage on the loop clock (VAD start/stop, final
transcription, first reply token, first synthesised audio, first audio to the
transport) in the shape :func:`voicelab.turns.analyse_turns` reads.

Barge-in is Pipecat's: a ``UserTurnProcessor`` right after the VAD whose VAD start
strategy has ``enable_interruptions`` broadcasts an ``InterruptionFrame`` when the user
starts speaking (``interruptions=True``, the default); over the WebSocket the serializer
then sends Twilio's ``clear``.

:class:`BotProcess` runs the same bot in its own Python process (PocketSphinx holds the
GIL while decoding, which would stall a caller sharing the process); both stamp on
``CLOCK_MONOTONIC`` through their event loops, and the child hands its timelines over as
JSON. ``python -m voicelab.pipecat_bot '{"transport": "ws", "port": 8765}'`` serves one
standalone until a line (or end of input) on stdin.

Start and stop in-process::

    async with PipecatBot("ws") as bot:        # 127.0.0.1, a free port
        ... connect to bot.address ...
    bot.summary()                             # per-turn stage times + Pipecat's figure
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any, AsyncGenerator

import numpy as np

from .errors import ParameterError, PeerTimeoutError, ToolUnavailableError

__all__ = ["PipecatBot", "pipecat_available", "PIP_EXTRA", "TRANSPORTS", "REPLIES"]

PIP_EXTRA = "voicelab[agents]"
TRANSPORTS = ("ws", "webrtc")
#: Reply scripts of the stand-in LLM (None: the lab's :data:`voicelab.pipeline.respond.SCRIPT`).
REPLIES: dict[str, Any] = {"lab": None, "short": (("", "Okay."),)}


def pipecat_available() -> bool:
    """Whether ``pipecat-ai`` (with its ``webrtc`` and ``silero`` extras) imports."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) is not None for m in ("pipecat", "aiortc", "onnxruntime", "loguru"))
    except (ImportError, ValueError):  # a module blocked in sys.modules
        return False


def _require() -> None:
    if not pipecat_available():
        raise ToolUnavailableError(f"the Pipecat bot needs the Python package pipecat-ai: pip install '{PIP_EXTRA}'")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _classes() -> dict[str, Any]:
    """Pipecat-dependent classes, defined on first use (pipecat-ai is optional)."""
    if _CLASSES:
        return _CLASSES
    _require()
    import logging
    import sys

    from loguru import logger as _loguru

    # Pipecat logs through loguru at DEBUG to stderr by default (a banner at import, every
    # frame event): keep its errors only. (voicelab itself does not use loguru.)
    _loguru.remove()
    _loguru.add(sys.stderr, level="ERROR")
    from pipecat.frames.frames import (
        AudioRawFrame,
        BotStartedSpeakingFrame,
        InterruptionFrame,
        LLMFullResponseEndFrame,
        LLMFullResponseStartFrame,
        LLMTextFrame,
        MetricsFrame,
        OutputAudioRawFrame,
        TranscriptionFrame,
        TTSAudioRawFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.serializers.twilio import TwilioFrameSerializer
    from pipecat.services.settings import STTSettings, TTSSettings
    from pipecat.services.stt_service import STTService
    from pipecat.services.tts_service import TTSService
    from pipecat.utils.time import time_now_iso8601

    from .pipeline.asr import PocketSphinxRecognizer
    from .pipeline.respond import FALLBACK_EMPTY, LlmLatencyModel, ScriptedResponder
    from .pipeline.tts import EspeakTts

    logging.getLogger("aioice").setLevel(logging.WARNING)

    class PocketSphinxSTTService(STTService):
        """The lab's PocketSphinx as a streaming Pipecat STT service.

        Audio is fed to the decoder while the VAD says the user speaks (with a pre-roll of
        what came just before the VAD's start decision), and the final hypothesis is
        taken at the VAD's stop: one ``TranscriptionFrame`` per user turn, as the lab's
        pipeline does (a ``SegmentedSTTService`` decoding the whole segment at the end
        cost 2.5-4 s per turn here).
        """

        def __init__(self, *, preroll_s: float = 0.5, **kwargs: Any) -> None:
            super().__init__(settings=STTSettings(model="pocketsphinx-en-us", language=None), **kwargs)
            self._rec: PocketSphinxRecognizer | None = None
            self._preroll_s = float(preroll_s)
            self._pre: list[bytes] = []
            self._pre_bytes = 0
            self._speaking = False
            self._jobs: asyncio.Queue | None = None
            self._worker: asyncio.Task | None = None

        def can_generate_metrics(self) -> bool:
            return True

        async def start(self, frame: Any) -> None:
            await super().start(frame)
            # loading the model takes ~1 s: once per service, off the loop
            self._rec = await asyncio.to_thread(PocketSphinxRecognizer, self.sample_rate)

        def _submit(self, fn: Any, *args: Any) -> asyncio.Future:
            """Run ``fn(*args)`` on the decoder in order, in a worker thread; returns its future.

            Decoding must not hold up the frames behind it: the VAD's start frame and
            Pipecat's interruption are system frames handled one after the other, so an
            awaited pre-roll decode here (~0.25 s) delayed every barge-in by as much."""
            loop = asyncio.get_running_loop()
            if self._jobs is None:
                self._jobs = asyncio.Queue()
                self._worker = loop.create_task(self._work())
            fut = loop.create_future()
            self._jobs.put_nowait((fn, args, fut))
            return fut

        async def _work(self) -> None:
            while True:
                fn, args, fut = await self._jobs.get()  # type: ignore[union-attr]
                try:
                    res = await asyncio.to_thread(fn, *args)
                except Exception as exc:  # noqa: BLE001 - handed to whoever waits
                    if not fut.done():
                        fut.set_exception(exc)
                else:
                    if not fut.done():
                        fut.set_result(res)

        async def cleanup(self) -> None:
            await super().cleanup()
            if self._worker is not None:
                self._worker.cancel()
                await asyncio.gather(self._worker, return_exceptions=True)
                self._worker = None

        async def run_stt(self, audio: bytes) -> AsyncGenerator[Any, None]:
            if self._speaking and self._rec is not None:
                self._submit(self._rec.feed, np.frombuffer(audio, dtype=np.int16))
            else:
                self._pre.append(audio)
                self._pre_bytes += len(audio)
                limit = int(self._preroll_s * self.sample_rate) * 2
                while self._pre and self._pre_bytes - len(self._pre[0]) >= limit:
                    self._pre_bytes -= len(self._pre.pop(0))
            return
            yield  # an async generator that yields nothing per chunk

        async def process_frame(self, frame: Any, direction: Any) -> None:
            if isinstance(frame, VADUserStartedSpeakingFrame) and self._rec is not None:
                self._submit(self._rec.start)
                self._submit(self._rec.feed, np.frombuffer(b"".join(self._pre), dtype=np.int16))
                self._pre, self._pre_bytes, self._speaking = [], 0, True
            await super().process_frame(frame, direction)
            if isinstance(frame, VADUserStoppedSpeakingFrame) and self._speaking and self._rec is not None:
                self._speaking = False
                await self.start_processing_metrics()  # Pipecat's "processing": the final decode
                text = await self._submit(self._rec.final)
                await self.stop_processing_metrics()
                # an empty hypothesis is still a turn (the responder asks again)
                await self.push_frame(TranscriptionFrame(text, self._user_id, time_now_iso8601(), finalized=True))

    class ScriptedLLMProcessor(FrameProcessor):
        """A deterministic LLM stand-in: a final transcription in, the scripted reply out
        as ``LLMTextFrame`` tokens, timed by the lab's :class:`LlmLatencyModel` (modelled)."""

        def __init__(self, latency: LlmLatencyModel, seed: int = 0, script: Any = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.responder = ScriptedResponder(latency, seed=seed, **({"script": script} if script else {}))

        async def process_frame(self, frame: Any, direction: Any) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, TranscriptionFrame):
                loop = asyncio.get_running_loop()
                stream = self.responder.respond(frame.text, loop.time())
                await self.push_frame(LLMFullResponseStartFrame())
                for t, tok in stream.tokens:
                    d = t - loop.time()
                    if d > 0:
                        await asyncio.sleep(d)
                    await self.push_frame(LLMTextFrame(tok))
                await self.push_frame(LLMFullResponseEndFrame())
            else:
                await self.push_frame(frame, direction)

    class EspeakTTSService(TTSService):
        """The lab's eSpeak NG as a Pipecat TTS service (Pipecat aggregates sentences)."""

        def __init__(self, *, voice: str = "en-us", rate_wpm: int = 170, **kwargs: Any) -> None:
            super().__init__(push_start_frame=True, push_stop_frames=True,
                             settings=TTSSettings(model="espeak-ng", voice=voice, language=None), **kwargs)  # fmt: skip
            self._voice, self._wpm = voice, rate_wpm
            self._tts: EspeakTts | None = None

        def can_generate_metrics(self) -> bool:
            return True

        async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Any, None]:
            if self._tts is None or self._tts.sample_rate != self.sample_rate:
                self._tts = EspeakTts(self.sample_rate, voice=self._voice, rate_wpm=self._wpm)
            await self.start_tts_usage_metrics(text)
            pcm = await asyncio.to_thread(self._tts.synthesize, text, first=True)
            await self.stop_ttfb_metrics()
            yield TTSAudioRawFrame(audio=pcm.tobytes(), sample_rate=self.sample_rate, num_channels=1,
                                   context_id=context_id)  # fmt: skip

    class Tap(FrameProcessor):
        """Stamps frames of interest on the loop clock into the bot's timeline, passes all on."""

        def __init__(self, timeline: "_Timeline", where: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.timeline, self.where = timeline, where

        async def process_frame(self, frame: Any, direction: Any) -> None:
            await super().process_frame(frame, direction)
            self.timeline.saw(self.where, frame, direction)
            await self.push_frame(frame, direction)

        async def prime(self, seconds: float, sample_rate: int) -> None:
            """Send ``seconds`` of silence to the transport (a call's media starts flowing at
            once; the caller's playout then runs before the first reply, as with a phone line)."""
            n = int(seconds * sample_rate)
            await self.push_frame(OutputAudioRawFrame(audio=bytes(2 * n), sample_rate=sample_rate, num_channels=1))

    class LabTwilioSerializer(TwilioFrameSerializer):
        """Pipecat's Twilio serializer, learning the streamSid from ``start`` and numbering media."""

        def __init__(self, timeline: "_Timeline") -> None:
            super().__init__(stream_sid="", params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
            self.timeline = timeline
            self.chunks = 0
            self._ts_ms = -20
            self._last_sent: float | None = None
            self._t0: float | None = None
            self._after_clear = False
            self.on_start: Any = None  # called once the caller's 'start' arrived

        async def deserialize(self, data: str | bytes) -> Any:
            now = asyncio.get_running_loop().time()
            try:
                msg = json.loads(data)
            except (TypeError, ValueError):
                return None
            ev = msg.get("event") if isinstance(msg, dict) else None
            if ev == "start":
                self._stream_sid = str(msg.get("streamSid") or (msg.get("start") or {}).get("streamSid") or "")
                self._t0 = now
                if self.on_start is not None:
                    self.on_start()
            elif ev == "media":
                try:
                    chunk = int((msg.get("media") or {}).get("chunk"))
                    self.timeline.arrivals.setdefault(chunk, now)
                    self.timeline.played_at.setdefault(chunk, now)  # no jitter buffer: straight to the VAD
                except (TypeError, ValueError):
                    pass
            return await super().deserialize(data)

        async def serialize(self, frame: Any) -> str | bytes | None:
            out = await super().serialize(frame)
            if out is not None and isinstance(frame, InterruptionFrame):
                # Pipecat's 'clear': the platform drops the audio it holds, so the next
                # talkspurt is placed by the clock, not after the audio that was dropped
                self.timeline.clears.append(asyncio.get_running_loop().time())
                self._last_sent, self._after_clear = None, True
                return out
            if out is None or not isinstance(frame, AudioRawFrame):
                return out
            if not self._stream_sid:  # no stream to send on yet
                return None
            now = asyncio.get_running_loop().time()
            msg = json.loads(out)
            t0 = self._t0 if self._t0 is not None else now
            if self._last_sent is None or now - self._last_sent > 0.06:  # a new talkspurt: timestamp from the clock
                clock_ms = int(round((now - t0) / 0.02)) * 20
                self._ts_ms = clock_ms if self._after_clear else max(self._ts_ms + 20, clock_ms)
                self._after_clear = False
                self.timeline.spurts.append(now)
            else:
                self._ts_ms += 20
            self._last_sent = now
            self.chunks += 1
            msg["media"].update(track="outbound", chunk=str(self.chunks), timestamp=str(self._ts_ms))
            self.timeline.send_times[self.chunks] = now
            return json.dumps(msg)

    _CLASSES.update(STT=PocketSphinxSTTService, LLM=ScriptedLLMProcessor, TTS=EspeakTTSService, Tap=Tap,
                    Serializer=LabTwilioSerializer, FrameDirection=FrameDirection,
                    VADStart=VADUserStartedSpeakingFrame, VADStop=VADUserStoppedSpeakingFrame,
                    Transcription=TranscriptionFrame, LLMText=LLMTextFrame, TTSAudio=TTSAudioRawFrame,
                    BotStarted=BotStartedSpeakingFrame, Metrics=MetricsFrame, Interruption=InterruptionFrame, LlmLatencyModel=LlmLatencyModel,
                    FALLBACK_EMPTY=FALLBACK_EMPTY)  # fmt: skip
    return _CLASSES


_CLASSES: dict[str, Any] = {}


class _Timeline:
    """One conversation's stage times on the loop clock and Pipecat's own figures."""

    def __init__(self) -> None:
        self.turns: list[dict[str, Any]] = []
        self.send_times: dict[int, float] = {}  # bot media chunk -> sent (ws)
        self.arrivals: dict[int, float] = {}  # caller chunk -> arrived (ws)
        self.played_at: dict[int, float] = {}
        self.spurts: list[float] = []  # first bot chunk of each talkspurt (ws)
        self.bot_started: list[float] = []  # BotStartedSpeakingFrame upstream at the output (both)
        self.pipecat_latency: list[tuple[float, float]] = []  # (loop time, s) from UserBotLatencyObserver
        self.clears: list[float] = []  # 'clear' sent to the caller on an interruption (ws)
        self.interruptions: list[float] = []  # InterruptionFrame reaching the output (both transports)
        self.metrics: list[dict[str, Any]] = []  # MetricsFrame items (TTFB, processing), ms
        self.errors: list[str] = []

    _DICTS = ("send_times", "arrivals", "played_at")
    _LISTS = ("turns", "spurts", "bot_started", "pipecat_latency", "metrics", "errors", "clears", "interruptions")

    def dump(self) -> dict[str, Any]:
        """Everything as JSON-ready data (the bot process hands its timelines over so)."""
        out: dict[str, Any] = {k: [[int(c), float(t)] for c, t in getattr(self, k).items()] for k in self._DICTS}
        out.update({k: list(getattr(self, k)) for k in self._LISTS})
        return out

    @classmethod
    def load(cls, data: dict[str, Any]) -> "_Timeline":
        """The inverse of :meth:`dump`."""
        tl = cls()
        for k in cls._DICTS:
            setattr(tl, k, {int(c): float(t) for c, t in data.get(k, [])})
        for k in cls._LISTS:
            setattr(tl, k, [tuple(x) if k == "pipecat_latency" else x for x in data.get(k, [])])
        return tl

    def _cur(self) -> dict[str, Any] | None:
        return self.turns[-1] if self.turns else None

    def saw(self, where: str, frame: Any, direction: Any) -> None:
        C = _CLASSES
        now = asyncio.get_running_loop().time()
        down = direction == C["FrameDirection"].DOWNSTREAM
        t = self._cur()
        if where == "vad" and down and isinstance(frame, C["VADStart"]):
            self.turns.append({"speech_start": now, "speech_end": None, "text": None, "asr_final": None,
                               "llm_first_token": None, "tts_first_audio": None, "reply_start": None,
                               "reason": "endpoint", "llm_modelled": True, "server_ms": None, "pipecat_ms": None})  # fmt: skip
        elif where == "vad" and down and isinstance(frame, C["VADStop"]) and t is not None and t["speech_end"] is None:
            t["speech_end"] = now
        elif where == "stt" and down and isinstance(frame, C["Transcription"]):
            cands = [x for x in self.turns if x["speech_end"] is not None and x["asr_final"] is None]
            if cands:
                cands[0].update(asr_final=now, text=frame.text)
                if not frame.text.strip():
                    cands[0]["reason"] = "empty_recognition"
        elif where == "llm" and down and isinstance(frame, C["LLMText"]):
            cands = [x for x in self.turns if x["asr_final"] is not None and x["llm_first_token"] is None]
            if cands:
                cands[0]["llm_first_token"] = now
        elif where == "tts" and down and isinstance(frame, C["TTSAudio"]):
            cands = [x for x in self.turns if x["llm_first_token"] is not None and x["tts_first_audio"] is None]
            if cands:
                cands[0]["tts_first_audio"] = now
        elif where == "out" and not down and isinstance(frame, C["BotStarted"]):
            self.bot_started.append(now)
        elif where == "out" and down and isinstance(frame, C["Interruption"]):
            self.interruptions.append(now)
        elif where == "out" and down and isinstance(frame, C["Metrics"]):
            for d in frame.data:  # Pipecat's per-service TTFB / processing metrics
                v = getattr(d, "value", None)
                if isinstance(v, (int, float)) and v > 0:
                    self.metrics.append({"at": now, "kind": type(d).__name__, "processor": d.processor,
                                         "ms": float(v) * 1000.0})  # fmt: skip

    def on_latency(self, seconds: float) -> None:
        now = asyncio.get_running_loop().time()
        self.pipecat_latency.append((now, float(seconds)))

    def summary(self) -> dict[str, Any]:
        """Per-turn records (the keys :func:`voicelab.turns.analyse_turns` reads)."""
        out = []
        starts = self.spurts or self.bot_started
        for t in self.turns:
            r = dict(t)
            if r["speech_end"] is None:
                r["reason"] = "no_endpoint"
            if r["tts_first_audio"] is not None:
                rs = [s for s in starts if s >= r["tts_first_audio"] - 0.005]
                r["reply_start"] = rs[0] if rs else None
            if r["reply_start"] is not None and r["speech_end"] is not None:
                r["server_ms"] = (r["reply_start"] - r["speech_end"]) * 1000.0
            out.append(r)
        # Pipecat measures from the latest VAD stop before the bot starts speaking (a VAD
        # start resets it): its figure belongs to the last endpoint before it was reported.
        # No BotStartedSpeakingFrame while the bot is still talking: no figure for that turn.
        for w, v in self.pipecat_latency:
            ends = [r for r in out if r["speech_end"] is not None and r["speech_end"] <= w]
            if ends and ends[-1]["pipecat_ms"] is None:
                ends[-1]["pipecat_ms"] = v * 1000.0
        return {"turns": out, "responder": {"responder": "pipecat+scripted", "llm_modelled": True},
                "pipecat_latency_ms": [v * 1000.0 for _, v in self.pipecat_latency],
                "interruptions": list(self.interruptions), "clears": list(self.clears),
                "pipecat_metrics": list(self.metrics)}  # fmt: skip


class PipecatBot:
    """A Pipecat bot on 127.0.0.1, started and stopped in-process (async context manager).

    Parameters
    ----------
    transport : {"ws", "webrtc"}
        Pipecat's WebSocket server transport with its Twilio serializer (media streams,
        8 kHz mu-law) or its SmallWebRTC transport (Opus) behind ``POST /api/offer``.
    stop_ms : float
        Silero VAD ``stop_secs`` (end of utterance after this much silence), ms.
    start_ms : float
        Silero VAD ``start_secs``, ms.
    llm_ttft_s, llm_sigma, llm_tokens_per_s : float
        The stand-in LLM's modelled timing (:class:`voicelab.pipeline.respond.LlmLatencyModel`;
        defaults as the lab's agent).
    replies : {"lab", "short"}
        The lab's scripted replies (:data:`voicelab.pipeline.respond.SCRIPT`, 2-4 s of
        speech) or one short reply ("Okay.") for quick tests.
    host : str
    port : int
        0: a free port.
    seed : int
    interruptions : bool
        Barge-in, Pipecat's way (1.14: a :class:`~pipecat.turns.user_turn_processor.UserTurnProcessor`
        whose :class:`~pipecat.turns.user_start.VADUserTurnStartStrategy` has
        ``enable_interruptions``; earlier Pipecat called it ``allow_interruptions``): the
        Silero VAD's start of user speech broadcasts an ``InterruptionFrame``, which
        cancels the reply in the LLM and TTS, empties the output transport's queue and
        (WebSocket) sends the Twilio ``clear``. Default True, as Pipecat's.

    Attributes
    ----------
    address : (host, port)
    url : str
        ``ws://host:port/media`` or ``http://host:port/api/offer``.
    sessions : list of _Timeline
        One per caller (one conversation each).
    """

    def __init__(self, transport: str = "ws", *, stop_ms: float = 300.0, start_ms: float = 200.0,
                 llm_ttft_s: float = 0.4, llm_sigma: float = 0.35, llm_tokens_per_s: float = 80.0,
                 replies: str = "lab", host: str = "127.0.0.1", port: int = 0, seed: int = 0,
                 interruptions: bool = True) -> None:  # fmt: skip
        if transport not in TRANSPORTS:
            raise ParameterError(f"the Pipecat bot runs over 'ws' or 'webrtc', got {transport!r}")
        if isinstance(stop_ms, bool) or not isinstance(stop_ms, (int, float)) or not 50 <= stop_ms <= 5000:
            raise ParameterError(f"stop_ms must be a number in 50..5000 ms, got {stop_ms!r}")
        if isinstance(start_ms, bool) or not isinstance(start_ms, (int, float)) or not 20 <= start_ms <= 2000:
            raise ParameterError(f"start_ms must be a number in 20..2000 ms, got {start_ms!r}")
        if replies not in REPLIES:
            raise ParameterError(f"replies must be one of {', '.join(REPLIES)}, got {replies!r}")
        self.transport, self.stop_ms, self.start_ms = transport, float(stop_ms), float(start_ms)
        self.replies = replies
        if not isinstance(interruptions, bool):
            raise ParameterError(f"interruptions must be True or False, got {interruptions!r}")
        self.interruptions = interruptions
        self.host, self.port, self.seed = host, int(port), int(seed)
        self.llm = dict(ttft_median_s=llm_ttft_s, ttft_sigma=llm_sigma, tokens_per_s=llm_tokens_per_s)
        _require()
        self._C = _classes()
        self._C["LlmLatencyModel"](**self.llm)  # validate now
        self.sessions: list[_Timeline] = []
        self._workers: list[Any] = []
        self._tasks: list[asyncio.Task] = []
        self._runner: Any = None
        self._web: Any = None
        self._pcs: list[Any] = []
        self.address: tuple[str, int] = (host, self.port)

    @property
    def url(self) -> str:
        h, p = self.address
        return f"ws://{h}:{p}/media" if self.transport == "ws" else f"http://{h}:{p}/api/offer"

    def describe(self) -> dict[str, Any]:
        import pipecat

        return {"framework": "pipecat", "pipecat_version": getattr(pipecat, "__version__", None),
                "transport": self.transport, "vad": "silero (pipecat SileroVADAnalyzer)", "stop_ms": self.stop_ms,
                "start_ms": self.start_ms, "interruptions": self.interruptions,
                "stt": "pocketsphinx (STTService, streaming)", "tts": "espeak-ng (TTSService)",
                "llm": {"responder": "scripted", "replies": self.replies, "llm_modelled": True, **self.llm}}  # fmt: skip

    # ------------------------------------------------------------------ pipeline
    def _build(self, transport: Any, timeline: _Timeline) -> Any:
        from pipecat.audio.vad.silero import SileroVADAnalyzer
        from pipecat.audio.vad.vad_analyzer import VADParams
        from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
        from pipecat.pipeline.pipeline import Pipeline
        from pipecat.pipeline.worker import PipelineParams, PipelineWorker
        from pipecat.processors.audio.vad_processor import VADProcessor

        C = self._C
        vad = VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=self.stop_ms / 1000.0,
                                                                           start_secs=self.start_ms / 1000.0)))  # fmt: skip
        llm = C["LLM"](C["LlmLatencyModel"](**self.llm), seed=self.seed + len(self.sessions), script=REPLIES[self.replies])
        self._out_tap = C["Tap"](timeline, "out")
        turn: list[Any] = []
        if self.interruptions:
            from pipecat.turns.user_start import VADUserTurnStartStrategy
            from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
            from pipecat.turns.user_turn_processor import UserTurnProcessor
            from pipecat.turns.user_turn_strategies import UserTurnStrategies

            # right after the VAD (before the STT, whose pre-roll decode at the VAD's start
            # would hold the start frame ~0.25 s): the VAD frames, the interruption and the
            # audio are all system frames, handled in order, so the recogniser still sees
            # the start before the interruption and loses no audio. The stop strategy ends
            # the turn at the VAD's stop (the scripted LLM answers the transcript itself).
            turn = [UserTurnProcessor(user_turn_strategies=UserTurnStrategies(
                start=[VADUserTurnStartStrategy(enable_interruptions=True)],
                stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.0, wait_for_transcript=False)]))]  # fmt: skip
        pipeline = Pipeline([
            transport.input(), vad, C["Tap"](timeline, "vad"), *turn, C["STT"](), C["Tap"](timeline, "stt"), llm,
            C["Tap"](timeline, "llm"), C["TTS"](), C["Tap"](timeline, "tts"), self._out_tap, transport.output(),
        ])  # fmt: skip
        observer = UserBotLatencyObserver()

        @observer.event_handler("on_latency_measured")
        async def _measured(_obs: Any, seconds: float) -> None:
            timeline.on_latency(seconds)

        out_rate = 8000 if self.transport == "ws" else 16000  # ws: mu-law at 8 kHz, 20 ms = one message
        worker = PipelineWorker(pipeline, params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=out_rate,
                                                                enable_metrics=True),
                                observers=[observer], idle_timeout_secs=None, enable_rtvi=False)  # fmt: skip
        return worker

    def _run(self, worker: Any) -> None:
        from pipecat.workers.runner import WorkerRunner

        async def run() -> None:
            try:
                runner = WorkerRunner(handle_sigint=False)
                await runner.add_workers(worker)
                await runner.run()
            except Exception as exc:  # noqa: BLE001 - recorded, the bot keeps serving
                if self.sessions:
                    self.sessions[-1].errors.append(f"{type(exc).__name__}: {exc}")

        self._workers.append(worker)
        self._tasks.append(asyncio.get_running_loop().create_task(run()))

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> "PipecatBot":
        if self.transport == "ws":
            await self._start_ws()
        else:
            await self._start_webrtc()
        return self

    async def _start_ws(self) -> None:
        from pipecat.transports.websocket.server import (
            SingleClientWebsocketServerParams,
            SingleClientWebsocketServerTransport,
        )

        port = self.port or _free_port(self.host)
        timeline = _Timeline()
        serializer = self._C["Serializer"](timeline)
        params = SingleClientWebsocketServerParams(audio_in_enabled=True, audio_out_enabled=True,
                                                   audio_out_10ms_chunks=2, serializer=serializer,
                                                   add_wav_header=False, allowed_origins=[])  # fmt: skip
        transport = SingleClientWebsocketServerTransport(params=params, host=self.host, port=port)
        ready = asyncio.get_running_loop().create_future()

        @transport.event_handler("on_websocket_ready")
        async def _ready(_t: Any) -> None:
            if not ready.done():
                ready.set_result(True)

        self.sessions.append(timeline)
        self._run(self._build(transport, timeline))
        tap = self._out_tap

        # once the caller's 'start' has named the stream (not at connection: on a slow path
        # media would go out before the bot knows its streamSid)
        serializer.on_start = lambda: self._tasks.append(asyncio.get_running_loop().create_task(tap.prime(0.2, 8000)))

        try:
            await asyncio.wait_for(asyncio.shield(ready), 15.0)
        except asyncio.TimeoutError:
            await self.close()
            raise PeerTimeoutError(f"the Pipecat WebSocket server on {self.host}:{port} did not come up in 15 s") from None
        self.address = (self.host, port)

    async def _start_webrtc(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/api/offer", self._offer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._web = runner
        self.address = (self.host, int(site._server.sockets[0].getsockname()[1]))  # type: ignore[union-attr]

    async def _offer(self, request: Any) -> Any:
        from aiohttp import web
        from pipecat.transports.base_transport import TransportParams
        from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
        from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

        try:
            body = await request.json()
            sdp, typ = body["sdp"], body["type"]
            if not isinstance(sdp, str) or typ != "offer":
                raise ValueError("need a string 'sdp' and type 'offer'")
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad offer: {exc}"}, status=400)
        conn = SmallWebRTCConnection(ice_servers=[])
        self._pcs.append(conn)
        try:
            await conn.initialize(sdp=sdp, type=typ)
        except Exception as exc:  # noqa: BLE001 - aiortc raises ValueError and others on bad SDP
            return web.json_response({"error": f"bad offer: {type(exc).__name__}: {exc}"[:300]}, status=400)
        timeline = _Timeline()
        self.sessions.append(timeline)
        transport = SmallWebRTCTransport(webrtc_connection=conn, params=TransportParams(
            audio_in_enabled=True, audio_out_enabled=True, audio_out_10ms_chunks=2))  # fmt: skip
        self._run(self._build(transport, timeline))
        answer = conn.get_answer()
        if answer is None:
            return web.json_response({"error": "no SDP answer"}, status=500)
        return web.json_response(answer)

    async def close(self) -> None:
        """Cancel the pipelines, close the peer connections and the HTTP server (idempotent)."""
        for w in self._workers:
            try:
                await asyncio.wait_for(w.cancel(), 10.0)
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        for t in self._tasks:
            if not t.done():
                try:
                    await asyncio.wait_for(asyncio.shield(t), 10.0)
                except asyncio.TimeoutError:
                    t.cancel()
                    await asyncio.gather(t, return_exceptions=True)
        self._workers, self._tasks = [], []
        for c in self._pcs:
            try:
                await c.disconnect()
            except Exception:  # noqa: BLE001
                pass
        self._pcs = []
        if self._web is not None:
            await self._web.cleanup()
            self._web = None

    async def __aenter__(self) -> "PipecatBot":
        return await self.start()

    async def collect(self) -> list[_Timeline]:
        """The conversations' timelines so far (in-process: :attr:`sessions` as they are)."""
        return self.sessions

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def summary(self, index: int = -1) -> dict[str, Any]:
        """The timeline of conversation ``index`` (default: the last)."""
        if not self.sessions:
            return {"turns": [], "responder": {}, "pipecat_latency_ms": []}
        return self.sessions[index].summary()



class BotProcess:
    """A :class:`PipecatBot` in its own Python process, the way a deployed bot runs.

    Why: PocketSphinx's decoder holds the GIL while it decodes (a 1 s decode in a worker
    thread stalled a ticking event loop for 1 s here), so a bot in the caller's process
    stalls the caller's and the bridge's send and playout clocks and shows up as delay
    and late loss that belong to no network. In its own process it cannot. Both processes
    stamp with their event loop's clock, :func:`time.monotonic` (Linux
    ``CLOCK_MONOTONIC``, one clock for the whole machine), so the bot's stage times still
    sit on the caller's timeline; at the end the child hands its timelines over as JSON
    (:meth:`collect`).

    Parameters are those of :class:`PipecatBot` (checked here, before the child starts).
    Use as ``async with BotProcess("ws", ...) as bot:``; ``bot.address``, ``bot.url``,
    ``await bot.collect()`` (stops the bot and returns the timelines), ``bot.summary()``,
    ``bot.describe()``.
    """

    def __init__(self, transport: str = "ws", **options: Any) -> None:
        PipecatBot(transport, **options)  # ParameterError / ToolUnavailableError here, not in the child
        self.transport, self.options = transport, dict(options)
        self.address: tuple[str, int] = (options.get("host", "127.0.0.1"), 0)
        self.sessions: list[_Timeline] = []
        self.errors: list[str] = []
        self._describe: dict[str, Any] = {}
        self._proc: Any = None
        self._collected = False

    @property
    def url(self) -> str:
        h, p = self.address
        return f"ws://{h}:{p}/media" if self.transport == "ws" else f"http://{h}:{p}/api/offer"

    def describe(self) -> dict[str, Any]:
        return dict(self._describe, process="own")

    async def _line(self, timeout: float) -> dict[str, Any]:
        """The child's next JSON object on stdout (other output skipped)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            left = end - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError
            raw = await asyncio.wait_for(self._proc.stdout.readline(), left)
            if not raw:
                raise PeerTimeoutError(f"the Pipecat bot process exited (status {self._proc.returncode})")
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if isinstance(msg, dict):
                return msg

    async def start(self) -> "BotProcess":
        import sys

        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicelab.pipecat_bot", json.dumps({"transport": self.transport, **self.options}),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 28)  # fmt: skip
        try:
            msg = await self._line(60.0)
        except (asyncio.TimeoutError, PeerTimeoutError) as exc:
            await self._kill()
            raise PeerTimeoutError(f"the Pipecat bot process did not come up in 60 s ({exc})") from None
        if "error" in msg:
            await self._kill()
            raise PeerTimeoutError(f"the Pipecat bot process failed to start: {msg['error']}")
        self.address = (str(msg["ready"][0]), int(msg["ready"][1]))
        self._describe = msg.get("describe", {})
        return self

    async def collect(self) -> list[_Timeline]:
        """Stop the bot and take over its timelines (once; later calls return the same)."""
        if self._collected or self._proc is None:
            return self.sessions
        self._collected = True
        try:
            self._proc.stdin.write(b"stop\n")
            await self._proc.stdin.drain()
            msg = await self._line(30.0)
            self.sessions = [_Timeline.load(d) for d in msg.get("sessions", [])]
            self.errors = list(msg.get("errors", []))
            await asyncio.wait_for(self._proc.wait(), 15.0)
        except (asyncio.TimeoutError, PeerTimeoutError, ConnectionError) as exc:
            self.errors.append(f"the bot process did not hand over its timelines: {type(exc).__name__} {exc}"[:300])
            await self._kill()
        return self.sessions

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()

    async def close(self) -> None:
        await self.collect()
        await self._kill()

    async def __aenter__(self) -> "BotProcess":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def summary(self, index: int = -1) -> dict[str, Any]:
        if not self.sessions:
            return {"turns": [], "responder": {}, "pipecat_latency_ms": []}
        return self.sessions[index].summary()


def _child_main(options: dict[str, Any]) -> None:
    """``python -m voicelab.pipecat_bot '{json options}'``: serve until a line (or EOF) on stdin."""
    import sys

    async def main() -> None:
        loop = asyncio.get_running_loop()
        try:
            bot = PipecatBot(**options)
            await bot.start()
        except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
            return
        print(json.dumps({"ready": list(bot.address), "describe": bot.describe()}), flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        await reader.readline()
        await bot.close()
        print(json.dumps({"sessions": [tl.dump() for tl in bot.sessions]}), flush=True)

    asyncio.run(main())


if __name__ == "__main__":
    import sys as _sys

    _child_main(json.loads(_sys.argv[1]))
