"""The agent's listen-think-speak pipeline: one object behind every transport.

A :class:`Pipeline` is fed the caller's audio one frame at a time (what the agent's
jitter buffer plays out) and asked for the agent's next frame at each send tick; both
calls carry ``now``, the loop time, and the pipeline never reads a clock of its own
(give ``clock=loop.time`` to have the stages' compute time counted; under the virtual
clock, or without ``clock``, computing takes no time). Stages, each swappable:

VAD (:mod:`~voicelab.pipeline.vad`) -> endpointer -> recogniser (:mod:`~voicelab.pipeline.asr`)
-> responder (:mod:`~voicelab.pipeline.respond`) -> clause-by-clause TTS
(:mod:`~voicelab.pipeline.tts`) -> send queue. Caller speech while the agent replies
stops the reply (barge-in).

Every stage transition is a timestamped :class:`StageEvent` (``speech_start``,
``speech_end``, ``asr_partial``, ``asr_final``, ``llm_first_token``, ``tts_first_audio``,
``reply_start``, ``reply_end``, ``barge_in``), and each turn is summarised in an
:class:`AgentTurn` with the server-side latency figure frameworks report
(``reply_start - speech_end``, Pipecat's user-stopped-speaking to bot-started-speaking).

States (a table; a missing transition is an error): ``listening`` -> ``hearing`` (speech
started) -> ``thinking`` (end of utterance) -> ``speaking`` (first reply frame sent) ->
``listening`` (reply finished); ``hearing`` again from ``thinking``/``speaking`` when the
caller talks (barge-in).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from ..errors import LocalProtocolError, ParameterError
from .asr import PocketSphinxRecognizer, fold, narrowband_transform
from .respond import FALLBACK_ERROR, ReplyStream, _tokens, make_responder
from .tts import EspeakTts, ThreadedTts, split_clauses
from .vad import Endpointer, make_vad

__all__ = ["Pipeline", "PipelineConfig", "StageEvent", "AgentTurn", "TRANSITIONS"]

#: (state, input) -> next state
TRANSITIONS: dict[tuple[str, str], str] = {
    ("listening", "speech_start"): "hearing",
    ("hearing", "speech_end"): "thinking",
    ("hearing", "max_utterance"): "thinking",
    ("thinking", "reply_start"): "speaking",
    ("thinking", "speech_start"): "hearing",
    ("speaking", "speech_start"): "hearing",
    ("speaking", "reply_end"): "listening",
    ("listening", "close"): "closed",
    ("hearing", "close"): "closed",
    ("thinking", "close"): "closed",
    ("speaking", "close"): "closed",
    ("closed", "close"): "closed",
}


@dataclass(frozen=True)
class StageEvent:
    """``name`` at loop time ``t`` (s) in turn ``turn``; ``data``: e.g. the text."""

    name: str
    t: float
    turn: int
    data: Any = None


@dataclass
class AgentTurn:
    """One caller utterance and the agent's answer, as the agent saw them (loop times, s)."""

    index: int
    speech_start: float
    speech_from: float
    last_speech: float | None = None
    speech_end: float | None = None
    asr_final: float | None = None
    text: str | None = None
    partials: int = 0
    llm_first_token: float | None = None
    tts_first_audio: float | None = None
    reply_start: float | None = None
    reply_end: float | None = None
    reply_text: str = ""
    barge_in: float | None = None
    reason: str = "ok"
    llm_error: str | None = None
    llm_modelled: bool = True

    @property
    def server_ms(self) -> float | None:
        """Agent-side latency: end of utterance detected -> first reply frame sent (ms)."""
        if self.speech_end is None or self.reply_start is None:
            return None
        return (self.reply_start - self.speech_end) * 1000.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["server_ms"] = self.server_ms
        return d


@dataclass
class PipelineConfig:
    """How to build a :class:`Pipeline` (what ``agent serve --mode pipeline`` takes).

    Parameters
    ----------
    vad : {"webrtc", "silero"}
    stop_ms, min_speech_ms : float
        End-of-utterance silence and minimum speech (ms).
    llm : str or None
        None / ``"model"``: scripted replies with modelled LLM latency; an http(s) URL:
        an OpenAI-compatible streaming chat endpoint.
    llm_timeout_s : float
    max_utterance_s : float
        A caller who never stops is cut off after this (the turn's reason says so).
    barge_in : bool
    seed : int
    asr_upsample : {"soxr", "fold"}
        How 8 kHz audio is brought to the 16 kHz recogniser (see :class:`Pipeline`).
    asr_adapt : bool or str
        Narrowband channel adaptation: on an 8 kHz call the recogniser applies the shipped
        MLLR transform for ``asr_upsample`` (True, default), none (False, for the
        comparison), or the transform file at this path; wideband calls never
        (:func:`~voicelab.pipeline.asr.narrowband_transform`).
    asr_process : bool or None
        Recognise in a worker process per call (None: on a real-time loop, not under the
        virtual clock; see :meth:`build`).
    tts_thread : bool or None
        Synthesise in a thread, off the event loop (:class:`~voicelab.pipeline.tts.ThreadedTts`;
        None: on a real-time loop, not under the virtual clock, where synthesis stays
        inline and deterministic).
    """

    vad: str = "webrtc"
    stop_ms: float = 300.0
    min_speech_ms: float = 100.0
    llm: str | None = None
    llm_timeout_s: float = 5.0
    max_utterance_s: float = 15.0
    barge_in: bool = True
    seed: int = 0
    ttft_median_s: float = 0.4
    ttft_sigma: float = 0.35
    tokens_per_s: float = 80.0
    asr_process: bool | None = None
    asr_upsample: str = "fold"
    tts_thread: bool | None = None
    asr_adapt: bool | str = True

    def __post_init__(self) -> None:  # bad settings fail here, not at the first call
        import re

        from .respond import LlmLatencyModel
        from .vad import VADS

        if not isinstance(self.vad, str) or self.vad.lower() not in VADS:
            raise ParameterError(f"vad must be one of {', '.join(VADS)}, got {self.vad!r}")
        Endpointer(stop_ms=self.stop_ms, min_speech_ms=self.min_speech_ms)
        if self.llm not in (None, "model", "scripted") and not (isinstance(self.llm, str) and re.match(r"^https?://", self.llm)):
            raise ParameterError(f"llm must be 'model' (scripted replies, modelled latency) or an http(s) URL, got {self.llm!r}")
        LlmLatencyModel(self.ttft_median_s, self.ttft_sigma, self.tokens_per_s)
        if self.asr_upsample not in ("soxr", "fold"):
            raise ParameterError(f"asr_upsample must be 'soxr' or 'fold', got {self.asr_upsample!r}")
        if not isinstance(self.asr_adapt, (bool, str)):
            raise ParameterError(f"asr_adapt must be true, false or an MLLR transform's path, got {self.asr_adapt!r}")
        narrowband_transform(8000, self.asr_upsample, self.asr_adapt)  # a missing file fails here
        if not 0.5 <= float(self.max_utterance_s) <= 600.0:
            raise ParameterError(f"max_utterance_s must be in 0.5..600 s, got {self.max_utterance_s!r}")

    def build(self, sample_rate: int, *, clock: Callable[[], float] | None = None, seed: int | None = None,
              asr_process: bool | None = None) -> "Pipeline":  # fmt: skip
        """A pipeline for one call at ``sample_rate``.

        ``asr_process``: decode in a worker process of the call's own
        (:class:`~voicelab.pipeline.asr.ProcessRecognizer`: the event loop is never held
        by recognition); None (default): ``self.asr_process``, and if that is None too,
        when ``clock`` is given and the running loop is a real-time one (under the
        virtual clock recognition stays inline, deterministic).
        """
        from ..net.vclock import is_virtual
        from .asr import ProcessRecognizer
        from .respond import LlmLatencyModel

        lat = LlmLatencyModel(self.ttft_median_s, self.ttft_sigma, self.tokens_per_s)
        if asr_process is None:
            asr_process = self.asr_process
        if asr_process is None:
            asr_process = clock is not None and not is_virtual()
        mllr = narrowband_transform(sample_rate, self.asr_upsample, self.asr_adapt)
        asr: Any = ProcessRecognizer(clock=clock or (lambda: 0.0), mllr=mllr) if asr_process else \
            PocketSphinxRecognizer(16000, mllr=mllr)
        tts_thread = self.tts_thread
        if tts_thread is None:
            tts_thread = clock is not None and not is_virtual()
        tts = ThreadedTts(EspeakTts(sample_rate), clock=clock) if tts_thread and clock is not None else None
        return Pipeline(sample_rate=sample_rate, vad=self.vad, stop_ms=self.stop_ms, min_speech_ms=self.min_speech_ms,
                        responder=make_responder(self.llm, seed=self.seed if seed is None else seed, latency=lat,
                                                 timeout_s=self.llm_timeout_s), recognizer=asr, tts=tts,
                        max_utterance_s=self.max_utterance_s, barge_in=self.barge_in, clock=clock,
                        asr_upsample=self.asr_upsample, asr_adapt=self.asr_adapt)  # fmt: skip


class Pipeline:
    """VAD -> endpointing -> ASR -> responder -> TTS, fed and drained on the loop clock.

    Parameters
    ----------
    sample_rate : int
        Rate of the frames in and out (the codec's: 8000 for G.711, 16000, 48000 ...).
    frame_ms : int
        Frame length in and out.
    vad : str or Vad
    stop_ms, min_speech_ms : float
    responder : object, optional
        ``respond(text, now) -> ReplyStream`` (default: scripted, modelled latency).
    recognizer, tts : optional
        Stage objects (default PocketSphinx and eSpeak NG).
    max_utterance_s : float
    barge_in : bool
    clock : callable, optional
        ``clock() -> loop time``, read around compute-heavy stages (recognition final,
        synthesis) so their duration is counted.
    asr_upsample : {"fold", "soxr"}
        How 8 kHz audio reaches the 16 kHz recogniser: zero-stuffing ("fold", default:
        the 0-4 kHz band mirrored into 4-8 kHz, where the wideband model expects energy;
        PCMU calls' WER 0.93 -> 0.64 on the ARCTIC items, 0.62 adapted, docs/agent-turn.md) or a
        band-limited resampler ("soxr" HQ: nothing above 4 kHz). The VAD always hears the
        soxr version.
    asr_adapt : bool or str
        Used when ``recognizer`` is not given: on 8 kHz input the default recogniser
        applies the shipped narrowband MLLR transform for ``asr_upsample`` (True), none
        (False), or the transform at this path
        (:func:`~voicelab.pipeline.asr.narrowband_transform`).
    """

    PREROLL_MS = 300
    PARTIAL_EVERY = 10  # frames between partial hypotheses

    def __init__(self, *, sample_rate: int = 16000, frame_ms: int = 20, vad: Any = "webrtc", stop_ms: float = 300.0,
                 min_speech_ms: float = 100.0, responder: Any = None, recognizer: Any = None, tts: Any = None,
                 max_utterance_s: float = 15.0, barge_in: bool = True,
                 clock: Callable[[], float] | None = None, asr_upsample: str = "fold",
                 asr_adapt: bool | str = True) -> None:  # fmt: skip
        if sample_rate not in (8000, 16000, 24000, 48000):
            raise ParameterError(f"pipeline sample_rate must be 8000, 16000, 24000 or 48000, got {sample_rate!r}")
        if frame_ms not in (10, 20, 30, 40, 60):
            raise ParameterError(f"frame_ms must be 10, 20, 30, 40 or 60, got {frame_ms!r}")
        self.sample_rate, self.frame_ms = int(sample_rate), int(frame_ms)
        self.frame_samples = self.sample_rate * self.frame_ms // 1000
        self.frame_s = self.frame_ms / 1000.0
        self.vad = make_vad(vad) if isinstance(vad, str) else vad
        self.vad_name = vad if isinstance(vad, str) else type(vad).__name__
        self.endpointer = Endpointer(stop_ms=stop_ms, min_speech_ms=min_speech_ms)
        if asr_upsample not in ("soxr", "fold"):
            raise ParameterError(f"asr_upsample must be 'soxr' or 'fold', got {asr_upsample!r}")
        self.asr = recognizer or PocketSphinxRecognizer(16000, mllr=narrowband_transform(sample_rate, asr_upsample,
                                                                                          asr_adapt))  # fmt: skip
        self.responder = responder or make_responder(None)
        self.tts = tts or EspeakTts(self.sample_rate)
        self.max_utterance_s = float(max_utterance_s)
        self.barge_in_enabled = bool(barge_in)
        self.clock = clock
        self.asr_upsample = asr_upsample
        self._rs = None
        if self.sample_rate != 16000:
            import soxr

            self._rs = soxr.ResampleStream(self.sample_rate, 16000, 1, dtype="int16", quality="HQ")
        self.state = "listening"
        self.events: list[StageEvent] = []
        self.turns: list[AgentTurn] = []
        self.frames_in = 0
        self.frames_out = 0
        self._preroll: deque[np.ndarray] = deque(maxlen=max(1, self.PREROLL_MS // self.frame_ms))
        self._reply: ReplyStream | None = None
        self._consumed = 0  # tokens of the reply taken
        self._pending: list[str] = []  # tokens not yet in a clause
        self._clauses: deque[tuple[float, np.ndarray]] = deque()  # (ready at, int16 audio)
        self._cur: np.ndarray | None = None  # clause being sent
        self._tts_free_at = 0.0
        self._synthq: deque[tuple[float, Any, bool, str]] = deque()  # (text ready at, future, first, text): in a thread
        self._synth_count = 0  # clauses of this reply handed to the synthesiser
        self._fallback_done = False
        self._final_fut: Any = None  # a worker process's final, pending

    # ------------------------------------------------------------------ helpers
    def _to(self, what: str) -> None:
        key = (self.state, what)
        if key not in TRANSITIONS:
            raise LocalProtocolError(f"pipeline: no transition from {self.state!r} on {what!r}")
        self.state = TRANSITIONS[key]

    def _emit(self, name: str, t: float, data: Any = None) -> None:
        idx = self.turns[-1].index if self.turns else -1
        if len(self.events) < 100_000:
            self.events.append(StageEvent(name, t, idx, data))

    def _elapsed(self, start: float | None) -> float:
        return 0.0 if self.clock is None or start is None else max(0.0, self.clock() - start)

    def _tick(self) -> float | None:
        return None if self.clock is None else self.clock()

    @property
    def turn(self) -> AgentTurn | None:
        return self.turns[-1] if self.turns else None

    # ------------------------------------------------------------------ input
    def feed(self, frame: np.ndarray, now: float) -> None:
        """One frame of the caller's audio (int16, or float in -1..1) that started playing at ``now``."""
        if self.state == "closed":
            return
        x = np.asarray(frame)
        if x.dtype != np.int16:
            x = np.clip(np.round(np.asarray(x, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)
        self.frames_in += 1
        pcm16 = self._rs.resample_chunk(x) if self._rs is not None else x
        if self.asr_upsample == "fold" and self.sample_rate == 8000:
            # telephone band to the 16 kHz model by zero-stuffing: 0-4 kHz plus its mirror
            # image in 4-8 kHz, where the wideband model expects energy (docs/agent-turn.md)
            asr_pcm = fold(x)
        else:
            asr_pcm = pcm16
        self._preroll.append(asr_pcm)
        p = self.vad.probability(pcm16)
        ev = self.endpointer.update(p, now, self.frame_s)
        if self.state == "hearing":
            self.asr.feed(asr_pcm)
            t = self.turn
            t.last_speech = self.endpointer._last_speech if self.endpointer.in_speech else t.last_speech  # type: ignore[union-attr]
            if self.frames_in % self.PARTIAL_EVERY == 0:
                part = self.asr.partial()
                if part:
                    t.partials += 1  # type: ignore[union-attr]
                    self._emit("asr_partial", now + self.frame_s, part)
        if ev is not None and ev.kind == "speech_start":
            self._speech_start(ev.t, ev.speech_from)
        elif ev is not None and ev.kind == "speech_end" and self.state == "hearing":
            self.turn.last_speech = ev.last_speech  # type: ignore[union-attr]
            self._end_utterance(ev.t, "speech_end")
        elif self.state == "hearing" and now + self.frame_s - self.turn.speech_from >= self.max_utterance_s:  # type: ignore[union-attr]
            self.turn.reason = "max_utterance"  # type: ignore[union-attr]
            self.turn.last_speech = now + self.frame_s  # type: ignore[union-attr]
            self.endpointer.reset()
            self._end_utterance(now + self.frame_s, "max_utterance")
        self._advance(now)

    def _speech_start(self, t: float, speech_from: float) -> None:
        if self.state in ("thinking", "speaking"):
            if not self.barge_in_enabled and self.state == "speaking":
                return
            self._stop_reply()
            # the decision takes effect now: on a real-time loop that may be later than the
            # endpointer's stamp (the frame's release time) when the loop ran behind, and
            # that wait is part of detecting the barge-in, not of stopping after it
            now_ = self._tick()
            decided = t if now_ is None else max(t, now_)
            cur = self.turn
            cur.barge_in = decided  # type: ignore[union-attr]
            if cur.reason == "ok":  # type: ignore[union-attr]
                cur.reason = "barged_in" if self.state == "speaking" else "interrupted_before_reply"  # type: ignore[union-attr]
            self._emit("barge_in", decided)
        elif self.state == "hearing":  # pragma: no cover - the endpointer never starts twice
            return
        self._to("speech_start")
        self.turns.append(AgentTurn(index=len(self.turns), speech_start=t, speech_from=speech_from,
                                    llm_modelled=bool(getattr(self.responder, "modelled", True))))  # fmt: skip
        self._emit("speech_start", t)
        self.asr.start()
        for chunk in self._preroll:
            self.asr.feed(chunk)

    def _end_utterance(self, t: float, what: str) -> None:
        turn = self.turn
        turn.speech_end = t  # type: ignore[union-attr]
        self._to(what)
        self._emit("speech_end", t)
        self._drop_audio()
        if hasattr(self.asr, "final_async"):  # decoding in a worker process: the loop goes on meanwhile
            self._final_fut = self.asr.final_async()
            return
        c0 = self._tick()
        text = self.asr.final()
        self._after_final(text, t + self._elapsed(c0))

    def _after_final(self, text: str, t_final: float) -> None:
        turn = self.turn
        turn.asr_final, turn.text = t_final, text  # type: ignore[union-attr]
        if not text.strip() and turn.reason == "ok":  # type: ignore[union-attr]
            turn.reason = "empty_recognition"  # type: ignore[union-attr]
        self._emit("asr_final", t_final, text)
        self._reply = self.responder.respond(text, t_final)
        self._consumed, self._pending, self._fallback_done = 0, [], False
        self._drop_audio()
        self._synth_count = 0
        self._tts_free_at = t_final

    def _stop_reply(self) -> None:
        if self._final_fut is not None:  # a pending final of the interrupted utterance: dropped
            self._final_fut.cancel()
            self._final_fut = None
        if self._reply is not None:
            self._reply.cancel()
        self._reply = None
        self._drop_audio()
        self._pending = []

    def _drop_audio(self) -> None:
        """Forget the reply's synthesised and still-synthesising clauses."""
        self._clauses.clear()
        self._cur = None
        for _, fut, _, _ in self._synthq:
            fut.cancel()  # a clause already being synthesised finishes; its audio is ignored
        self._synthq.clear()

    # ------------------------------------------------------------------ thinking
    def _advance(self, now: float) -> None:
        fut = self._final_fut
        if fut is not None and self.state == "thinking":
            if not fut.done():
                return
            self._final_fut = None
            try:
                text, done_at = fut.result()
            except Exception as exc:  # noqa: BLE001 - the recogniser failed: nothing recognised
                text, done_at = "", now
                self._emit("asr_error", now, f"{type(exc).__name__}: {exc}")
            self._after_final(text, max(self.turn.speech_end, done_at))  # type: ignore[union-attr,arg-type]
        r = self._reply
        if r is None or self.state not in ("thinking", "speaking"):
            return
        turn = self.turn
        if r.error is not None and not self._fallback_done:
            self._fallback_done = True
            turn.llm_error = r.error  # type: ignore[union-attr]
            if turn.reason == "ok":  # type: ignore[union-attr]
                turn.reason = "llm_error"  # type: ignore[union-attr]
            # whatever arrived is dropped; the agent apologises instead
            fb = ReplyStream(tokens=[(now, tok) for tok in _tokens(FALLBACK_ERROR)], done_at=now, modelled=r.modelled)
            self._reply, r = fb, fb
            self._consumed, self._pending = 0, []
        elif r.error is None and not r.tokens and r.done_at is None and turn.asr_final is not None and \
                now - turn.asr_final > getattr(self.responder, "timeout_s", 30.0) + 1.0:  # type: ignore[union-attr]
            r.cancel()
            r.error = "llm timeout: no first token"
            return self._advance(now)
        new = r.available(now)[self._consumed :]
        for t_tok, tok in new:
            if self._consumed == 0:
                turn.llm_first_token = t_tok  # type: ignore[union-attr]
                self._emit("llm_first_token", t_tok)
            self._consumed += 1
            turn.reply_text += tok  # type: ignore[union-attr]
            self._pending.append(tok)
            clauses, self._pending = split_clauses(self._pending)
            for c in clauses:
                self._synth(c, t_tok)
        if self._pending and r.finished(now):
            t_last = r.tokens[-1][0] if r.tokens else now
            self._synth("".join(self._pending).strip(), max(t_last, r.done_at or t_last))
            self._pending = []
        if self._synthq:
            self._collect_synth()

    def _synth(self, text: str, t_ready_text: float) -> None:
        if not text:
            return
        first = self.turn.tts_first_audio is None and self._synth_count == 0  # type: ignore[union-attr]
        self._synth_count += 1
        if hasattr(self.tts, "synthesize_async"):  # in a thread: the loop goes on; collected by _collect_synth
            self._synthq.append((t_ready_text, self.tts.synthesize_async(text, first=first), first, text))
            return
        start = max(t_ready_text, self._tts_free_at)
        c0 = self._tick()
        pcm = self.tts.synthesize(text, first=first)
        self._clause_ready(max(start, start + self._elapsed(c0)), pcm, first, text)

    def _clause_ready(self, ready: float, pcm: np.ndarray, first: bool, text: str) -> None:
        self._tts_free_at = ready
        self._clauses.append((ready, pcm))
        if first:
            self.turn.tts_first_audio = ready  # type: ignore[union-attr]
            self._emit("tts_first_audio", ready, text)

    def _collect_synth(self) -> None:
        """Take the clauses the synthesis thread has finished, in order (ready when it finished)."""
        while self._synthq and self._synthq[0][1].done():
            t_text, fut, first, text = self._synthq.popleft()
            try:
                pcm, done_at = fut.result()
            except Exception as exc:  # noqa: BLE001 - the clause is skipped, the reply goes on
                self._emit("tts_error", self._tts_free_at, f"{type(exc).__name__}: {exc}")
                continue
            self._clause_ready(max(t_text, self._tts_free_at, done_at), pcm, first, text)

    # ------------------------------------------------------------------ output
    def next_frame(self, now: float) -> np.ndarray | None:
        """The agent's frame to send at ``now`` (int16 at ``sample_rate``), or None (nothing to say)."""
        if self.state == "closed":
            return None
        self._advance(now)
        if self.state not in ("thinking", "speaking"):
            return None
        F = self.frame_samples
        out = np.zeros(F, dtype=np.int16)
        filled = 0
        while filled < F:
            if self._cur is None or len(self._cur) == 0:
                if self._clauses and self._clauses[0][0] <= now + 1e-9:
                    self._cur = self._clauses.popleft()[1]
                else:
                    break
            n = min(F - filled, len(self._cur))
            out[filled : filled + n] = self._cur[:n]
            self._cur = self._cur[n:]
            filled += n
        turn = self.turn
        if filled and self.state == "thinking":
            self._to("reply_start")
            # (the audio was ready within float rounding of now: never before its synthesis)
            turn.reply_start = max(now, turn.tts_first_audio or now)  # type: ignore[union-attr]
            self._emit("reply_start", turn.reply_start)  # type: ignore[union-attr]
        if self.state == "speaking":
            self.frames_out += 1
            done = (self._reply is not None and self._reply.finished(now) and not self._pending and not self._clauses
                    and not self._synthq and (self._cur is None or len(self._cur) == 0))  # fmt: skip
            if done:
                turn.reply_end = now + self.frame_s  # type: ignore[union-attr]
                self._emit("reply_end", now + self.frame_s)
                self._to("reply_end")
                self._reply = None
            return out
        return None

    def close(self, now: float, reason: str = "caller_hung_up") -> None:
        """The call ended: an unfinished turn is recorded with ``reason``; pending work is cancelled."""
        if self.state in ("hearing", "thinking", "speaking") and self.turn is not None and self.turn.reason == "ok":
            self.turn.reason = reason
        if self.state != "closed":
            self._emit("close", now, reason)
        self._stop_reply()
        self._to("close")
        if hasattr(self.asr, "close"):
            self.asr.close()

    def summary(self) -> dict[str, Any]:
        """Per-turn records and counts (what the agent reports for a call)."""
        return {"vad": self.vad_name, "turns": [t.as_dict() for t in self.turns],
                "responder": self.responder.describe() if hasattr(self.responder, "describe") else {},
                "frames_in": self.frames_in, "frames_out": self.frames_out}  # fmt: skip
