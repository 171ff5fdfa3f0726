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


def _run(transport: str, n: int, **kw) -> dict:
    from voicelab.pipecat_turns import pipecat_call

    opts = dict(replies="short", stop_ms=400.0, llm_ttft_s=0.05, llm_sigma=0.0, reply_end_silence_s=0.4, gap_s=0.2,
                reply_timeout_s=5.0)
    opts.update(kw)
    return asyncio.run(asyncio.wait_for(pipecat_call(transport=transport, turns=n, utterances=_utterances(n), **opts),
                                        90.0))  # fmt: skip


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


def test_cli_pipecat_bad_options_are_one_line():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for extra, says in ((["--net", "vnet"], "loopback"), (["--llm", "http://127.0.0.1:9/v1"], "scripted")):
        p = subprocess.run([sys.executable, "-m", "voicelab", "call", "--agent", "pipecat", "--transport", "sip", *extra,
                            "--json"], capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
        assert p.returncode != 0
        assert "Traceback" not in p.stderr
        assert says in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_missing_pipecat_is_a_clear_error_naming_the_extra(monkeypatch):
    from voicelab.errors import ToolUnavailableError
    from voicelab.pipecat_bot import PipecatBot, pipecat_available

    monkeypatch.setitem(sys.modules, "pipecat", None)
    assert not pipecat_available()
    with pytest.raises(ToolUnavailableError, match=r"voicelab\[agents\]"):
        PipecatBot("ws")


def _check_hops(res: dict) -> None:
    """The SIP-bridge path's per-hop parts telescope into the breakdown's network parts."""
    for r in res["turns"]:
        assert abs(r["residual_ms"]) <= 2.0, r
        up = r["sip_up_ms"] + r["bridge_up_ms"] + r["ws_up_ms"]
        down = r["ws_down_ms"] + r["bridge_down_ms"] + r["sip_down_ms"]
        assert up == pytest.approx(r["network_up_ms"] + r["agent_jitter_buffer_ms"], abs=1e-6)
        assert down == pytest.approx(r["network_down_ms"], abs=1e-6)
        assert min(r["sip_up_ms"], r["ws_up_ms"], r["ws_down_ms"], r["sip_down_ms"]) >= 0.0
        # the bridge's buffers: one fixed 40 ms buffer each way (less the frame phase)
        assert 0.0 <= r["bridge_up_ms"] <= 60.0 and 0.0 <= r["bridge_down_ms"] <= 60.0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sip_caller_reaches_the_pipecat_bot_through_the_media_stream_bridge():
    _need_pipecat()
    res = _run("sip", 3)
    _check_common(res, 3)
    assert res["codec"] == "pcmu" and res["bridge"]["hung_up_by"] == "caller" and not res["bridge_errors"]
    _check_hops(res)
    assert res["turn.sip_up_ms.p50"] is not None and res["turn.bridge_down_ms.p50"] is not None


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_barge_in_stops_the_pipecat_bots_reply_at_the_callers_ear():
    _need_pipecat()
    # the lab's replies (2-4 s of speech); the caller talks over each 0.5 s into it
    res = _run("ws", 3, replies="lab", barge_in_after_s=0.5)
    assert res["turn.answered"] == 3, [r.get("reason") for r in res["turns"]]
    barged = [r for r in res["turns"][:-1]]
    assert all("barge_in_stop_ms" in r for r in barged), [r.get("reason") for r in barged]
    # Pipecat interrupted (Silero start -> InterruptionFrame) and sent Twilio's 'clear',
    # and the caller's platform dropped what it had buffered
    assert res["bot_clears"] >= 2 and res["caller_clears"] >= 2
    for i, r in enumerate(barged):
        nxt = res["turns"][i + 1]
        assert nxt["barge_in"]
        window_ms = 1000.0 * len(_utterances(3)[i + 1].samples) / 16000.0
        # stopped well inside the caller's barge-in utterance (a reply that kept playing would
        # be heard to its end: 2-4 s), within start_secs + the path + Silero's smoothing
        assert 0.0 < r["barge_in_stop_ms"] < min(1000.0, window_ms), (r["barge_in_stop_ms"], window_ms)
    assert res["turn.barge_in_stop_ms.p50"] is not None


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_pipecat_turns_over_an_impaired_websocket_path():
    _need_pipecat()
    from voicelab.net import ChannelConfig

    res = _run("ws", 3, net=ChannelConfig(delay_ms=30.0, jitter_ms=5.0, loss_rate=0.05), seed=2)
    _check_common(res, 3)
    assert res["net"] == "loopback+tcprelay" and res["net_config"]["loss_rate"] == 0.05
    # loss on a TCP path is delay: segments were resent, nothing lost, the breakdown still adds up
    assert res["tcp_retransmissions"]["up"] + res["tcp_retransmissions"]["down"] > 0
    for r in res["turns"]:
        assert abs(r["residual_ms"]) <= 2.0, r
        assert r["network_up_ms"] >= 30.0 - 5.0 * 4 and r["network_down_ms"] >= 30.0 - 5.0 * 4
