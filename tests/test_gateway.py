"""The SIP <-> WebRTC gateway: a WebRTC caller bridged to a SIP agent (and to baresip).

Real time on 127.0.0.1, everything on one event loop (so every recording is stamped on one
clock). Checked: the browser-side call sets up a SIP leg, audio crosses both ways through
the gateway (transcoding Opus 48 kHz <-> G.711 8 kHz per frame), the gateway's own added
delay is its resampler's (about 1 ms), hanging up the WebRTC side sends a BYE on the SIP leg,
and a SIP leg that cannot be set up refuses the offer.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.conftest import run_clean
from tests.test_webrtc_agent import JB, _speech, _webrtc_caller
from voicelab import audio
from voicelab.agent import Agent
from voicelab.audio import StreamResampler
from voicelab.calls import measure_direction
from voicelab.errors import ParameterError, RemoteProtocolError, VoicelabError
from voicelab.gateway import Gateway, bridge_delay_ms


@pytest.mark.parametrize("a,b", [(48000, 8000), (8000, 48000), (16000, 48000), (48000, 16000), (8000, 16000)])
def test_stream_resampler_is_exact_low_latency_and_seamless(a, b):
    r = StreamResampler(a, b)
    t = np.arange(a) / a
    x = np.sin(2 * np.pi * 440 * t)
    frame = a // 50
    y = np.concatenate([r.process(x[i:i + frame]) for i in range(0, len(x), frame)])
    assert len(y) == b  # one second in, one second out, frame by frame
    assert r.delay_s <= 0.0011
    ref = np.sin(2 * np.pi * 440 * (np.arange(len(y)) / b - r.delay_s))
    assert np.max(np.abs(y[200:] - ref[200:])) < 0.002  # no edges between 20 ms chunks
    with pytest.raises(ParameterError):
        StreamResampler(44100, 8001)


def test_gateway_parameters():
    with pytest.raises(ParameterError, match="SIP URI"):
        Gateway(target="127.0.0.1:5060")
    with pytest.raises(ParameterError, match="SIP leg offers"):
        Gateway(target="sip:a@127.0.0.1:5060", sip_codec="amr")
    with pytest.raises(ParameterError, match="webrtc_codecs"):
        Gateway(target="sip:a@127.0.0.1:5060", webrtc_codecs=("g729",))


def test_browser_to_sip_agent_through_the_gateway(natural_env):
    x16 = _speech(3.0)

    async def main():
        # deep buffers everywhere: a stall of this process (other jobs on the 2 cores, a full GC)
        # must not turn into concealment, which would measure the machine, not the bridge
        async with Agent(codecs=["pcmu"], mode="echo", jitter_buffer=JB) as agent:
            async with Gateway(target=agent.uri, sip_codec="pcmu", jitter_buffer=JB) as gw:
                r = await _webrtc_caller(gw.front, x16, jitter_buffer=JB, tail_s=1.6)
                await asyncio.wait_for(gw.front.ended(1), 10)
                await asyncio.wait_for(agent.ended(1), 10)  # the BYE crossed to the SIP side
                call = list(gw.front.finished.values())[-1]
                leg = gw.legs[call.id]
                return r, call, leg, bridge_delay_ms(leg, call), list(gw.front.errors)

    r, call, leg, bridge, errors = run_clean(main, timeout=90)
    assert errors == [] and leg.errors == []
    assert call.codec == "opus" and leg.sip_codec == "pcmu" and leg.setup_ms < 1000
    # the gateway's own processing: the streaming FIR (1 ms), each way
    assert bridge["browser_to_sip"] == pytest.approx(1.0, abs=0.5)
    assert bridge["sip_to_browser"] == pytest.approx(1.0, abs=0.5)
    # the caller hears its own speech back through Opus -> G.711 -> echo -> G.711 -> Opus
    sent, t_sent = r["track"].sent_audio()
    recv, t_recv = r["sink"].received_audio()
    echo = measure_direction(sent, t_sent, recv, t_recv, 48000, x16)
    assert echo["pesq_nb"] > 3.8, echo
    # narrowband in the middle: the wideband score shows the band limit
    assert echo["pesq_wb"] < echo["pesq_nb"]


def test_a_sip_leg_that_fails_refuses_the_offer(natural_env):
    x16 = _speech(1.0)

    async def main():
        async with Agent(codecs=["pcma"], mode="echo") as agent:  # offers no PCMU: 488
            async with Gateway(target=agent.uri, sip_codec="pcmu") as gw:
                with pytest.raises((RemoteProtocolError, VoicelabError)) as ei:
                    await _webrtc_caller(gw.front, x16)
                return str(ei.value), list(gw.legs.values())

    msg, legs = run_clean(main, timeout=60)
    assert "offer" in msg or "488" in msg or "failed" in msg
    assert legs and all(leg.ended for leg in legs)


def test_matching_codecs_pass_through_without_loss_or_delay(natural_env):
    """PCMU on both legs: payloads forwarded as they are (no buffer, no transcoding)."""
    x16 = _speech(3.0)

    async def main():
        async with Agent(codecs=["pcmu"], mode="play", jitter_buffer="fixed:60") as agent:
            async with Gateway(target=agent.uri, sip_codec="pcmu", webrtc_codecs=("pcmu",)) as gw:
                r = await _webrtc_caller(gw.front, x16, codec="pcmu", jitter_buffer="fixed:60", tail_s=0.6)
                await asyncio.wait_for(gw.front.ended(1), 10)
                await asyncio.wait_for(agent.ended(1), 10)
                call = list(gw.front.finished.values())[-1]
                leg = gw.legs[call.id]
                rec = next(iter(agent.recordings.values()))
                return r, call, leg, rec

    r, call, leg, rec = run_clean(main, timeout=90)
    assert leg.passthrough and call.codec == "pcmu" and leg.sip_codec == "pcmu", leg.summary()
    d = leg.forward_delay_ms()
    print(f"\npass-through forward delay (ms): {d}")
    assert d["browser_to_sip_median"] < 1.0 and d["sip_to_browser_median"] < 1.0, d
    assert len(leg.forward_to_sip_s) >= 140 and len(leg.track.forward_s) >= 140
    # the SIP agent heard the browser's speech after ONE G.711 coding: no tandem loss
    agent_sent, agent_heard, rate = rec
    assert rate == 8000
    heard16 = audio.resample(agent_heard, 8000, 16000)
    est = audio.estimate_delay(x16, heard16, 16000, max_delay_ms=1500.0)
    shift = int(round(est.delay_samples))
    from voicelab import metrics

    a8 = audio.resample(x16, 16000, 8000)
    h8 = agent_heard[int(round(shift / 2)):][: len(a8)]
    assert metrics.pesq(a8[: len(h8)], h8, 8000, mode="nb") > 4.2
    # and the browser heard the agent's speech
    recv, _ = r["sink"].received_audio()
    assert np.sqrt(np.mean(np.square(recv))) > 0.01


def test_cli_gateway_serve_bad_target_is_one_line():
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "voicelab", "gateway", "serve", "--target", "127.0.0.1:5060"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "SIP URI" in p.stderr and "Traceback" not in p.stderr
