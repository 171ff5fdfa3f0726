"""The Pipecat bot as a third-party far end (voicelab.pipecat_bot, voicelab.pipecat_turns).

Live tests: 10 turns over Pipecat's WebSocket server transport with its Twilio serializer
and 10 over its SmallWebRTC transport, measured at the caller's ear. They need
``pipecat-ai`` (the extra ``voicelab[agents]``): skipped locally without it, failed in CI.
The caller says short eSpeak NG sentences and the bot gives one short scripted reply so
that ten turns take ~25 s per transport (the lab's ARCTIC items and replies: 6-8 s a turn).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, need

# no commas: a clause pause can end a VAD segment early and split the turn
PHRASES = ("Hello there.", "Good morning to you.", "I need some help.", "What time is it now.", "Thank you very much.")


def _need_pipecat() -> None:
    from voicelab.pipecat_bot import PIP_EXTRA, pipecat_available

    need(pipecat_available(), f"pipecat-ai not installed (pip install '{PIP_EXTRA}')")


def _utterances(n: int):
    from voicelab.audio.espeak import synthesize
    from voicelab.turns import Utterance

    out = []
    for i in range(n):
        s = PHRASES[i % len(PHRASES)]
        x = np.concatenate([synthesize(s, sample_rate=16000), np.zeros(1600)])
        out.append(Utterance(f"short_{i:02d}", x, s, synthetic=True))
    return out


def _run(transport: str, n: int) -> dict:
    from voicelab.pipecat_turns import pipecat_call

    return asyncio.run(asyncio.wait_for(pipecat_call(
        transport=transport, turns=n, utterances=_utterances(n), replies="short", stop_ms=400.0, llm_ttft_s=0.05, llm_sigma=0.0,
        reply_end_silence_s=0.4, gap_s=0.2, reply_timeout_s=5.0), 90.0))  # fmt: skip


def _check_common(res: dict, n: int) -> None:
    assert res["turn.count"] == n
    assert res["turn.answered"] == n, [r.get("reason") for r in res["turns"]]
    assert res["turn.outcomes"] == {"ok": n}
    assert len(res["agent"]) >= n  # one bot turn per utterance (false cut-offs would add more)
    for r in res["turns"]:
        # the caller hears the reply after the bot sent it
        assert r["total_ms"] > r["server_ms"] > 0
        assert r["recognised"].strip(), r
    # Pipecat's own figure beside the caller's (missing where a split utterance made the bot
    # answer while still talking: no new BotStartedSpeakingFrame, so no figure)
    withp = [r for r in res["turns"] if r.get("pipecat_ms") is not None]
    assert len(withp) >= n - 2, [r.get("agent_turns") for r in res["turns"]]
    for r in withp:
        assert r["pipecat_ms"] > 0
        assert r["pipecat_diff_ms"] == pytest.approx(r["total_ms"] - r["pipecat_ms"])
    assert res["turn.pipecat_ms.p50"] is not None and res["turn.pipecat_diff_ms.max"] is not None
    # Pipecat's own per-service metrics frames came through (enable_metrics)
    assert res["pipecat_metrics_ms.p50"].get("ttfb.PocketSphinxSTTService", 0) > 0
    assert res["turn.wer"] is not None  # what the bot understood, per turn and overall
    assert not res["agent_errors"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_pipecat_bot_answers_ten_turns_over_websocket():
    _need_pipecat()
    res = _run("ws", 10)
    _check_common(res, 10)
    assert res["codec"] == "pcmu"
    for r in res["turns"]:
        # both ends stamp chunks on one loop clock: the lab's breakdown applies and adds up
        assert "residual_ms" in r, r.get("reason")
        assert abs(r["residual_ms"]) <= 2.0, r
        assert r["agent_jitter_buffer_ms"] == 0.0  # Pipecat feeds frames straight to its VAD
    # Silero waits stop_secs = 0.4 s of what it calls silence (it may start counting in the
    # quiet tail before the last sample the caller's ground truth calls speech, or end a
    # segment inside an utterance: then a turn's wait is short or even negative)
    assert res["turn.endpointing_wait_ms.p50"] >= 0.6 * 400.0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_pipecat_bot_answers_ten_turns_over_webrtc():
    _need_pipecat()
    res = _run("webrtc", 10)
    _check_common(res, 10)
    assert res["codec"] == "opus" and res["frames_heard"] > 100
    for r in res["turns"]:
        assert "breakdown not measured" in r["reason"]


def test_pipecat_bot_refuses_bad_parameters_and_bad_offers():
    _need_pipecat()
    from voicelab.errors import ParameterError
    from voicelab.pipecat_bot import PipecatBot

    for kw in ({"transport": "sip"}, {"stop_ms": 10}, {"stop_ms": True}, {"replies": "long"}, {"llm_ttft_s": -1}):
        with pytest.raises(ParameterError):
            PipecatBot(**kw)

    async def bad_offer():
        import aiohttp

        async with PipecatBot("webrtc") as bot:
            statuses = []
            async with aiohttp.ClientSession() as http:
                for body in ({"sdp": 5, "type": "answer"}, {"sdp": "v=0 nonsense", "type": "offer"}):
                    async with http.post(bot.url, json=body) as resp:
                        statuses.append(resp.status)
            return statuses, bot.sessions

    statuses, sessions = asyncio.run(bad_offer())
    assert statuses == [400, 400] and sessions == []


def test_timeline_matches_stages_and_pipecat_figure_to_turns():
    _need_pipecat()
    from voicelab.pipecat_bot import _classes, _Timeline

    C = _classes()

    async def go():
        tl = _Timeline()
        loop = asyncio.get_running_loop()
        D, U = C["FrameDirection"].DOWNSTREAM, C["FrameDirection"].UPSTREAM
        tl.saw("vad", C["VADStart"](), D)
        tl.saw("vad", C["VADStop"](stop_secs=0.3), D)
        tl.saw("stt", C["Transcription"]("", "", "t"), D)
        tl.saw("llm", C["LLMText"]("Sorry"), D)
        tl.saw("tts", C["TTSAudio"](audio=b"\0\0", sample_rate=8000, num_channels=1), D)
        tl.saw("out", C["BotStarted"](), U)
        tl.on_latency(0.5)
        tl.saw("vad", C["VADStart"](), U)  # upstream copies of broadcast frames are not turns
        return tl.summary(), loop.time()

    s, now = asyncio.run(go())
    (t,) = s["turns"]
    assert t["reason"] == "empty_recognition" and t["text"] == ""
    order = [t[k] for k in ("speech_start", "speech_end", "asr_final", "llm_first_token", "tts_first_audio", "reply_start")]
    assert order == sorted(order) and order[-1] <= now
    assert t["pipecat_ms"] == pytest.approx(500.0)
    assert t["server_ms"] == pytest.approx((t["reply_start"] - t["speech_end"]) * 1000.0)


def test_cli_pipecat_bad_transport_is_one_line():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "voicelab", "call", "--agent", "pipecat", "--transport", "sip", "--json"],
                       capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert "ws" in p.stderr and "webrtc" in p.stderr


def test_missing_pipecat_is_a_clear_error_naming_the_extra(monkeypatch):
    from voicelab.errors import ToolUnavailableError
    from voicelab.pipecat_bot import PipecatBot, pipecat_available

    monkeypatch.setitem(sys.modules, "pipecat", None)
    assert not pipecat_available()
    with pytest.raises(ToolUnavailableError, match=r"voicelab\[agents\]"):
        PipecatBot("ws")
