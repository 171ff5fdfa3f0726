"""The agent pipeline's stages on a fake clock: VAD/endpointing, ASR, responder, TTS, barge-in, bad input."""

from __future__ import annotations

import asyncio
import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.errors import LocalProtocolError, ParameterError, ToolUnavailableError
from voicelab.pipeline import Pipeline, wer
from voicelab.pipeline.core import TRANSITIONS
from voicelab.pipeline.respond import FALLBACK_EMPTY, FALLBACK_ERROR, LlmLatencyModel, OpenAIChatResponder, ScriptedResponder
from voicelab.pipeline.vad import Endpointer, SileroVad, WebRtcVad, silero_model_path
from voicelab.pipeline.wer import normalize, word_errors

RATE = 16000
F = RATE // 50


@functools.lru_cache(maxsize=None)
def _say(text: str, rate: int = RATE) -> np.ndarray:
    from voicelab.audio.espeak import synthesize

    x = synthesize(text, sample_rate=rate)
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def _frames(*parts: np.ndarray) -> np.ndarray:
    x = np.concatenate(parts)
    return np.concatenate([x, np.zeros((-len(x)) % F, dtype=np.int16)])


def _silence(s: float) -> np.ndarray:
    return np.zeros(int(s * RATE), dtype=np.int16)


def _run(p: Pipeline, pcm: np.ndarray, *, t0: float = 0.0, extra_s: float = 0.0) -> list[np.ndarray | None]:
    """Feed 20 ms frames at a fake clock (frame k starts at t0 + k*20 ms) and drain the agent's frames."""
    out = []
    n = len(pcm) // F + int(extra_s * 50)
    for k in range(n):
        now = t0 + k * 0.02
        frame = pcm[k * F : (k + 1) * F] if k * F < len(pcm) else np.zeros(F, np.int16)
        p.feed(frame, now)
        out.append(p.next_frame(now + 0.02))
    return out


def _fixed(ttft=0.3, tps=50.0, seed=0):
    return ScriptedResponder(LlmLatencyModel(ttft, 0.0, tps), seed=seed)


# ----------------------------------------------------------------------------- WER
def test_wer_counts_edits_over_reference_words_after_normalising():
    assert wer("Will we ever forget it?", "will we ever forget it") == 0.0
    assert word_errors("a b c", "a x c d") == (2, 3)  # one substitution, one insertion
    assert wer("God bless 'em, I hope", "god bless em i hope") == 0.0
    assert normalize("Tom's 2 DOGS!") == ["tom's", "two", "dogs"]
    assert wer("", "") == 0.0 and wer("", "x") == 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("a b c d e".split()), max_size=8), st.lists(st.sampled_from("a b c d e".split()), max_size=8))
def test_wer_is_a_distance(ref, hyp):
    r, h = " ".join(ref), " ".join(hyp)
    e, n = word_errors(r, h)
    assert e == word_errors(h, r)[0]  # symmetric edit distance
    assert abs(len(ref) - len(hyp)) <= e <= max(len(ref), len(hyp))
    assert (e == 0) == (ref == hyp)


# ----------------------------------------------------------------------------- VAD / endpointing
def test_endpointer_start_after_min_speech_and_end_after_stop_ms():
    ep = Endpointer(min_speech_ms=100, stop_ms=300)
    probs = [0.0] * 10 + [1.0] * 20 + [0.0] * 30
    evs = [e for k, p in enumerate(probs) if (e := ep.update(p, k * 0.02, 0.02)) is not None]
    assert [e.kind for e in evs] == ["speech_start", "speech_end"]
    assert evs[0].t == pytest.approx((10 + 5) * 0.02) and evs[0].speech_from == pytest.approx(0.2)
    assert evs[1].last_speech == pytest.approx(30 * 0.02)
    assert evs[1].t == pytest.approx(30 * 0.02 + 0.3)


def test_endpointer_ignores_a_click_shorter_than_min_speech():
    ep = Endpointer(min_speech_ms=100, stop_ms=300)
    assert all(ep.update(p, k * 0.02, 0.02) is None for k, p in enumerate([1, 1, 0, 0, 1, 0] * 5))


@pytest.mark.parametrize("make", [WebRtcVad, SileroVad])
def test_vads_tell_speech_from_silence(make):
    vad = make()
    speech = _say("The birch canoe slid on the smooth planks.")
    p_speech = [vad.probability(speech[i : i + F]) for i in range(0, len(speech) - F, F)]
    vad.reset()
    p_sil = [vad.probability(np.zeros(F, np.int16)) for _ in range(50)]
    assert np.mean(p_speech) > 0.4 and max(p_sil) < 0.5


def test_silero_without_pipecat_names_the_package(monkeypatch):
    import importlib.resources

    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(ToolUnavailableError, match="pipecat-ai.*webrtc"):
        silero_model_path()


def test_bad_parameters_are_one_line_errors():
    with pytest.raises(ParameterError):
        Endpointer(stop_ms=-1)
    with pytest.raises(ParameterError):
        Pipeline(vad="nope")
    with pytest.raises(ParameterError):
        LlmLatencyModel(tokens_per_s=0)
    with pytest.raises(ParameterError):
        OpenAIChatResponder("ftp://x")


# ----------------------------------------------------------------------------- one turn
def test_one_turn_events_in_order_with_the_modelled_llm_latency():
    p = Pipeline(sample_rate=RATE, stop_ms=300, responder=_fixed(ttft=0.3))
    out = _run(p, _frames(_silence(0.5), _say("Hello there."), _silence(6.0)))
    names = [e.name for e in p.events if e.name != "asr_partial"]
    assert names == ["speech_start", "speech_end", "asr_final", "llm_first_token", "tts_first_audio", "reply_start", "reply_end"]
    t = p.turns[0]
    assert t.text and t.reason == "ok"  # (what PocketSphinx makes of eSpeak is not the point here)
    assert t.reply_text == p.responder.reply_text(t.text)  # the scripted reply keyed on what was recognised
    assert t.speech_end - t.last_speech == pytest.approx(0.3, abs=0.021)  # stop_ms of silence after the last speech frame
    assert t.asr_final == t.speech_end  # no clock given: computing takes no time
    assert t.llm_first_token - t.asr_final == pytest.approx(0.3)  # sigma 0: exactly the median
    assert t.llm_first_token <= t.tts_first_audio <= t.reply_start < t.reply_end
    assert t.reply_start - t.tts_first_audio < 0.02 + 1e-9  # the next send tick
    assert t.server_ms == pytest.approx((t.reply_start - t.speech_end) * 1000)
    sent = [f for f in out if f is not None]
    assert np.abs(sent[0]).max() > 300  # the first reply frame carries sound (leading silence trimmed)
    assert p.state == "listening"


def test_first_audio_leaves_before_the_reply_is_written():
    p = Pipeline(sample_rate=RATE, responder=_fixed(ttft=0.2, tps=5.0), recognizer=_Deaf())  # slow tokens
    _run(p, _frames(_silence(0.3), _say("Hello there."), _silence(6.0)))
    t = p.turns[0]
    last_token = t.llm_first_token + (len(t.reply_text.split()) - 1) / 5.0
    assert t.tts_first_audio < last_token - 1.0
    assert t.reply_start < last_token


def test_synthesis_in_a_thread_never_holds_the_caller_of_next_frame():
    """A ThreadedTts (what a real-time loop gets): the clause is synthesised in the thread
    while next_frame keeps returning at once; its audio goes out at the first tick after the
    thread finished, stamped with the clock the thread read; the audio is the inline one."""
    import threading

    from voicelab.pipeline.tts import EspeakTts, ThreadedTts

    gate = threading.Event()
    clock = {"now": 0.0}

    class GatedTts(EspeakTts):
        def synthesize(self, text, *, first):
            assert gate.wait(30.0)  # held until the test lets it go: the loop side must not wait for it
            return super().synthesize(text, first=first)

    tts = ThreadedTts(GatedTts(RATE), clock=lambda: clock["now"])
    p = Pipeline(sample_rate=RATE, responder=_fixed(ttft=0.2), recognizer=_Heard(), tts=tts)
    pcm = _frames(_silence(0.3), _say("Hello there."), _silence(1.0))
    out = _run(p, pcm)  # tokens arrive, clauses are queued to the thread, which is held
    assert p.state == "thinking" and p._synthq and all(f is None for f in out)
    t_open = len(pcm) / RATE + 0.5
    for k in range(5):  # the loop keeps ticking, nothing to send yet
        assert p.next_frame(len(pcm) / RATE + k * 0.02) is None
    clock["now"] = t_open  # the thread finishes "now"
    gate.set()
    for _, fut, _, _ in list(p._synthq):
        fut.result(30.0)
    t = p.turns[0]
    sent = [p.next_frame(t_open + k * 0.02) for k in range(400)]
    assert t.tts_first_audio == pytest.approx(t_open)  # ready when the thread was done
    assert t.reply_start == pytest.approx(t_open) and t.reply_end is not None
    # the same reply audio as inline synthesis (the reference pipeline synthesises on the caller)
    q = Pipeline(sample_rate=RATE, responder=_fixed(ttft=0.2), recognizer=_Heard())
    inline = np.concatenate([f for f in _run(q, pcm, extra_s=6.0) if f is not None])
    audio = np.concatenate([f for f in sent if f is not None])
    assert q.turns[0].reply_text == t.reply_text and len(audio) == len(inline) > RATE // 2
    assert np.array_equal(audio, inline)


def test_state_table_rejects_a_missing_transition():
    p = Pipeline(sample_rate=RATE)
    assert ("listening", "reply_end") not in TRANSITIONS
    with pytest.raises(LocalProtocolError):
        p._to("reply_end")


# ----------------------------------------------------------------------------- barge-in
def test_barge_in_stops_the_reply_within_min_speech_plus_a_frame():
    p = Pipeline(sample_rate=RATE, min_speech_ms=100, responder=_fixed(ttft=0.2), recognizer=_Heard())
    first = _frames(_silence(0.3), _say("Hello there."), _silence(1.0))
    _run(p, first)
    t = p.turns[0]
    assert t.reply_start is not None and p.state == "speaking"
    t_barge = len(first) / RATE  # the caller starts talking again now
    out = _run(p, _frames(_say("Will we ever forget it?"), _silence(3.0)), t0=t_barge)
    assert t.reason == "barged_in" and t.barge_in is not None
    silent_from = next(k for k, f in enumerate(out) if f is None)
    stop_s = silent_from * 0.02
    onset = np.flatnonzero(np.abs(_say("Will we ever forget it?")) > 300)[0] / RATE
    assert stop_s - onset <= 0.1 + 0.02 + 0.021  # min_speech + the frame deciding it + one frame
    assert [e.name for e in p.events].count("barge_in") == 1
    assert len(p.turns) == 2 and p.turns[1].reply_start is not None  # the new utterance is answered


# ----------------------------------------------------------------------------- bad input
class _Deaf:
    def start(self):
        pass

    def feed(self, pcm):
        pass

    def partial(self):
        return ""

    def final(self):
        return ""


class _Heard(_Deaf):
    def final(self):
        return "hello there"


def test_nothing_recognised_is_recorded_and_answered_with_a_fallback():
    p = Pipeline(sample_rate=RATE, recognizer=_Deaf(), responder=_fixed())
    _run(p, _frames(_silence(0.3), _say("Hello there."), _silence(6.0)))
    t = p.turns[0]
    assert t.reason == "empty_recognition" and t.text == ""
    assert t.reply_text.strip() == FALLBACK_EMPTY and t.reply_end is not None


def test_a_caller_who_never_stops_is_cut_off_and_the_agent_goes_on():
    talk = _say("The birch canoe slid on the smooth planks, glue the sheet to the dark blue background.")
    p = Pipeline(sample_rate=RATE, max_utterance_s=1.5, responder=_fixed(), recognizer=_Deaf())
    _run(p, _frames(talk))
    t = p.turns[0]
    assert t.reason == "max_utterance"
    assert t.speech_end - t.speech_from == pytest.approx(1.5, abs=0.021)
    assert len(p.turns) >= 2  # still listening and answering


def test_hang_up_mid_reply_is_recorded_and_the_pipeline_stops():
    p = Pipeline(sample_rate=RATE, responder=_fixed(ttft=0.1), recognizer=_Heard())
    _run(p, _frames(_silence(0.3), _say("Hello there."), _silence(1.0)))
    assert p.state == "speaking"
    p.close(10.0)
    assert p.turns[0].reason == "caller_hung_up" and p.state == "closed"
    assert p.next_frame(10.02) is None
    p.feed(np.zeros(F, np.int16), 10.04)  # frames after the hang-up are ignored


# ----------------------------------------------------------------------------- the LLM client
async def _drive(p: Pipeline, pcm: np.ndarray, until_s: float) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    k = 0
    while loop.time() - t0 < until_s:  # one frame per 20 ms of loop time, as a jitter buffer plays out
        frame = pcm[k * F : (k + 1) * F] if k * F < len(pcm) else np.zeros(F, np.int16)
        p.feed(frame, t0 + k * 0.02)
        p.next_frame(t0 + (k + 1) * 0.02)
        k += 1
        if p.turns and p.turns[0].reply_start is not None:  # the reply (or apology) has started
            return
        await asyncio.sleep(max(0.0, t0 + k * 0.02 - loop.time()))


async def _sse_server(mode: str):
    """A tiny OpenAI-compatible endpoint: 'ok' streams two chunks, 'stall' never answers."""
    from aiohttp import web

    async def handler(request):
        if mode == "stall":
            await asyncio.sleep(30)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ("Sure, ", "I can help."):
            await resp.write(f'data: {{"choices": [{{"delta": {{"content": "{piece}"}}}}]}}\n\n'.encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("mode", ["ok", "refused", "stall"])
def test_llm_endpoint_streams_or_fails_with_a_reason_and_the_agent_still_answers(mode):
    pcm = _frames(_silence(0.2), _say("Hello there."), _silence(0.1))

    async def main():
        import socket

        runner = None
        if mode == "refused":
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
            s.close()  # nobody listens there
        else:
            runner, url = await _sse_server(mode)
        try:
            p = Pipeline(sample_rate=RATE, responder=OpenAIChatResponder(url, timeout_s=0.5), recognizer=_Heard())
            await asyncio.wait_for(_drive(p, pcm, 6.0), 10.0)
            return p
        finally:
            if runner is not None:
                await runner.cleanup()

    p = asyncio.run(main())
    t = p.turns[0]
    assert t.llm_modelled is False and t.reply_start is not None
    if mode == "ok":
        assert t.reason == "ok" and t.reply_text == "Sure, I can help."
    else:
        assert t.reason == "llm_error" and t.reply_text.strip() == FALLBACK_ERROR
        assert ("timeout" in t.llm_error) if mode == "stall" else ("refused" in t.llm_error)


# ----------------------------------------------------------------------------- the state table under any input
class _LevelVad:
    """Speech when the frame is not silent (fast, exact)."""

    def probability(self, pcm):
        return 1.0 if np.abs(pcm).max() > 0 else 0.0

    def reset(self):
        pass


class _BeepTts:
    def synthesize(self, text, *, first):
        return np.full(RATE * len(text.split()) // 10, 1000, dtype=np.int16)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 50)), min_size=1, max_size=8), st.integers(0, 3))
def test_any_talk_pattern_keeps_the_turn_records_consistent(blocks, seed):
    p = Pipeline(sample_rate=RATE, vad=_LevelVad(), recognizer=_Heard(), tts=_BeepTts(), responder=_fixed(0.1, 40.0, seed),
                 max_utterance_s=0.8)  # fmt: skip
    k = 0
    for talking, n in blocks + [(False, 100)]:
        for _ in range(n):
            p.feed(np.full(F, 500 if talking else 0, np.int16), k * 0.02)
            f = p.next_frame((k + 1) * 0.02)
            assert f is None or len(f) == F
            k += 1
    assert p.state in ("listening", "hearing", "thinking", "speaking")
    times = [e.t for e in p.events if e.name != "asr_partial"]
    for t in p.turns:
        seq = [x for x in (t.speech_start, t.speech_end, t.asr_final, t.llm_first_token, t.tts_first_audio, t.reply_start)
               if x is not None]  # fmt: skip
        assert seq == sorted(seq)
        assert t.reason in ("ok", "barged_in", "interrupted_before_reply", "max_utterance")
        if t.reason == "ok":
            assert t.reply_end is not None or t is p.turns[-1]
    assert len(times) == len([e for e in p.events if e.name != "asr_partial"])
    p.close(k * 0.02)
    assert p.state == "closed"
